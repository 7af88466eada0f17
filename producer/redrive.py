"""Moving dead-lettered tasks back to the tasks queue once their cause is fixed.

Each message is sent to the tasks queue before it is deleted from the dead-letter queue, so a
crash between the two duplicates a task rather than losing it (results are idempotent).
Each dead letter says why it is there (posefleet.deadletter): the worker's reason for a body it
judged invalid, or the redrive policy's (received maxReceiveCount times).
IAM: ``sqs:ReceiveMessage``, ``sqs:DeleteMessage`` on the DLQ, ``sqs:SendMessage`` on the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from posefleet.deadletter import REASON_ATTRIBUTE, reason_of
from posefleet.task import InvalidMessage, parse_message

__all__ = ["peek", "redrive"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str
    body: str
    receives: int
    problem: str | None  # why the body is not a task, if it is not one
    reason: str  # why it is in the dead-letter queue: the worker's reason, or the redrive's


def _receive(sqs: Any, url: str, visibility: int) -> list[dict]:
    return sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        VisibilityTimeout=visibility,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
        MessageAttributeNames=[REASON_ATTRIBUTE],
    ).get("Messages", [])


def _problem(body: str) -> str | None:
    try:
        parse_message(body, stream_job="stream", stream_results="s3://unused/x")
    except InvalidMessage as e:
        return str(e)
    return None


def peek(sqs: Any, dlq_url: str, *, limit: int = 50) -> list[DeadLetter]:
    """Look without moving: each message is hidden while read, then made visible again."""
    seen: dict[str, DeadLetter] = {}
    handles: list[str] = []
    try:
        while len(seen) < limit:
            fresh = [m for m in _receive(sqs, dlq_url, 60) if m["MessageId"] not in seen]
            if not fresh:
                break
            for m in fresh:
                handles.append(m["ReceiptHandle"])
                receives = int(m.get("Attributes", {}).get("ApproximateReceiveCount", 0))
                seen[m["MessageId"]] = DeadLetter(
                    m["MessageId"], m["Body"], receives, _problem(m["Body"]), reason_of(m)
                )
    finally:
        for start in range(0, len(handles), 10):
            sqs.change_message_visibility_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                    for i, h in enumerate(handles[start : start + 10])
                ],
            )
    return list(seen.values())[:limit]


def redrive(
    sqs: Any,
    dlq_url: str,
    queue_url: str,
    *,
    include_invalid: bool = False,
    on_moved: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Move every valid task back; returns (moved, left). Invalid bodies stay unless asked."""
    moved = left = 0
    skipped: set[str] = set()
    while True:
        batch = [m for m in _receive(sqs, dlq_url, 60) if m["MessageId"] not in skipped]
        if not batch:
            return moved, left
        for m in batch:
            if not include_invalid and _problem(m["Body"]) is not None:
                skipped.add(m["MessageId"])
                left += 1
                continue
            sqs.send_message(QueueUrl=queue_url, MessageBody=m["Body"])
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=m["ReceiptHandle"])
            moved += 1
            if on_moved:
                on_moved(1)
