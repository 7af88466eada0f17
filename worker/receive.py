"""The receive stage: long-polls SQS while the worker holds less than a few seconds of work.

One receiver runs per lane (``posefleet.resources.Lane``). The live lane's receiver always
polls, counting only live work against the bound; the backfill receiver counts everything held,
so live work arriving shrinks what is taken of the backfill. Each asks for no more messages than
fit the work bound (``worker.prefetch``), parses each one
(``posefleet.task``), holds it in the ledger and dispatches it: a first delivery to the fetch
and decode pipeline (``worker.prepare``), a message that came back after earlier receives to
isolation (``worker.isolate``). A body judged invalid by itself goes to the dead-letter queue
at once with its reason (``posefleet.deadletter``), on the I/O pool so that a slow SQS never
holds up receiving; without a dead-letter queue it is made visible again at once and left to
the redrive policy. A failed receive is retried with jittered back-off capped at a few seconds,
so the worker takes work again within seconds of SQS answering after an outage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor

from posefleet import metric_names as m
from posefleet.aws import is_transient
from posefleet.logs import get_logger
from posefleet.resources import Lane
from posefleet.settings import WorkerSettings
from posefleet.task import InvalidMessage, parse_message
from worker.ledger import Held, Ledger, TaskState
from worker.metrics import Metrics
from worker.prefetch import messages_to_receive, prefetch_limit
from worker.retry import GaveUp, Retry
from worker.sqs import Received, TaskQueue
from worker.supervise import Supervisor

__all__ = ["Receiver", "receive_visibility"]

log = get_logger("worker")


def receive_visibility(settings: WorkerSettings) -> int:
    """Seconds a message is received with: short (a lost receive answer hides messages only that
    long), the heartbeat then extending it to the full visibility timeout."""
    return min(settings.receive_visibility_seconds, settings.visibility_timeout)


class Receiver:
    def __init__(
        self,
        *,
        settings: WorkerSettings,
        tasks_queue: TaskQueue,
        lane: Lane,
        ledger: Ledger,
        metrics: Metrics,
        retry: Retry,
        supervisor: Supervisor,
        io_pool: Executor,
        stopping: threading.Event,
        dispatch: Callable[[Held], None],
    ) -> None:
        self.settings = settings
        self.queue = tasks_queue
        self.lane = lane
        self.ledger = ledger
        self.metrics = metrics
        self.retry = retry
        self.supervisor = supervisor
        self.io_pool = io_pool
        self.stopping = stopping
        self.dispatch = dispatch
        self.images_per_message: float | None = None  # running average, for MaxNumberOfMessages
        self.visibility = receive_visibility(settings)

    def limit(self) -> int:
        """Images this worker may hold now: a few seconds of its measured throughput."""
        s = self.settings
        return prefetch_limit(
            rate=self.ledger.throughput.rate(),
            seconds=s.prefetch_seconds,
            batch_size=s.batch_size,
            min_batches=s.prefetch_batches,
            max_images=s.max_images_in_flight,
        )

    def loop(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            counted = self.lane if self.lane is Lane.LIVE else None
            room = self.limit() - self.ledger.images_held(counted)
            wanted = messages_to_receive(room=room, images_per_message=self.images_per_message)
            if not wanted:
                self.stopping.wait(0.02)
                continue
            try:
                messages = self.queue.receive(
                    max_messages=wanted,
                    wait_seconds=self.settings.wait_time_seconds,
                    visibility=self.visibility,
                )
            except Exception as e:
                if not is_transient(e):
                    raise  # the supervisor logs it and starts the loop again
                delay = self.retry.delay(failures)
                failures += 1
                log.warning("receive_failed", error=str(e), attempt=failures, retry_in=delay)
                self.stopping.wait(delay)
                continue
            if failures:
                log.info("receive_recovered", after_failures=failures)
            failures = 0
            if self.stopping.is_set():  # received during the drain: straight back
                held = [self._held(message) for message in messages]
                for h in held:
                    self.ledger.hold(h)
                self.ledger.let_go(held, delay=0, reason="stopping")
                return
            for message in messages:
                self.accept(message)

    def _held(self, message: Received, tasks: int = 0) -> Held:
        return Held(received=message, queue=self.queue, lane=self.lane, pending=tasks)

    def accept(self, message: Received) -> None:
        self.ledger.stats["messages"] += 1
        try:
            parsed = parse_message(
                message.body,
                stream_job=self.settings.stream_job,
                stream_results=self.settings.results,
            )
        except InvalidMessage as e:
            self.ledger.stats["invalid_messages"] += 1
            self.metrics.count(m.MESSAGES_INVALID, 1)
            held = self._held(message)
            self.ledger.hold(held)
            self.supervisor.guard(
                self.io_pool,
                self._invalid,
                held,
                str(e),
                on_error=lambda _: self.ledger.let_go(
                    [held], delay=0, reason="invalid", crash=True
                ),
                stage="dead_letter",
            )
            return
        held = self._held(message, len(parsed.tasks))
        if not parsed.tasks:  # s3:TestEvent, or an event with no created objects
            log.info("message_ignored", message_id=message.message_id, kind=parsed.kind)
            self.ledger.hold(held)
            self.ledger.acknowledge(held)
            return
        now = time.monotonic()
        for task in parsed.tasks:
            if task.enqueued_at:
                waited = max(0.0, held.received_at - task.enqueued_at) * 1000
                self.metrics.observe(m.QUEUE_TIME, waited, Lane=str(self.lane))
            n = len(task.keys)
            held.tasks.append(
                TaskState(task=task, held=held, lines=[None] * n, remaining=n, started=now)
            )
            held.images += n
        self.ledger.hold(held)
        per = self.images_per_message
        self.images_per_message = held.images if per is None else 0.8 * per + 0.2 * held.images
        self.dispatch(held)

    def _invalid(self, held: Held, reason: str) -> None:
        """A body judged invalid by itself: to the dead-letter queue now, with its reason."""
        message = held.received
        try:
            sent = self.retry.call(
                lambda: self.queue.send_to_dead_letter(message, reason),
                what="sqs:SendMessage(dead-letter)",
                message_id=message.message_id,
            )
            if sent:
                self.retry.call(
                    lambda: self.queue.delete([message]),
                    what="sqs:DeleteMessageBatch",
                    message_id=message.message_id,
                )
        except GaveUp as e:
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
            self.ledger.stats["dead_lettered"] += 1
            self.ledger.close([held])
            return
        # No dead-letter queue (or it would not take it): visible again at once, so the redrive
        # policy, if any, moves it after maxReceiveCount receives instead of it waiting each time.
        self.ledger.let_go([held], delay=0, reason="invalid", crash=True)
