"""Events: the one definition of what posefleet tells applications, and how.

Two kinds, each a versioned JSON object with a stable ``id`` (delivery is at least once:
subscribers de-duplicate on it):

* ``image.labelled`` (:class:`ImageLabelled`): one live-lane photo has its result line, inline,
  with where the input and the result lie and when it was uploaded, received and labelled.
  The id derives from the upload (bucket, key, the object's ETag or S3's event sequencer) and
  the model version, so the same upload labelled twice by the same model has one id.
* ``job.finished`` (:class:`JobFinished`): a job reached a final state (complete, cancelled,
  failed), with its counts and where its results are. Published once per job, by whoever wins
  the conditional update that ends the job record. The id derives from the job id, its state
  and the run (``created_at`` of the run that finished), so a resubmitted job's second
  finish is a new event.

**The channel** is one SNS topic (infra/ provisions it, encrypted; the local fleet creates it
on moto's server with a queue subscribed). Every event is published with its JSON body as the
message and its kind in the message attribute :data:`TYPE_ATTRIBUTE`, so a subscription can
filter on one kind. SNS rather than EventBridge: it fans out to SQS, Lambda, HTTPS and email
with per-subscription filter policies, is served by moto locally with the same API, and an
application that prefers EventBridge can pipe the topic into a bus; EventBridge events are
capped at 256 KB, like SNS, so neither changes what fits inline.

No torch here, no boto3 either: :class:`EventChannel` takes the caller's SNS client.
IAM: ``sns:Publish`` on the topic.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from posefleet.result import ResultLine

__all__ = [
    "EVENT_VERSION",
    "TYPE_ATTRIBUTE",
    "Event",
    "EventChannel",
    "ImageLabelled",
    "JobFinished",
    "image_event_id",
    "job_event_id",
    "parse_event",
    "utc_now",
]

EVENT_VERSION = 1
TYPE_ATTRIBUTE = "posefleet-type"  # SNS message attribute naming the event's kind


def utc_now() -> datetime:
    return datetime.now(UTC)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def image_event_id(bucket: str, key: str, upload: str, model_version: str) -> str:
    """Stable id of an ``image.labelled`` event: the same upload (``upload`` is the object's
    ETag, or S3's event sequencer) labelled by the same model is the same event."""
    return "img-" + _digest(bucket, key, upload, model_version)


def job_event_id(job_id: str, state: str, run: str) -> str:
    """Stable id of a ``job.finished`` event: one per job, final state and run."""
    return "job-" + _digest(job_id, state, run)


class _Base(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = EVENT_VERSION
    id: str = Field(min_length=1, max_length=128)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class ImageLabelled(_Base):
    """One live photo labelled: its result line inline (``ok`` or ``error``)."""

    type: Literal["image.labelled"] = "image.labelled"
    bucket: str
    key: str
    result: ResultLine
    result_uri: str = Field(description="s3:// URI of the photo's result object")
    model_version: str | None = None
    uploaded_at: datetime | None = Field(
        default=None, description="S3's event time of the upload, when the work came from one"
    )
    received_at: datetime = Field(description="when a worker received the message")
    labelled_at: datetime = Field(description="when the result was written")


class JobFinished(_Base):
    """A job reached a final state; ``errors`` counts failed images by error kind."""

    type: Literal["job.finished"] = "job.finished"
    job_id: str
    state: Literal["complete", "cancelled", "failed"]
    tasks_total: int = Field(ge=0)
    tasks_done: int = Field(ge=0)
    tasks_cancelled: int = Field(default=0, ge=0)
    images_ok: int = Field(ge=0)
    images_failed: int = Field(ge=0)
    errors: dict[str, int] = Field(default_factory=dict)
    results: str = Field(description="s3:// URI of the job's results prefix")
    manifest: str = Field(description="s3:// URI of the job's manifest")
    reason: str | None = Field(default=None, description="why, for failed and cancelled jobs")
    created_at: datetime
    finished_at: datetime


Event = Annotated[ImageLabelled | JobFinished, Field(discriminator="type")]
_EVENT: TypeAdapter[ImageLabelled | JobFinished] = TypeAdapter(Event)


def parse_event(body: str | bytes) -> ImageLabelled | JobFinished:
    """One event from its JSON body; raises ``pydantic.ValidationError`` for anything else."""
    return _EVENT.validate_json(body)


class EventChannel:
    """Publishes events to the SNS topic ``topic_arn`` with the caller's SNS client."""

    def __init__(self, *, sns: Any, topic_arn: str) -> None:
        if not topic_arn:
            raise ValueError("topic_arn must name the events topic")
        self.sns = sns
        self.topic_arn = topic_arn

    def publish(self, event: ImageLabelled | JobFinished) -> None:
        self.sns.publish(
            TopicArn=self.topic_arn,
            Message=event.to_json(),
            MessageAttributes={TYPE_ATTRIBUTE: {"DataType": "String", "StringValue": event.type}},
        )
