"""Sending task messages: SendMessageBatch, ten entries and at most 1 MiB a call,
retrying the entries SQS reports in ``Failed``. Each body is built once. Several senders run
these at once on one client (producer/job/submit.py); boto3 clients are safe to share across
threads.

**Jobs share the fleet.** Every task is sent with ``MessageGroupId`` = its job id. On a standard
queue that makes SQS a *fair queue*: when one job (a 100M-image backfill) holds most of the
backlog, SQS delivers the other jobs' messages first to the consumers, so a small job submitted
after a large one does not wait for it, and no worker code changes. moto accepts the parameter
and keeps it on the message but delivers in arrival order: locally, a job waits behind the
tasks queued before it (docs/operations.md, "Jobs share the fleet").

IAM: ``sqs:SendMessage`` on the tasks queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from posefleet.task import TaskMessage

__all__ = ["SendError", "send_tasks"]

MAX_ENTRIES = 10
MAX_BATCH_BYTES = 1024 * 1024


class SendError(RuntimeError):
    """Some tasks could not be sent after every retry."""


def _batches(tasks: Iterable[TaskMessage]) -> Iterator[list[tuple[str, str]]]:
    """``(job_id, body)`` batches within SendMessageBatch's limits."""
    batch: list[tuple[str, str]] = []
    size = 0
    for task in tasks:
        body = task.to_body()
        n = len(body.encode())
        if n > MAX_BATCH_BYTES:
            raise SendError(
                f"task {task.task_id} is {n} bytes, over SQS's 1 MiB; use a smaller --task-size"
            )
        if batch and (len(batch) == MAX_ENTRIES or size + n > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((task.job_id, body))
        size += n
    if batch:
        yield batch


def send_tasks(
    sqs: Any,
    queue_url: str,
    tasks: Iterable[TaskMessage],
    *,
    max_attempts: int = 6,
    on_sent: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Send every task; returns how many were sent. Raises :class:`SendError` if any never went.
    ``should_stop`` is asked before each batch: true stops there (fewer sent than given)."""
    sent = 0
    for batch in _batches(tasks):
        if should_stop is not None and should_stop():
            break
        pending = {str(i): entry for i, entry in enumerate(batch)}
        for attempt in range(max_attempts):
            response = sqs.send_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": i, "MessageBody": body, "MessageGroupId": job}
                    for i, (job, body) in pending.items()
                ],
            )
            ok = len(response.get("Successful", []))
            sent += ok
            if on_sent and ok:
                on_sent(ok)
            failed = response.get("Failed", [])
            permanent = [f for f in failed if f.get("SenderFault")]
            if permanent:
                raise SendError(
                    f"SQS refused a task: {permanent[0].get('Code')}: {permanent[0].get('Message')}"
                )
            pending = {f["Id"]: pending[f["Id"]] for f in failed}
            if not pending:
                break
            time.sleep(min(0.1 * 2**attempt, 5.0))
        else:
            raise SendError(f"{len(pending)} tasks still failing after {max_attempts} attempts")
    return sent
