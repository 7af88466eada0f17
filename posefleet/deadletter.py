"""Dead letters: the one definition of how a dead letter says why it is there.

The worker sends a message it can judge invalid by itself (not JSON, not a task, an unknown
version) straight to the dead-letter queue, with the reason in the message attribute
:data:`REASON_ATTRIBUTE`, and deletes it from the tasks queue. A message the redrive policy
moved there (received ``maxReceiveCount`` times without being deleted) has no such attribute:
:func:`reason_of` says so. The dead-letter queue is the one the tasks queue's RedrivePolicy
names (:func:`dead_letter_url`). No torch here.

IAM: ``sqs:GetQueueAttributes`` on the tasks queue, ``sqs:GetQueueUrl`` and (worker)
``sqs:SendMessage`` on the dead-letter queue.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "MAX_REASON_CHARS",
    "REASON_ATTRIBUTE",
    "REDRIVE_REASON",
    "dead_letter_url",
    "dead_letter_url_of",
    "reason_attributes",
    "reason_of",
]

REASON_ATTRIBUTE = "posefleet-reason"
MAX_REASON_CHARS = 1000
REDRIVE_REASON = "exceeded maxReceiveCount (moved by the redrive policy)"


def reason_attributes(reason: str) -> dict[str, dict[str, str]]:
    """SendMessage ``MessageAttributes`` carrying ``reason`` (cut to MAX_REASON_CHARS)."""
    text = reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."
    return {REASON_ATTRIBUTE: {"DataType": "String", "StringValue": text or "invalid"}}


def reason_of(message: dict[str, Any]) -> str:
    """Why a received dead letter is there: the worker's reason, or the redrive policy's.

    ``message`` is one entry of ReceiveMessage's ``Messages``, received with
    ``MessageAttributeNames=[REASON_ATTRIBUTE]``."""
    attribute = message.get("MessageAttributes", {}).get(REASON_ATTRIBUTE, {})
    return attribute.get("StringValue") or REDRIVE_REASON


def dead_letter_url(sqs: Any, queue_url: str) -> str | None:
    """The URL of the dead-letter queue of ``queue_url``, or None without a RedrivePolicy.

    SQS answers without ``Attributes`` at all when none of the asked ones is set."""
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]).get(
        "Attributes", {}
    )
    return dead_letter_url_of(sqs, attrs)


def dead_letter_url_of(sqs: Any, attrs: dict[str, str]) -> str | None:
    """The dead-letter queue's URL from a tasks queue's attributes already read (with
    ``RedrivePolicy`` among those asked), or None without a RedrivePolicy."""
    if "RedrivePolicy" not in attrs:
        return None
    arn = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"]
    account, name = arn.split(":")[4:6]
    return sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
