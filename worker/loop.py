"""The worker loop: receive -> fetch -> decode -> batch -> infer -> write -> acknowledge.

Threads, each with one job, connected by queues:

* **receive** long-polls SQS while fewer images are held than a few seconds of work
  (``worker.prefetch``: measured throughput, a floor of batches, the memory bound
  ``max_images_in_flight``), asking for no more messages than fit; it parses each message and
  hands the keys of a first delivery to
* **fetch** (a thread pool of S3 GETs), which hands bytes to
* **decode** (a pool sized to the CPUs), which puts ``uint8`` images on the ready queue;
* **infer** (the one owner of the model) collects batches across tasks, closed on size or age;
* **isolate** takes a message that came back after earlier receives: its images one at a time,
  each decoded and classified alone (``worker.gate``) after an attempt marker naming it is
  written (``posefleet.attempts``), so an image that kills the process is caught by name and,
  after ``crash_attempts`` crashes, gets a ``crashed_worker`` line instead of another try;
* **write** PUTs one JSON Lines object per task once each of its images has a line;
* **ack** deletes a message with DeleteMessageBatch only after all its tasks are written;
* **heartbeat** extends the visibility of every held message; a message whose heartbeat
  fails is abandoned (never deleted), and comes back to some worker.

A bad image becomes an error line and its task goes on; a transient S3 fault abandons the task
for redelivery; an invalid message is sent to the dead-letter queue at once with its reason
(``posefleet.deadletter``), or, without one, left to the redrive policy.
On SIGTERM: stop receiving, finish what fits in ``drain_seconds``, release the rest at once
(visibility 0), flush metrics, return 0.
"""

from __future__ import annotations

import queue
import resource
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from posefleet import metric_names as m
from posefleet.attempts import AttemptMarker, attempts_key
from posefleet.logs import get_logger
from posefleet.preprocess import DecodedImage, decode_image
from posefleet.result import ErrorKind, ImageError, ResultLine, dump_lines
from posefleet.settings import WorkerSettings
from posefleet.task import InvalidMessage, TaskMessage, parse_message
from worker.batching import collect_batch
from worker.fetch import TransientFetchError, fetch_object
from worker.gate import Gate
from worker.metrics import Metrics
from worker.model import Classifier, Prediction
from worker.prefetch import Throughput, messages_to_receive, prefetch_limit
from worker.protection import ScaleInProtection
from worker.sqs import Received, TaskQueue

__all__ = ["Worker"]

log = get_logger("worker")


@dataclass(eq=False)
class Held:
    """One SQS message this worker holds, until its tasks are written and it is deleted."""

    received: Received
    tasks: list[TaskState] = field(default_factory=list)
    pending: int = 0  # tasks not yet written
    images: int = 0
    closed: bool = False  # deleted, abandoned or released: no more work on it


@dataclass(eq=False)
class TaskState:
    task: TaskMessage
    held: Held
    lines: list[ResultLine | None]
    remaining: int
    started: float


@dataclass(frozen=True, slots=True)
class Item:
    """One decoded image waiting for the model. ``pixels`` is opaque to the loop."""

    state: TaskState
    index: int
    pixels: Any
    original_size: tuple[int, int]


