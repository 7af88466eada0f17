"""What a worker holds: its messages, their tasks and images, and how it lets them go.

Every stage shares one :class:`Ledger`. A message is *held* from its receive until it is
deleted (its tasks written) or let go; once *closed*, no stage spends more work on it.

How a live worker lets a message go says why it comes back:

* :meth:`Ledger.give_up` after a transient fault that outlasted the retry budget, and
  :meth:`Ledger.release_all` at shutdown, **hand the message back**: the same body is sent
  again (``DelaySeconds`` = ``retry_delay_seconds`` after a fault, 0 at shutdown) and the old
  message deleted, so it comes back with a receive count of 1, as new. Only a dead worker makes
  a message come back with a higher count, and only such a message is taken as a crash suspect
  (``worker.isolate``). A message already under suspicion keeps its count (released by
  visibility), so isolation carries on where it was.
* :meth:`Ledger.give_up` after an error nobody expected (``crash=True``: a model or isolation
  bug) releases by visibility: the receive count rises, and the redrive policy is the backstop.

If handing back fails (SQS is down), the message is released by visibility instead, and if that
fails too it comes back when its visibility timeout ends: nothing is lost either way.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from posefleet import metric_names as m
from posefleet.logs import get_logger
from posefleet.resources import Lane
from posefleet.result import ImageError, ResultLine
from posefleet.task import TaskMessage
from worker.metrics import Metrics
from worker.prefetch import Throughput
from worker.retry import GaveUp, Retry
from worker.sqs import Received, TaskQueue

__all__ = ["Held", "Item", "Ledger", "TaskState", "by_queue"]

log = get_logger("worker")


@dataclass(eq=False)
class Held:
    """One SQS message this worker holds, until its tasks are written and it is deleted."""

    received: Received
    queue: TaskQueue  # where it came from, where it is acknowledged or let go
    lane: Lane = Lane.BACKFILL
    tasks: list[TaskState] = field(default_factory=list)
    pending: int = 0  # tasks not yet written
    images: int = 0
    closed: bool = False  # deleted, handed back or released: no more work on it
    received_at: float = field(default_factory=time.time)  # wall clock, for events
    visible_until: float = 0.0  # monotonic: when SQS shows it to others unless extended

    @property
    def urgent(self) -> bool:
        return self.lane is Lane.LIVE

    @property
    def suspect(self) -> bool:
        """It came back after earlier receives: it may hold an image that kills workers."""
        return self.received.receive_count > 1


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


def by_queue(held: Iterable[Held]) -> list[tuple[TaskQueue, list[Held]]]:
    """Messages grouped by the queue they came from (SQS batch calls take one queue)."""
    groups: dict[int, tuple[TaskQueue, list[Held]]] = {}
    for h in held:
        groups.setdefault(id(h.queue), (h.queue, []))[1].append(h)
    return list(groups.values())


class Ledger:
    def __init__(
        self,
        *,
        metrics: Metrics,
        receive_visibility: int,
        retry_delay_seconds: int,
        on_task_complete: Callable[[TaskState], None],
        release_retry: Retry | None = None,
    ) -> None:
        self.metrics = metrics
        self.receive_visibility = receive_visibility
        self.retry_delay_seconds = retry_delay_seconds
        self.on_task_complete = on_task_complete
        self.release_retry = release_retry
        self.stats: Counter[str] = Counter()
        self.throughput = Throughput()
        self.acks: queue.Queue[Held] = queue.Queue()
        self.last_activity = time.monotonic()
        self._lock = threading.Lock()
        self._held: dict[str, Held] = {}  # by receipt handle
        self._images: Counter[Lane] = Counter()

    # ------------------------------------------------------------------ holding

    def hold(self, held: Held) -> None:
        held.visible_until = time.monotonic() + self.receive_visibility
        with self._lock:
            self._held[held.received.receipt_handle] = held
            self._images[held.lane] += held.images
        self.last_activity = time.monotonic()

    def holding(self) -> int:
        with self._lock:
            return len(self._held)

    def images_held(self, lane: Lane | None = None) -> int:
        """Images held, of one lane or of both."""
        with self._lock:
            return self._images[lane] if lane is not None else self._images.total()

    def open(self) -> list[Held]:
        with self._lock:
            return [h for h in self._held.values() if not h.closed]

    # ------------------------------------------------------------------ results

    def finish_item(self, state: TaskState, index: int, line: ResultLine) -> None:
        """Record image ``index``'s line; the task's last line hands it to the writer."""
        with self._lock:
            if state.held.closed or state.lines[index] is not None:
                return
            state.lines[index] = line
            state.remaining -= 1
            complete = state.remaining == 0
        self.throughput.add(1)
        if complete:
            self.on_task_complete(state)

    def image_failed(self, state: TaskState, index: int, error: ImageError) -> None:
        task = state.task
        log.info(
            "image_failed",
            job=task.job_id,
            task=task.task_id,
            key=task.keys[index],
            kind=str(error.kind),
        )
        self.finish_item(state, index, ResultLine.error(task.bucket, task.keys[index], error))

    def task_written(self, state: TaskState) -> None:
        """The task's object is durable; the message is acknowledged once all its tasks are."""
        held = state.held
        with self._lock:
            held.pending -= 1
            done = held.pending == 0 and not held.closed
        if done:
            self.acks.put(held)

    def acknowledge(self, held: Held) -> None:
        """A message with nothing to do (a test event, a cancelled job's task): delete it."""
        self.acks.put(held)

    # ------------------------------------------------------------------ letting go

    def close(self, held: list[Held]) -> list[Held]:
        """Forget messages; returns the ones that were still open."""
        closed = []
        with self._lock:
            for h in held:
                if self._held.pop(h.received.receipt_handle, None) is not None:
                    self._images[h.lane] -= h.images
                if not h.closed:
                    h.closed = True
                    closed.append(h)
        self.last_activity = time.monotonic()
        return closed

    def give_up(self, held: Held, *, reason: str, crash: bool = False) -> None:
        """Stop work on ``held`` and let it come back later (see the module doc); SQS faults on
        the way are retried for a while (``release_retry``), so it does not sit out its whole
        visibility timeout."""
        self.let_go(
            [held], delay=self.retry_delay_seconds, reason=reason, crash=crash, patient=True
        )

    def release_all(self, *, reason: str) -> int:
        """At shutdown: every message still held goes back at once (one try: the grace is
        short, and a message SQS did not take comes back when its visibility ends)."""
        return self.let_go(self.open(), delay=0, reason=reason, crash=False)

    def let_go(
        self,
        held: list[Held],
        *,
        delay: int,
        reason: str,
        crash: bool = False,
        patient: bool = False,
    ) -> int:
        """Close ``held`` and let it come back after ``delay`` seconds: handed back as new, or
        (``crash``, or a suspect) released by visibility. Returns how many were still open."""
        newly = self.close(held)
        if not newly:
            return 0
        retry = self.release_retry if patient else None

        def call(fn: Callable[[], Any], what: str) -> Any:
            return fn() if retry is None else retry.call(fn, what=what)

        by_visibility = [h for h in newly if crash or h.suspect]
        for tasks_queue, fresh in by_queue(h for h in newly if not (crash or h.suspect)):
            try:
                unsent = set(
                    call(
                        lambda q=tasks_queue, f=fresh: q.hand_back(
                            [h.received for h in f], delay=delay
                        ),
                        "sqs:SendMessageBatch(hand back)",
                    )
                )
            except (ClientError, BotoCoreError, GaveUp) as e:
                log.warning("hand_back_failed", messages=len(fresh), error=str(e))
                unsent = {h.received.message_id for h in fresh}
            by_visibility += [h for h in fresh if h.received.message_id in unsent]
        for tasks_queue, released in by_queue(by_visibility):
            try:
                call(
                    lambda q=tasks_queue, r=released: q.change_visibility(
                        [h.received for h in r], delay
                    ),
                    "sqs:ChangeMessageVisibilityBatch(release)",
                )
            except (ClientError, BotoCoreError, GaveUp) as e:  # back when its visibility ends
                log.warning("release_failed", messages=len(released), error=str(e))
        for h in newly:
            self.metrics.count(m.TASKS_ABANDONED, len(h.tasks))
            self.stats["released"] += 1
            log.info(
                "message_released",
                message_id=h.received.message_id,
                reason=reason,
                delay=delay,
                handed_back=h not in by_visibility,
            )
        return len(newly)
