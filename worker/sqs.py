"""The tasks queue, as the worker uses it. No torch here.

Queue settings it relies on (infra/ and local mode set them from ``posefleet.resources``):
a redrive policy to the dead-letter queue, a visibility timeout above the longest task, long
polling. IAM: ``sqs:ReceiveMessage``, ``sqs:DeleteMessage``, ``sqs:ChangeMessageVisibility``,
``sqs:SendMessage`` (a message handed back is sent again) and ``sqs:GetQueueUrl`` /
``sqs:GetQueueAttributes`` on the tasks queue; ``sqs:GetQueueUrl`` and ``sqs:SendMessage`` on
its dead-letter queue (invalid bodies are sent there at once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from posefleet.deadletter import reason_attributes

__all__ = ["GONE_CODES", "Received", "TaskQueue"]

# A per-entry failure that means the message is no longer ours (deleted, or received by another
# consumer after its visibility ended). Any other entry failure may be tried again.
GONE_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
        "InvalidParameterValue",  # "Message does not exist or is not available for ..."
    }
)


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    group_id: str | None = None  # MessageGroupId, kept when the message is handed back


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
            MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
        )
        return [
            Received(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m["Body"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                group_id=m.get("Attributes", {}).get("MessageGroupId"),
            )
            for m in response.get("Messages", [])
        ]

    def delete(self, messages: Sequence[Received]) -> dict[str, str]:
        """DeleteMessageBatch in chunks of ten; returns ``{message_id: error code}`` of the
        entries that failed."""
        failed: dict[str, str] = {}
        for chunk in _chunks(messages):
            response = self.sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)
                ],
            )
            for f in response.get("Failed", []):
                failed[chunk[int(f["Id"])].message_id] = str(f.get("Code", ""))
        return failed

    def change_visibility(self, messages: Sequence[Received], timeout: int) -> dict[str, str]:
        """ChangeMessageVisibilityBatch in chunks of ten; returns ``{message_id: error code}``
        of the entries that failed."""
        failed: dict[str, str] = {}
        for chunk in _chunks(messages):
            response = self.sqs.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": timeout}
                    for i, m in enumerate(chunk)
                ],
            )
            for f in response.get("Failed", []):
                failed[chunk[int(f["Id"])].message_id] = str(f.get("Code", ""))
        return failed

    def hand_back(self, messages: Sequence[Received], *, delay: int) -> list[str]:
        """Send each body again (after ``delay`` seconds, at most SQS's 900), then delete the
        received message: it comes back as new, its receive count 1. Returns the ids of the
        messages that could not be sent (still held: release them another way). A message sent
        but not deleted comes back twice; its task rewrites the same result."""
        unsent: list[str] = []
        for chunk in _chunks(messages):
            entries = []
            for i, m in enumerate(chunk):
                entry: dict[str, Any] = {
                    "Id": str(i),
                    "MessageBody": m.body,
                    "DelaySeconds": max(0, min(900, delay)),
                }
                if m.group_id:
                    entry["MessageGroupId"] = m.group_id
                entries.append(entry)
            response = self.sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
            failed = {int(f["Id"]) for f in response.get("Failed", [])}
            unsent += [chunk[i].message_id for i in sorted(failed)]
            sent = [m for i, m in enumerate(chunk) if i not in failed]
            if sent:
                with contextlib.suppress(ClientError, BotoCoreError):
                    self.delete(sent)  # else the old copy comes back when its timeout ends
        return unsent

    def send_to_dead_letter(self, message: Received, reason: str) -> bool:
        """Send a copy of ``message`` to the dead-letter queue with ``reason`` as its attribute
        (the caller then deletes it here: sent first, so a crash in between duplicates a dead
        letter, never loses one). False, and nothing sent, when there is no dead-letter queue."""
        if self.dlq_url is None:
            return False
        self.sqs.send_message(
            QueueUrl=self.dlq_url,
            MessageBody=message.body,
            MessageAttributes=reason_attributes(reason),
        )
        return True
