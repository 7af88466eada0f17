"""Telling the application: an "image labelled" event for every uploaded photo's result.

A write hook (``worker.write``): once an upload task's result is at its photo's live key
(``posefleet.layout``), an :class:`~posefleet.events.ImageLabelled` event with the result line
inline is published on the events topic. Its id derives from the upload (ETag or sequencer)
and the model version, so a redelivered message publishes the same event again, which a
subscriber de-duplicates. Backfill tasks publish nothing here; a job tells its end once, in the
job record's "job finished" event.
"""

from __future__ import annotations

from datetime import UTC, datetime

from posefleet import metric_names as m
from posefleet.events import EventChannel, ImageLabelled, image_event_id, utc_now
from posefleet.result import ResultLine
from worker.ledger import TaskState
from worker.metrics import Metrics

__all__ = ["Announcer"]


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class Announcer:
    def __init__(self, *, channel: EventChannel, metrics: Metrics) -> None:
        self.channel = channel
        self.metrics = metrics

    def __call__(self, state: TaskState, lines: list[ResultLine]) -> None:
        task = state.task
        if task.upload is None:
            return
        (line,) = lines
        location = task.location
        event = ImageLabelled(
            id=image_event_id(task.bucket, task.keys[0], task.upload, line.model_version or ""),
            bucket=task.bucket,
            key=task.keys[0],
            result=line,
            result_uri=f"s3://{location.bucket}/{task.result_key}",
            model_version=line.model_version,
            uploaded_at=_when(task.enqueued_at),
            received_at=_when(state.held.received_at) or utc_now(),
            labelled_at=utc_now(),
        )
        self.channel.publish(event)
        self.metrics.count(m.EVENTS_PUBLISHED, 1)