def _peak_rss_mib(usage: resource.struct_rusage) -> float:
    """This process's own peak RSS. ``ru_maxrss`` is not: at exec, Linux folds in the peak of
    the parent that spawned it (a 2 GB parent makes every worker look 2 GB). ``VmHWM`` is the
    high-water mark of this process's memory alone."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return usage.ru_maxrss / 1024  # Linux reports KiB


class Worker:
    def __init__(
        self,
        *,
        settings: WorkerSettings,
        tasks_queue: TaskQueue,
        s3: Any,
        classifier: Classifier,
        metrics: Metrics,
        shutdown: threading.Event,
        decode_threads: int,
        exit_when_idle: float | None = None,
        protection: ScaleInProtection | None = None,
    ) -> None:
        self.settings = settings
        self.queue = tasks_queue
        self.s3 = s3
        self.classifier = classifier
        self.metrics = metrics
        self.shutdown = shutdown
        self.exit_when_idle = exit_when_idle
        self.protection = protection or ScaleInProtection(None)
        self.heartbeat_seconds = settings.heartbeat_seconds or settings.visibility_timeout / 3

        self._lock = threading.Lock()
        self._held: dict[str, Held] = {}  # by receipt handle
        self._images_held = 0
        self._last_activity = time.monotonic()
        self._ready: queue.Queue[Item] = queue.Queue()
        self._acks: queue.Queue[Held] = queue.Queue()
        self._suspects: queue.Queue[Held] = queue.Queue()  # came back: taken image by image
        self._gate = Gate()  # decoding and the model: shared, or one image on trial alone
        self._throughput = Throughput()
        self._images_per_message: float | None = None  # running average, for MaxNumberOfMessages
        self._stop_receiving = threading.Event()
        self._stop = threading.Event()
        self._fetch_pool = ThreadPoolExecutor(settings.fetch_threads, thread_name_prefix="fetch")
        self._decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self._write_pool = ThreadPoolExecutor(4, thread_name_prefix="write")
        self.stats: Counter[str] = Counter()

    # ----------------------------------------------------------------- lifecycle

    def run(self) -> int:
        threads = [
            threading.Thread(target=self._receive_loop, name="receive", daemon=True),
            threading.Thread(target=self._infer_loop, name="infer", daemon=True),
            threading.Thread(target=self._isolate_loop, name="isolate", daemon=True),
            threading.Thread(target=self._ack_loop, name="ack", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True),
        ]
        for t in threads:
            t.start()
        log.info("worker_started", **self.classifier.describe(), queue=self.queue.url)
        next_flush = time.monotonic() + 10
        reason = "signal"
        while not self.shutdown.wait(0.2):
            holding = self.holding()
            self.protection.set(holding > 0)
            if time.monotonic() >= next_flush:
                if (gpu := self.classifier.gpu_utilization()) is not None:
                    self.metrics.observe(m.GPU_UTILIZATION, gpu, "Percent")
                self.metrics.flush()
                next_flush = time.monotonic() + 10
            idle_for = time.monotonic() - self._last_activity
            if self.exit_when_idle is not None and holding == 0 and idle_for >= self.exit_when_idle:
                reason = "idle"
                break
        self._drain(reason, threads=threads)
        return 0

    def holding(self) -> int:
        with self._lock:
            return len(self._held)

    def _drain(self, reason: str, *, threads: list[threading.Thread]) -> None:
        deadline = time.monotonic() + self.settings.drain_seconds
        log.info(
            "drain_started",
            reason=reason,
            holding=self.holding(),
            grace_seconds=self.settings.drain_seconds,
        )
        self._stop_receiving.set()
        receiver, *others = threads
        receiver.join(timeout=max(0.0, deadline - time.monotonic()))
        while self.holding() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            leftover = [h for h in self._held.values() if not h.closed]
        released = self._release(leftover, visibility=0, reason="shutdown")
        self._stop.set()
        for pool in (self._fetch_pool, self._decode_pool, self._write_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        # A receive call still in its long poll: wait it out, it releases what it gets.
        receiver.join(timeout=self.settings.wait_time_seconds + 5)
        for t in others:  # the infer thread finishes its batch (its results are dropped)
            t.join(timeout=30)
        self.protection.set(False)
        self.metrics.flush()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        peak_mib = _peak_rss_mib(usage)
        log.info(
            "worker_stopped",
            reason=reason,
            released_at_stop=released,
            peak_rss_mib=round(peak_mib),
            cpu_seconds=round(usage.ru_utime + usage.ru_stime, 2),
            **dict(self.stats),
        )

    # ----------------------------------------------------------------- receive

    def prefetch_limit(self) -> int:
        """Images this worker may hold now: a few seconds of its measured throughput."""
        s = self.settings
        return prefetch_limit(
            rate=self._throughput.rate(),
            seconds=s.prefetch_seconds,
            batch_size=s.batch_size,
            min_batches=s.prefetch_batches,
            max_images=s.max_images_in_flight,
        )

    def _receive_loop(self) -> None:
        backoff = 1.0
        while not self._stop_receiving.is_set():
            with self._lock:
                room = self.prefetch_limit() - self._images_held
            wanted = messages_to_receive(room=room, images_per_message=self._images_per_message)
            if not wanted:
                time.sleep(0.02)
                continue
            try:
                messages = self.queue.receive(
                    max_messages=wanted,
                    wait_seconds=self.settings.wait_time_seconds,
                    visibility=self.settings.visibility_timeout,
                )
                backoff = 1.0
            except (ClientError, BotoCoreError) as e:
                log.warning("receive_failed", error=str(e), retry_in=backoff)
                self._stop_receiving.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if self._stop_receiving.is_set():
                self.queue.change_visibility(messages, 0)
                return
            for message in messages:
                self._accept(message)

    def _accept(self, message: Received) -> None:
        self._last_activity = time.monotonic()
        self.stats["messages"] += 1
        try:
            parsed = parse_message(
                message.body,
                stream_job=self.settings.stream_job,
                stream_results=self.settings.results,
            )
        except InvalidMessage as e:
            self.stats["invalid_messages"] += 1
            self.metrics.count(m.MESSAGES_INVALID, 1)
            self._invalid(message, str(e))
            return
        held = Held(received=message, pending=len(parsed.tasks))
        if not parsed.tasks:  # s3:TestEvent, or an event with no created objects
            log.info("message_ignored", message_id=message.message_id, kind=parsed.kind)
            with self._lock:
                self._held[message.receipt_handle] = held
            self._acks.put(held)
            return
        now = time.monotonic()
        for task in parsed.tasks:
            n = len(task.keys)
            held.tasks.append(
                TaskState(task=task, held=held, lines=[None] * n, remaining=n, started=now)
            )
            held.images += n
        with self._lock:
            self._held[message.receipt_handle] = held
            self._images_held += held.images
        per = self._images_per_message
        self._images_per_message = held.images if per is None else 0.8 * per + 0.2 * held.images
        if message.receive_count > 1:
            # It came back: it may hold an image that kills the process. Taken image by image.
            log.info(
                "message_isolated",
                message_id=message.message_id,
                receives=message.receive_count,
                tasks=len(held.tasks),
                images=held.images,
            )
            self.stats["isolated_messages"] += 1
            self._suspects.put(held)
            return
        for state in held.tasks:
            log.debug(
                "task_received",
                job=state.task.job_id,
                task=state.task.task_id,
                images=len(state.task.keys),
            )
            for index in range(len(state.task.keys)):
                self._fetch_pool.submit(self._fetch, state, index)

    def _invalid(self, message: Received, reason: str) -> None:
        """A body judged invalid by itself: to the dead-letter queue now, with its reason."""
        try:
            sent = self.queue.dead_letter(message, reason)
        except (ClientError, BotoCoreError) as e:
            log.warning("dead_letter_failed", message_id=message.message_id, error=str(e))
            sent = False
        log.warning(
            "invalid_message",
            message_id=message.message_id,
            receives=message.receive_count,
            error=reason,
            action="dead_lettered" if sent else "left_to_redrive",
        )
        if sent:
            self.stats["dead_lettered"] += 1
            return
        # No dead-letter queue (or it refused): visible again at once, so the redrive policy,
        # if any, moves it after maxReceiveCount receives instead of it waiting each time.
        self.queue.change_visibility([message], 0)

    # ----------------------------------------------------------------- fetch, decode

    def _fetch(self, state: TaskState, index: int) -> None:
        if state.held.closed:
            return
        task, key = state.task, state.task.keys[index]
        started = time.perf_counter()
        try:
            data = fetch_object(self.s3, task.bucket, key, max_bytes=self.settings.max_image_bytes)
        except ImageError as e:
            self._image_failed(state, index, e)
            return
        except TransientFetchError as e:
            log.warning("fetch_failed", job=task.job_id, task=task.task_id, key=key, error=str(e))
            self._abandon(state.held, reason="fetch_failed")
            return
        except Exception:
            log.exception("fetch_crashed", job=task.job_id, task=task.task_id, key=key)
            self._abandon(state.held, reason="fetch_crashed")
            return
        self.metrics.observe(m.STAGE_TIME, (time.perf_counter() - started) * 1000, Stage="fetch")
        self._decode_pool.submit(self._decode, state, index, data)

    def _decode_one(self, state: TaskState, index: int, data: bytes) -> DecodedImage:
        """Decode one image; raises ImageError, also for a decoder's unexpected exception."""
        try:
            return decode_image(
                data,
                input_size=self.classifier.spec.input_size,
                max_pixels=self.settings.max_image_pixels,
                draft=self.settings.jpeg_draft,
            )
        except ImageError:
            raise
        except Exception as e:  # an image must never fail its task or batch
            log.exception(
                "decode_crashed",
                job=state.task.job_id,
                task=state.task.task_id,
                key=state.task.keys[index],
            )
            raise ImageError(ErrorKind.DECODE_FAILED, f"decoding failed: {e}") from e

    def _decode(self, state: TaskState, index: int, data: bytes) -> None:
        if state.held.closed:
            return
        started = time.perf_counter()
        try:
            with self._gate.shared():
                decoded = self._decode_one(state, index, data)
        except ImageError as e:
            self._image_failed(state, index, e)
            return
        self.metrics.observe(m.STAGE_TIME, (time.perf_counter() - started) * 1000, Stage="decode")
        self._ready.put(
            Item(
                state=state, index=index, pixels=decoded.pixels, original_size=decoded.original_size
            )
        )

    def _image_failed(self, state: TaskState, index: int, error: ImageError) -> None:
        task = state.task
        log.info(
            "image_failed",
            job=task.job_id,
            task=task.task_id,
            key=task.keys[index],
            kind=str(error.kind),
        )
        self._finish_item(state, index, ResultLine.error(task.bucket, task.keys[index], error))

    # ----------------------------------------------------------------- infer

    def _infer_loop(self) -> None:
        while not self._stop.is_set():
            batch = collect_batch(
                self._ready,
                max_size=self.settings.batch_size,
                max_wait=self.settings.batch_wait_ms / 1000,
                first_wait=0.2,
            )
            live = [item for item in batch if not item.state.held.closed]
            if not live:
                continue
            started = time.perf_counter()
            try:
                with self._gate.shared():
                    probs = self.classifier.predict([item.pixels for item in live])
                    predictions = self.classifier.postprocess(probs)
            except Exception:
                log.exception("inference_failed", batch=len(live))
                for held in {item.state.held for item in live}:
                    self._abandon(held, reason="inference_failed")
                continue
            self.metrics.observe(
                m.STAGE_TIME, (time.perf_counter() - started) * 1000, Stage="infer"
            )
            self.metrics.observe(m.BATCH_SIZE, len(live), "Count")
            self.stats["batches"] += 1
            for item, p in zip(live, predictions, strict=True):
                line = self._ok_line(item.state.task, item.index, p, item.original_size)
                self._finish_item(item.state, item.index, line)

    def _ok_line(
        self, task: TaskMessage, index: int, p: Prediction, original_size: tuple[int, int]
    ) -> ResultLine:
        return ResultLine(
            bucket=task.bucket,
            key=task.keys[index],
            status="ok",
            model_version=self.classifier.version,
            original_size=original_size,
            predicted_class_index=p.predicted_class_index,
            predicted_class_id=p.predicted_class_id,
            predicted_class_name=p.predicted_class_name,
            confidence=p.confidence,
            all_probabilities=p.all_probabilities,
        )

    # ----------------------------------------------------------------- isolate

    def _isolate_loop(self) -> None:
        while not self._stop.is_set():
            try:
                held = self._suspects.get(timeout=0.2)
            except queue.Empty:
                continue
            for state in held.tasks:
                if held.closed:
                    break
                try:
                    self._isolate(state)
                except Exception:
                    log.exception(
                        "isolation_failed", job=state.task.job_id, task=state.task.task_id
                    )
                    self._abandon(held, reason="isolation_failed")

    def _isolate(self, state: TaskState) -> None:
        """The images of a task that came back, each group alone behind an attempt marker.

        A task none of whose images is suspect yet is tried as one group (batches of
        ``batch_size``), named in the marker's ``trial``. If the process dies then, the next
        worker tries them one at a time, each counted in ``attempts`` before it starts, so the
        count lands on the image that kills the process; an image that finishes is cleared."""
        task, held = state.task, state.held
        bucket = task.location.bucket
        marker_key = attempts_key(task.location, task.job_id, task.task_id)
        try:
            attempts, trial = self._read_attempts(bucket, marker_key)
        except (ClientError, BotoCoreError) as e:
            log.warning("attempts_read_failed", job=task.job_id, task=task.task_id, error=str(e))
            self._abandon(held, reason="attempts_read_failed")
            return
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
            self.stats["crashed_worker_images"] += 1
            error = ImageError(
                ErrorKind.CRASHED_WORKER,
                f"s3://{task.bucket}/{key} stopped the worker {crashes} times in a row, "
                "each time decoded and classified alone; it is not tried again",
            )
            lines.append((index, ResultLine.error(task.bucket, key, error)))
        suspect = bool(trial) or any(attempts.get(task.keys[i], 0) for i in todo) or bool(lines)
        size = 1 if suspect else self.settings.batch_size
        groups = [todo[i : i + size] for i in range(0, len(todo), size)]

        def fetch(group: list[int]) -> list[tuple[int, Any]]:
            return [
                (
                    index,
                    self._fetch_pool.submit(
                        fetch_object,
                        self.s3,
                        task.bucket,
                        task.keys[index],
                        max_bytes=self.settings.max_image_bytes,
                    ),
                )
                for index in group
            ]

        fetching = fetch(groups[0]) if groups else []
        for number, _ in enumerate(groups):
            if held.closed:
                return
            current = fetching
            fetching = fetch(groups[number + 1]) if number + 1 < len(groups) else []
            fetched: list[tuple[int, bytes]] = []
            for index, future in current:
                key = task.keys[index]
                try:
                    fetched.append((index, future.result()))
                except ImageError as e:  # never decoded: no attempt to count
                    lines.append((index, ResultLine.error(task.bucket, key, e)))
                except TransientFetchError as e:
                    log.warning(
                        "fetch_failed", job=task.job_id, task=task.task_id, key=key, error=str(e)
                    )
                    self._abandon(held, reason="fetch_failed")
                    return
            if not fetched:
                continue
            if size == 1:  # counted alone
                (index, _data), trial = fetched[0], []
                attempts[task.keys[index]] = attempts.get(task.keys[index], 0) + 1
            else:  # tried together: if the process dies now, each becomes a suspect
                trial = [task.keys[index] for index, _data in fetched]
            with self._gate.alone():
                try:  # durable before the risky part: if the process dies now, these did it
                    self._write_attempts(bucket, marker_key, task, attempts, trial)
                except (ClientError, BotoCoreError) as e:
                    log.warning(
                        "attempts_write_failed", job=task.job_id, task=task.task_id, error=str(e)
                    )
                    self._abandon(held, reason="attempts_write_failed")
                    return
                stored = (dict(attempts), list(trial))
                decoded: list[tuple[int, DecodedImage]] = []
                for index, data in fetched:
                    try:
                        decoded.append((index, self._decode_one(state, index, data)))
                    except ImageError as e:
                        lines.append((index, ResultLine.error(task.bucket, task.keys[index], e)))
                if decoded:
                    try:
                        probs = self.classifier.predict([d.pixels for _, d in decoded])
                        predictions = self.classifier.postprocess(probs)
                    except Exception:
                        log.exception("inference_failed", batch=len(decoded), isolated=True)
                        self._abandon(held, reason="inference_failed")
                        return
                    for (index, d), p in zip(decoded, predictions, strict=True):
                        lines.append((index, self._ok_line(task, index, p, d.original_size)))
            for index, _data in fetched:  # they finished: whatever stopped workers, not these
                attempts.pop(task.keys[index], None)
            trial = []
            self.stats["isolated_images"] += len(fetched)
        if (attempts, trial) != stored:
            try:  # only keys that are still suspect stay; not needed for this task's result
                self._write_attempts(bucket, marker_key, task, attempts, trial)
            except (ClientError, BotoCoreError) as e:
                log.warning(
                    "attempts_write_failed", job=task.job_id, task=task.task_id, error=str(e)
                )
        for index, line in sorted(lines, key=lambda pair: pair[0]):
            if line.status == "error" and line.error_kind is not ErrorKind.CRASHED_WORKER:
                self._image_failed(state, index, ImageError(line.error_kind, line.error_message))
            else:
                self._finish_item(state, index, line)

    def _read_attempts(self, bucket: str, key: str) -> tuple[dict[str, int], list[str]]:
        """The marker's counts and trial group; empty when there is none."""
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404", "NotFound"):
                return {}, []
            raise
        try:
            marker = AttemptMarker.model_validate_json(body)
        except ValidationError as e:
            log.warning("attempts_unreadable", key=key, error=str(e))
            return {}, []
        return dict(marker.attempts), list(marker.trial)

    def _write_attempts(
        self,
        bucket: str,
        key: str,
        task: TaskMessage,
        attempts: dict[str, int],
        trial: list[str],
    ) -> None:
        marker = AttemptMarker(
            job_id=task.job_id, task_id=task.task_id, attempts=attempts, trial=trial
        )
        self.s3.put_object(
            Bucket=bucket, Key=key, Body=marker.to_body(), ContentType="application/json"
        )

    # ----------------------------------------------------------------- write, ack

    def _finish_item(self, state: TaskState, index: int, line: ResultLine) -> None:
        with self._lock:
            if state.held.closed or state.lines[index] is not None:
                return
            state.lines[index] = line
            state.remaining -= 1
            complete = state.remaining == 0
        self._throughput.add(1)
        if complete:
            self._write_pool.submit(self._write, state)

    def _write(self, state: TaskState) -> None:
        task, held = state.task, state.held
        if held.closed:
            return
        lines = [line for line in state.lines if line is not None]
        started = time.perf_counter()
        location = task.location
        try:
            self.s3.put_object(
                Bucket=location.bucket,
                Key=task.result_key,
                Body=dump_lines(lines),
                ContentType="application/x-ndjson",
            )
        except (ClientError, BotoCoreError) as e:
            log.warning("write_failed", job=task.job_id, task=task.task_id, error=str(e))
            self._abandon(held, reason="write_failed")
            return
        now = time.perf_counter()
        errors = Counter(str(line.error_kind) for line in lines if line.status == "error")
        self.metrics.observe(m.STAGE_TIME, (now - started) * 1000, Stage="write")
        self.metrics.count(m.TASKS_COMPLETED, 1)
        self.metrics.count(m.IMAGES_PROCESSED, len(lines))
        self.metrics.count(m.IMAGES_FAILED, sum(errors.values()))  # the total, for the alarm
        for kind, count in errors.items():
            self.metrics.count(m.IMAGES_FAILED, count, ErrorKind=kind)
        if task.enqueued_at:
            self.metrics.observe(
                m.END_TO_END_LATENCY, max(0.0, time.time() - task.enqueued_at) * 1000
            )
        self.stats["tasks"] += 1
        self.stats["images"] += len(lines)
        self.stats["image_errors"] += sum(errors.values())
        log.info(
            "task_done",
            job=task.job_id,
            task=task.task_id,
            images=len(lines),
            errors=sum(errors.values()),
            seconds=round(time.monotonic() - state.started, 3),
            receives=held.received.receive_count,
        )
        with self._lock:
            held.pending -= 1
            done = held.pending == 0 and not held.closed
        if done:
            self._acks.put(held)

    def _ack_loop(self) -> None:
        while not (self._stop.is_set() and self._acks.empty()):
            batch = collect_batch(self._acks, max_size=10, max_wait=0.05, first_wait=0.2)
            if not batch:
                continue
            try:
                failed = set(self.queue.delete([h.received for h in batch]))
            except (ClientError, BotoCoreError) as e:
                # Not deleted: the messages come back and their tasks rewrite the same objects.
                log.warning("delete_failed", messages=len(batch), error=str(e))
                failed = {h.received.message_id for h in batch}
            if failed:
                log.warning("delete_partly_failed", failed=len(failed))
            self._close(batch)
            self._last_activity = time.monotonic()

    # ----------------------------------------------------------------- heartbeat, release

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            with self._lock:
                held = [h for h in self._held.values() if not h.closed]
            if not held:
                continue
            try:
                failed = set(
                    self.queue.change_visibility(
                        [h.received for h in held], self.settings.visibility_timeout
                    )
                )
            except (ClientError, BotoCoreError) as e:
                log.warning("heartbeat_failed", messages=len(held), error=str(e))
                failed = {h.received.message_id for h in held}
            for h in held:
                if h.received.message_id in failed:
                    # We may no longer own it: never delete, let it come back to some worker.
                    log.warning("heartbeat_lost", message_id=h.received.message_id)
                    self.stats["heartbeat_lost"] += 1
                    self._close([h])

    def _close(self, held: list[Held]) -> list[Held]:
        """Forget messages; returns the ones that were still open."""
        closed = []
        with self._lock:
            for h in held:
                if self._held.pop(h.received.receipt_handle, None) is not None:
                    self._images_held -= h.images
                if not h.closed:
                    h.closed = True
                    closed.append(h)
        return closed

    def _release(self, held: list[Held], *, visibility: int, reason: str) -> int:
        newly = self._close(held)
        if newly:
            try:
                self.queue.change_visibility([h.received for h in newly], visibility)
            except (ClientError, BotoCoreError) as e:
                log.warning("release_failed", messages=len(newly), error=str(e))
            for h in newly:
                self.metrics.count(m.TASKS_ABANDONED, len(h.tasks))
                self.stats["released"] += 1
                log.info(
                    "message_released",
                    message_id=h.received.message_id,
                    reason=reason,
                    visibility=visibility,
                )
        return len(newly)

    def _abandon(self, held: Held, *, reason: str) -> None:
        self._release([held], visibility=self.settings.retry_delay_seconds, reason=reason)
