"""The write stage: one JSON Lines object per task, then what depends on it, then the ack.

Once every image of a task has its line, the task's object is PUT at the key derived from its
job and task ids (``posefleet.layout``), with transient faults retried in place. Then the
task's hooks run (the job record's counters, the live lane's per-photo result and event):
each is idempotent, since a message can be delivered twice, and each runs before the message
is acknowledged, so a crash in between only repeats them. A message is deleted only after all
its tasks are written (``worker.ack``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from posefleet import metric_names as m
from posefleet.logs import get_logger
from posefleet.result import ResultLine, dump_lines
from worker.ledger import Ledger, TaskState
from worker.metrics import Metrics
from worker.retry import GaveUp, Retry
from worker.supervise import Supervisor

__all__ = ["TaskHook", "Writer"]

log = get_logger("worker")

# Called with a task whose object is written and its lines; raises to be retried.
TaskHook = Callable[[TaskState, list[ResultLine]], None]


class Writer:
    def __init__(
        self,
        *,
        s3: Any,
        ledger: Ledger,
        metrics: Metrics,
        retry: Retry,
        supervisor: Supervisor,
        pool: Executor,
        hooks: Sequence[tuple[str, TaskHook]] = (),
    ) -> None:
        self.s3 = s3
        self.ledger = ledger
        self.metrics = metrics
        self.retry = retry
        self.supervisor = supervisor
        self.pool = pool
        self.hooks = list(hooks)

    def submit(self, state: TaskState) -> None:
        self.supervisor.guard(
            self.pool,
            self.write,
            state,
            on_error=lambda _: self.ledger.give_up(state.held, reason="write_crashed", crash=True),
            stage="write",
        )

    def write(self, state: TaskState) -> None:
        task, held = state.task, state.held
        if held.closed:
            return
        lines = [line for line in state.lines if line is not None]
        started = time.perf_counter()
        location = task.location
        body = dump_lines(lines)
        try:
            self.retry.call(
                lambda: self.s3.put_object(
                    Bucket=location.bucket,
                    Key=task.result_key,
                    Body=body,
                    ContentType="application/x-ndjson",
                ),
                what="s3:PutObject",
                job=task.job_id,
                task=task.task_id,
            )
            for name, hook in self.hooks:
                self.retry.call(lambda h=hook: h(state, lines), what=name, task=task.task_id)
        except GaveUp as e:
            log.warning("write_failed", job=task.job_id, task=task.task_id, error=str(e))
            self.ledger.give_up(held, reason="write_failed")
            return
        now = time.perf_counter()
        errors = Counter(str(line.error_kind) for line in lines if line.status == "error")
        self.metrics.observe(m.STAGE_TIME, (now - started) * 1000, Stage="write")
        self.metrics.count(m.TASKS_COMPLETED, 1)
        self.metrics.count(m.IMAGES_PROCESSED, len(lines))
        self.metrics.count(m.IMAGES_FAILED, sum(errors.values()))  # the total, for the alarm
        for kind, count in errors.items():
            self.metrics.count(m.IMAGES_FAILED, count, ErrorKind=kind)
        if task.enqueued_at:  # for an upload: upload -> label
            self.metrics.observe(
                m.END_TO_END_LATENCY,
                max(0.0, time.time() - task.enqueued_at) * 1000,
                Lane=str(held.lane),
            )
        stats = self.ledger.stats
        stats["tasks"] += 1
        stats["images"] += len(lines)
        stats["image_errors"] += sum(errors.values())
        log.info(
            "task_done",
            job=task.job_id,
            task=task.task_id,
            images=len(lines),
            errors=sum(errors.values()),
            seconds=round(time.monotonic() - state.started, 3),
            receives=held.received.receive_count,
        )
        self.ledger.task_written(state)
