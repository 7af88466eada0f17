"""The ack stage: DeleteMessageBatch for messages whose tasks are all written.

Deletes are batched (up to ten, or what arrives within 50 ms) and retried in place on a
transient fault. An entry SQS refuses as gone (its receipt handle no longer valid) was
received by someone else after its visibility ended: its tasks' objects are written, and the
other receiver rewrites the same lines. Either way the message is forgotten here.
"""

from __future__ import annotations

import threading

from posefleet.logs import get_logger
from worker.batching import collect_batch
from worker.ledger import Held, Ledger, by_queue
from worker.retry import GaveUp, Retry
from worker.sqs import TaskQueue

__all__ = ["Acker"]

log = get_logger("worker")


class Acker:
    def __init__(self, *, ledger: Ledger, retry: Retry, stop: threading.Event) -> None:
        self.ledger = ledger
        self.retry = retry
        self.stop = stop

    def loop(self) -> None:
        acks = self.ledger.acks
        while not (self.stop.is_set() and acks.empty()):
            batch = collect_batch(acks, max_size=10, max_wait=0.05, first_wait=0.2)
            for tasks_queue, held in by_queue(h for h in batch if not h.closed):
                self._delete(tasks_queue, held)

    def _delete(self, tasks_queue: TaskQueue, held: list[Held]) -> None:
        try:
            failed = self.retry.call(
                lambda: tasks_queue.delete([h.received for h in held]),
                what="sqs:DeleteMessageBatch",
                messages=len(held),
            )
        except GaveUp as e:
            # Not deleted: the messages come back and their tasks rewrite the same objects.
            log.warning("delete_failed", messages=len(held), error=str(e))
            failed = {h.received.message_id: "gave_up" for h in held}
        if failed:
            log.warning(
                "delete_partly_failed", failed=len(failed), codes=sorted(set(failed.values()))
            )
        self.ledger.close(held)
