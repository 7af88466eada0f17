"""The worker's side of the job record (posefleet/job_record.py): is a job cancelled, and count
each finished or cancelled task once, ending the job when its counts are in.

:class:`JobTracker` is all the worker loop needs, at three places:

* before fetching a task's images: ``if tracker.cancelled(task.job_id)`` the task gets no work:
  ``tracker.task_cancelled(task)``, then its message is acknowledged;
* after a task's result object is written, before its message is deleted:
  ``tracker.task_finished(task, lines)`` (it raises botocore errors: the caller retries, or
  lets the message come back; counting is exactly once either way);
* built once at start: ``JobTracker(dynamodb=client("dynamodb"),
  table=settings.jobs_table, events=EventChannel(...) if settings.events_topic else None)``.

A job's state is cached and read again at most every ``refresh_seconds`` (one eventually
consistent GetItem of two attributes); a job without a record (the S3 events' stream job, a
job submitted without one) is never cancelled and costs at most that one read per period. A
missing table, a record that cannot be read, or DynamoDB not answering never stops the work:
the job is taken as not cancelled, its tasks as not counted, and a warning is logged once a
period. After each count the job is settled (:meth:`posefleet.job_table.JobTable.settle`): the
one caller whose conditional update ends it publishes ``job.finished``.

IAM: see posefleet/job_record.py (the worker's actions) and ``sns:Publish`` on the topic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from posefleet.events import EventChannel
from posefleet.job_record import MARKER_TTL, Counts, JobRecordCorrupt, counts_of
from posefleet.job_table import JobTable, StateSeen
from posefleet.logs import get_logger
from posefleet.result import ResultLine
from posefleet.task import TaskMessage

__all__ = ["JobTracker"]

log = get_logger("worker.jobs")

CANCELLED_STATES = frozenset({"cancelling", "cancelled"})


@dataclass(slots=True)
class _Seen:
    state: StateSeen | None  # None: the job has no (readable) record
    at: float


class JobTracker:
    def __init__(
        self,
        *,
        dynamodb: Any,
        table: str,
        events: EventChannel | None = None,
        ttl: timedelta = MARKER_TTL,
        refresh_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if refresh_seconds <= 0:
            raise ValueError("refresh_seconds must be greater than 0")
        self.table = JobTable(dynamodb=dynamodb, table=table, marker_ttl=ttl)
        self.events = events
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def _state(self, job_id: str, *, fresh: bool = False) -> StateSeen | None:
        now = self.clock()
        with self._lock:
            seen = self._seen.get(job_id)
            if seen is not None and not fresh and now - seen.at < self.refresh_seconds:
                return seen.state
        try:
            state = self.table.state(job_id)
        except JobRecordCorrupt as e:
            log.error("job_record_unreadable", job=job_id, error=str(e))
            state = None
        except (ClientError, BotoCoreError) as e:
            log.warning("job_state_unread", job=job_id, error=str(e))
            state = seen.state if seen is not None else None
        with self._lock:
            self._seen[job_id] = _Seen(state=state, at=now)
            if len(self._seen) > 1000:  # forget jobs not looked at for a while
                for old in [j for j, s in self._seen.items() if now - s.at > 600]:
                    del self._seen[old]
        return state

    def cancelled(self, job_id: str) -> bool:
        """Whether the job's tasks should get no more work (cached; see the module doc)."""
        state = self._state(job_id)
        return state is not None and state.state in CANCELLED_STATES

    def task_finished(self, task: TaskMessage, lines: list[ResultLine]) -> None:
        """Count a task whose result object is written, once; may end the job."""
        self._count(task, counts_of(lines), cancelled=False)

    def task_cancelled(self, task: TaskMessage) -> None:
        """Count a task of a cancelled job acknowledged without work, once; may end the job."""
        self._count(task, Counts(), cancelled=True)

    def _count(self, task: TaskMessage, counts: Counts, *, cancelled: bool) -> None:
        state = self._state(task.job_id)
        if state is None:
            return
        outcome = self.table.count(
            task.job_id, task.task_id, counting=state.counting, counts=counts, cancelled=cancelled
        )
        if outcome == "stale":  # the job was submitted afresh, or its record went: read again
            state = self._state(task.job_id, fresh=True)
            if state is None:
                return
            outcome = self.table.count(
                task.job_id,
                task.task_id,
                counting=state.counting,
                counts=counts,
                cancelled=cancelled,
            )
        if outcome == "stale":
            log.warning("task_not_counted", job=task.job_id, task=task.task_id)
            return
        try:
            ended = self.table.settle(task.job_id, events=self.events)
        except JobRecordCorrupt as e:
            log.error("job_record_unreadable", job=task.job_id, error=str(e))
            return
        if ended is not None:
            log.info(
                "job_finished",
                job=task.job_id,
                state=ended.state,
                tasks=ended.tasks_total,
                images_ok=ended.counts.images_ok,
                images_failed=ended.counts.images_failed,
            )
            with self._lock:
                self._seen.pop(task.job_id, None)
