"""The heartbeat stage: every held message's visibility extended before it ends.

Every ``heartbeat_seconds`` (by default a third of the visibility messages are received with,
``receive_visibility_seconds``, which is shorter than the timeout) the visibility of every held
message is set to the full timeout again. A call that fails transiently is tried
again within seconds, not at the next beat: the messages stay ours until their visibility
ends, so a fault shorter than that costs nothing. A message is given up here only when SQS says
it is gone (its receipt handle refused) or its visibility ran out before a beat got through:
another worker may have it now, so it is forgotten, never deleted. A message held longer than
``task_timeout_seconds`` is released, so nothing stuck is held forever.
"""

from __future__ import annotations

import threading
import time

from posefleet.aws import is_transient
from posefleet.logs import get_logger
from posefleet.settings import WorkerSettings
from worker.ledger import Held, Ledger, by_queue
from worker.receive import receive_visibility
from worker.retry import Retry
from worker.sqs import GONE_CODES, TaskQueue

__all__ = ["Heartbeat"]

log = get_logger("worker")

MARGIN = 2.0  # seconds before a message's visibility ends at which it is no longer trusted


class Heartbeat:
    def __init__(
        self,
        *,
        settings: WorkerSettings,
        ledger: Ledger,
        retry: Retry,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.retry = retry
        self.stop = stop
        self.period = settings.heartbeat_seconds or receive_visibility(settings) / 3

    def loop(self) -> None:
        failures = 0
        while not self.stop.wait(self.period if not failures else self.retry.delay(failures)):
            held = self.ledger.open()
            self._stuck(held)
            retry_soon = False
            for tasks_queue, group in by_queue(h for h in held if not h.closed):
                retry_soon |= not self._beat(tasks_queue, group)
            failures = failures + 1 if retry_soon else 0

    def _beat(self, tasks_queue: TaskQueue, held: list[Held]) -> bool:
        """Extend ``held``'s visibility; False when some of it should be tried again soon."""
        sent = time.monotonic()
        try:
            failed = tasks_queue.change_visibility(
                [h.received for h in held], self.settings.visibility_timeout
            )
        except Exception as e:
            if not is_transient(e):
                raise
            log.warning("heartbeat_failed", messages=len(held), error=str(e))
            self._expired(held)
            return False
        ok = True
        for h in held:
            code = failed.get(h.received.message_id)
            if code is None:
                h.visible_until = sent + self.settings.visibility_timeout
            elif code in GONE_CODES:
                self._lost(h, code)
            else:
                ok = False  # an entry that failed for now: try it again soon
        self._expired(held)
        return ok

    def _expired(self, held: list[Held]) -> None:
        now = time.monotonic()
        for h in held:
            if not h.closed and h.visible_until - MARGIN <= now:
                self._lost(h, "visibility_ended")

    def _lost(self, held: Held, why: str) -> None:
        # We may no longer own it: never delete, let it come back to some worker.
        log.warning("heartbeat_lost", message_id=held.received.message_id, why=why)
        self.ledger.stats["heartbeat_lost"] += 1
        self.ledger.close([held])

    def _stuck(self, held: list[Held]) -> None:
        limit = self.settings.task_timeout_seconds
        now = time.time()
        for h in held:
            if now - h.received_at > limit:
                log.error(
                    "message_stuck",
                    message_id=h.received.message_id,
                    held_s=round(now - h.received_at),
                )
                self.ledger.give_up(h, reason="stuck", crash=True)
