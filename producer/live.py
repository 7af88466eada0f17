"""The live lane, as an application reads it: one photo's label, and the events as they come.

:func:`read_label` is one GET: an uploaded photo's result line sits at a key derived from its
input alone (``posefleet.layout``: ``<results>/live/<bucket>/<key>.json``), overwritten when the
photo is uploaded again. :func:`wait_for_label` polls it. :func:`follow_events` reads the
queue subscribed to the events topic (``posefleet.events``) and yields each event once
it has been handed to the caller, deleting it after (``keep=True`` leaves it there).

These are the library functions behind ``python -m producer label`` and ``events``; an
application can import them as they are.
IAM: ``s3:GetObject`` on ``<results>/live/``; ``sqs:ReceiveMessage`` and ``sqs:DeleteMessage``
on the events queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from posefleet.aws import is_not_found
from posefleet.events import ImageLabelled, JobFinished, parse_event
from posefleet.layout import ResultsLocation
from posefleet.result import ResultLine, load_lines

__all__ = ["UnreadableEvent", "follow_events", "read_label", "wait_for_label"]


def read_label(s3: Any, location: ResultsLocation, bucket: str, key: str) -> ResultLine | None:
    """The photo's result line (``ok`` or ``error``), or None while it has none."""
    try:
        body = s3.get_object(Bucket=location.bucket, Key=location.live_key(bucket, key))["Body"]
    except ClientError as e:
        if is_not_found(e):
            return None
        raise
    lines = load_lines(body.read())
    return lines[-1] if lines else None


def wait_for_label(
    s3: Any,
    location: ResultsLocation,
    bucket: str,
    key: str,
    *,
    timeout: float,
    interval: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
) -> ResultLine | None:
    """:func:`read_label` until there is a line or ``timeout`` seconds have passed."""
    deadline = clock() + timeout
    while True:
        line = read_label(s3, location, bucket, key)
        if line is not None or clock() >= deadline:
            return line
        time.sleep(min(interval, max(0.0, deadline - clock())))


class UnreadableEvent(ValueError):
    """A message on the events queue that is no posefleet event (it is left there)."""


def follow_events(
    sqs: Any,
    queue_url: str,
    *,
    follow: bool = False,
    keep: bool = False,
    wait_seconds: int = 20,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[ImageLabelled | JobFinished | UnreadableEvent]:
    """The events on ``queue_url`` (subscribed to the topic with raw delivery). Without
    ``follow``, those there now; with it, until ``should_stop()``. Each event is deleted once
    the caller has it; ``keep`` takes one look (up to ten) and leaves them visible."""
    while not should_stop():
        asked: dict[str, Any] = {"VisibilityTimeout": 0} if keep else {}
        got = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait_seconds if follow else 0,
            **asked,
        ).get("Messages", [])
        if not got and not follow:
            return
        for message in got:
            try:
                yield parse_event(message["Body"])
            except ValidationError as e:
                yield UnreadableEvent(f"{message['MessageId']}: {e.errors()[0]['msg']}")
                continue
            if not keep:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if keep:
            return  # kept messages stay visible: one look (ten at most) is all
