"""The tasks queue, as the worker uses it. No torch here.

Queue settings it relies on (infra/ and local mode set them from ``posefleet.resources``):
a redrive policy to the dead-letter queue, a visibility timeout above the longest task, long
polling. IAM: ``sqs:ReceiveMessage``, ``sqs:DeleteMessage``, ``sqs:ChangeMessageVisibility``
and ``sqs:GetQueueUrl`` / ``sqs:GetQueueAttributes`` on the tasks queue; ``sqs:GetQueueUrl``
and ``sqs:SendMessage`` on its dead-letter queue (invalid bodies are sent there at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from posefleet.deadletter import reason_attributes

__all__ = ["Received", "TaskQueue"]


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


def _chunks(items: Sequence[Received], size: int = 10) -> Iterable[Sequence[Received]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TaskQueue:
    def __init__(self, *, sqs: Any, url: str, dlq_url: str | None = None) -> None:
        self.sqs = sqs
        self.url = url
        self.dlq_url = dlq_url  # from the queue's RedrivePolicy; None: there is none

    def receive(self, *, max_messages: int, wait_seconds: int, visibility: int) -> list[Received]:
        response = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(10, max_messages)),
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            Received(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m["Body"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for m in response.get("Messages", [])
        ]

    def delete(self, messages: Sequence[Received]) -> list[str]:
        """DeleteMessageBatch in chunks of ten; returns the ids that failed."""
        failed: list[str] = []
        for chunk in _chunks(messages):
            response = self.sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)
                ],
            )
            failed += [chunk[int(f["Id"])].message_id for f in response.get("Failed", [])]
        return failed

    def change_visibility(self, messages: Sequence[Received], timeout: int) -> list[str]:
        """ChangeMessageVisibilityBatch in chunks of ten; returns the ids that failed."""
        failed: list[str] = []
        for chunk in _chunks(messages):
            response = self.sqs.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": timeout}
                    for i, m in enumerate(chunk)
                ],
            )
            failed += [chunk[int(f["Id"])].message_id for f in response.get("Failed", [])]
        return failed

    def dead_letter(self, message: Received, reason: str) -> bool:
        """Send ``message`` to the dead-letter queue with ``reason`` as its attribute, then
        delete it here (sent first: a crash in between duplicates a dead letter, never loses
        one). False, and nothing done, when the queue has no dead-letter queue."""
        if self.dlq_url is None:
            return False
        self.sqs.send_message(
            QueueUrl=self.dlq_url,
            MessageBody=message.body,
            MessageAttributes=reason_attributes(reason),
        )
        self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message.receipt_handle)
        return True
