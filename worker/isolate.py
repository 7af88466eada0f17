"""The isolate stage: a message that came back after earlier receives, image by image.

A message that comes back with a receive count above 1 was held by a worker that died (live
workers hand their messages back as new, ``worker.ledger``), so it may hold an image that kills
the process. Its tasks are taken one at a time, apart from all other work (``worker.gate``),
behind an attempt marker (``posefleet.attempts``) written before the risky part:

* a task none of whose images is suspect yet is tried as one group (batches of
  ``batch_size``), named in the marker's ``trial``: usually it was only caught in someone
  else's crash, and it finishes at batch speed;
* if the process dies then, the next worker tries them one at a time, each counted in
  ``attempts`` before it starts, so the count lands on the image that kills the process; an
  image that finishes is cleared;
* an image whose count reached ``crash_attempts`` gets a ``crashed_worker`` line without being
  fetched again, and its task-mates their results as usual.

S3 faults on the way (the marker, the images) are retried in place like everywhere else.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Executor, Future
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from posefleet.attempts import AttemptMarker, attempts_key
from posefleet.aws import is_not_found
from posefleet.logs import get_logger
from posefleet.preprocess import DecodedImage
from posefleet.result import ErrorKind, ImageError, ResultLine
from posefleet.settings import WorkerSettings
from posefleet.task import TaskMessage
from worker.gate import Gate
from worker.infer import ok_line
from worker.ledger import Held, Ledger, TaskState
from worker.model import Classifier
from worker.prepare import decode, fetch
from worker.retry import GaveUp, Retry

__all__ = ["Isolator"]

log = get_logger("worker")


class _GiveUp(Exception):
    """The task cannot go on now (a fault outlasted its budget): hand its message back."""

    def __init__(self, reason: str, *, crash: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.crash = crash


class Isolator:
    def __init__(
        self,
        *,
        settings: WorkerSettings,
        s3: Any,
        classifier: Classifier,
        ledger: Ledger,
        gate: Gate,
        retry: Retry,
        fetch_pool: Executor,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.classifier = classifier
        self.ledger = ledger
        self.gate = gate
        self.retry = retry
        self.fetch_pool = fetch_pool
        self.stop = stop
        self.suspects: queue.Queue[Held] = queue.Queue()

    def put(self, held: Held) -> None:
        log.info(
            "message_isolated",
            message_id=held.received.message_id,
            receives=held.received.receive_count,
            tasks=len(held.tasks),
            images=held.images,
        )
        self.ledger.stats["isolated_messages"] += 1
        self.suspects.put(held)

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                held = self.suspects.get(timeout=0.2)
            except queue.Empty:
                continue
            for state in held.tasks:
                if held.closed:
                    break
                try:
                    self.isolate(state)
                except _GiveUp as e:
                    self.ledger.give_up(held, reason=e.reason, crash=e.crash)
                except Exception:
                    log.exception(
                        "isolation_failed", job=state.task.job_id, task=state.task.task_id
                    )
                    self.ledger.give_up(held, reason="isolation_failed", crash=True)

    # ------------------------------------------------------------------ the marker

    def _read_marker(self, bucket: str, key: str) -> tuple[dict[str, int], list[str]]:
        """The marker's counts and trial group; empty when there is none."""

        def get() -> bytes | None:
            try:
                return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as e:
                if is_not_found(e):
                    return None
                raise

        try:
            body = self.retry.call(get, what="s3:GetObject(marker)", key=key)
        except GaveUp as e:
            raise _GiveUp("attempts_read_failed") from e
        if body is None:
            return {}, []
        try:
            marker = AttemptMarker.model_validate_json(body)
        except ValidationError as e:
            log.warning("attempts_unreadable", key=key, error=str(e))
            return {}, []
        return dict(marker.attempts), list(marker.trial)

    def _write_marker(
        self, bucket: str, key: str, task: TaskMessage, attempts: dict[str, int], trial: list[str]
    ) -> None:
        body = AttemptMarker(
            job_id=task.job_id, task_id=task.task_id, attempts=attempts, trial=trial
        ).to_body()
        try:
            self.retry.call(
                lambda: self.s3.put_object(
                    Bucket=bucket, Key=key, Body=body, ContentType="application/json"
                ),
                what="s3:PutObject(marker)",
                key=key,
            )
        except GaveUp as e:
            raise _GiveUp("attempts_write_failed") from e

    # ------------------------------------------------------------------ one task

    def isolate(self, state: TaskState) -> None:
        task, held = state.task, state.held
        bucket = task.location.bucket
        marker_key = attempts_key(task.location, task.job_id, task.task_id)
        attempts, trial = self._read_marker(bucket, marker_key)
        stored = (dict(attempts), list(trial))
        limit = self.settings.crash_attempts
        lines: list[tuple[int, ResultLine]] = []
        todo: list[int] = []
        for index, key in enumerate(task.keys):
            crashes = attempts.get(key, 0)
            if crashes < limit:
                todo.append(index)
                continue
            # It has stopped `limit` workers in a row, taken alone: not tried again.
            log.warning(
                "image_crashed_worker", job=task.job_id, task=task.task_id, key=key, crashes=crashes
            )
            self.ledger.stats["crashed_worker_images"] += 1
            error = ImageError(
                ErrorKind.CRASHED_WORKER,
                f"s3://{task.bucket}/{key} stopped the worker {crashes} times in a row, "
                "each time decoded and classified alone; it is not tried again",
            )
            lines.append((index, ResultLine.error(task.bucket, key, error)))
        suspect = bool(trial) or any(attempts.get(task.keys[i], 0) for i in todo) or bool(lines)
        size = 1 if suspect else self.settings.batch_size
        groups = [todo[i : i + size] for i in range(0, len(todo), size)]

        def start(group: list[int]) -> list[tuple[int, Future[bytes]]]:
            return [
                (
                    index,
                    self.fetch_pool.submit(
                        fetch, self.s3, state, index, settings=self.settings, retry=self.retry
                    ),
                )
                for index in group
            ]

        fetching = start(groups[0]) if groups else []
        for number, _ in enumerate(groups):
            if held.closed:
                return
            current = fetching
            fetching = start(groups[number + 1]) if number + 1 < len(groups) else []
            fetched: list[tuple[int, bytes]] = []
            for index, future in current:
                try:
                    fetched.append((index, future.result()))
                except ImageError as e:  # never decoded: no attempt to count
                    lines.append((index, ResultLine.error(task.bucket, task.keys[index], e)))
                except GaveUp as e:
                    log.warning("fetch_failed", job=task.job_id, task=task.task_id, error=str(e))
                    raise _GiveUp("fetch_failed") from e
            if not fetched:
                continue
            if size == 1:  # counted alone
                (index, _data), trial = fetched[0], []
                attempts[task.keys[index]] = attempts.get(task.keys[index], 0) + 1
            else:  # tried together: if the process dies now, each becomes a suspect
                trial = [task.keys[index] for index, _data in fetched]
            with self.gate.alone():
                # durable before the risky part: if the process dies now, these did it
                self._write_marker(bucket, marker_key, task, attempts, trial)
                stored = (dict(attempts), list(trial))
                lines += self._classify(state, fetched)
            for index, _data in fetched:  # they finished: whatever stopped workers, not these
                attempts.pop(task.keys[index], None)
            trial = []
            self.ledger.stats["isolated_images"] += len(fetched)
        if (attempts, trial) != stored:
            try:  # only keys that are still suspect stay; not needed for this task's result
                self._write_marker(bucket, marker_key, task, attempts, trial)
            except _GiveUp:
                log.warning("attempts_write_failed", job=task.job_id, task=task.task_id)
        for index, line in sorted(lines, key=lambda pair: pair[0]):
            if line.status == "error" and line.error_kind is not ErrorKind.CRASHED_WORKER:
                assert line.error_kind is not None and line.error_message is not None
                self.ledger.image_failed(
                    state, index, ImageError(line.error_kind, line.error_message)
                )
            else:
                self.ledger.finish_item(state, index, line)

    def _classify(
        self, state: TaskState, fetched: list[tuple[int, bytes]]
    ) -> list[tuple[int, ResultLine]]:
        task = state.task
        lines: list[tuple[int, ResultLine]] = []
        decoded: list[tuple[int, DecodedImage]] = []
        for index, data in fetched:
            try:
                decoded.append(
                    (
                        index,
                        decode(
                            state,
                            index,
                            data,
                            settings=self.settings,
                            input_size=self.classifier.spec.input_size,
                        ),
                    )
                )
            except ImageError as e:
                lines.append((index, ResultLine.error(task.bucket, task.keys[index], e)))
        if not decoded:
            return lines
        try:
            probs = self.classifier.predict([d.pixels for _, d in decoded])
            predictions = self.classifier.postprocess(probs)
        except Exception as e:
            log.exception("inference_failed", batch=len(decoded), isolated=True)
            raise _GiveUp("inference_failed", crash=True) from e
        version = self.classifier.version
        for (index, d), p in zip(decoded, predictions, strict=True):
            lines.append((index, ok_line(task, index, p, d.original_size, version)))
        return lines
