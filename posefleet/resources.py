"""Queue and bucket settings that infra/ provisions and local mode recreates on moto.

One definition, so the embedded default behaves like the deployed fleet: the same redrive
count, visibility timeout, long polling and retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DEFAULT_DLQ_NAME",
    "DEFAULT_EVENTS_QUEUE_NAME",
    "DEFAULT_EVENTS_TOPIC_NAME",
    "DEFAULT_INPUT_BUCKET",
    "DEFAULT_JOBS_TABLE",
    "DEFAULT_LIVE_DLQ_NAME",
    "DEFAULT_LIVE_QUEUE_NAME",
    "DEFAULT_MODELS_BUCKET",
    "DEFAULT_QUEUE_NAME",
    "DEFAULT_RESULTS_BUCKET",
    "DISCOVERY_PARAMETER",
    "Lane",
    "QueueSpec",
]

DEFAULT_QUEUE_NAME = "posefleet-tasks"  # the backfill lane
DEFAULT_DLQ_NAME = "posefleet-tasks-dlq"
DEFAULT_LIVE_QUEUE_NAME = "posefleet-live"  # the live lane: uploads as they land, urgent jobs
DEFAULT_LIVE_DLQ_NAME = "posefleet-live-dlq"
# The events channel (posefleet.events): one SNS topic, and a queue subscribed to it that
# `python -m producer events --follow` (and any application) can read.
DEFAULT_EVENTS_TOPIC_NAME = "posefleet-events"
DEFAULT_EVENTS_QUEUE_NAME = "posefleet-events"
DEFAULT_RESULTS_BUCKET = "posefleet-results"
DEFAULT_MODELS_BUCKET = "posefleet-models"
DEFAULT_INPUT_BUCKET = "posefleet-input"
DEFAULT_JOBS_TABLE = "posefleet-jobs"  # the job records (posefleet/job_record.py)
# SSM parameter where a deployed stack publishes {"queue_url", "live_queue_url", "events_topic",
# "events_queue_url", "jobs_table", "results", "model"} (infra/program.py;
# producer/discovery.py reads it).
DISCOVERY_PARAMETER = "/posefleet/config"


class Lane(StrEnum):
    """Where work waits. Workers serve the live lane first: a live image waits at most about
    one batch of backfill work. Each lane is a queue with its own dead-letter queue, both made
    from the one :class:`QueueSpec`."""

    BACKFILL = "backfill"
    LIVE = "live"


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSpec:
    visibility_timeout: int = 300
    # The backstop for crash loops, not the poison detector: the worker dead-letters invalid
    # bodies itself, and an image that kills it ends as a `crashed_worker` line after
    # WorkerSettings.crash_attempts (3) crashes alone, i.e. by its message's 6th receive. 10
    # leaves room for that and for interruptions (Spot, OOM, deploys) on top
    # (docs/operations.md, "Crashes and poison").
    max_receive_count: int = 10
    receive_wait_seconds: int = 20
    retention_seconds: int = 4 * 24 * 3600
    dlq_retention_seconds: int = 14 * 24 * 3600

    def __post_init__(self) -> None:
        if self.max_receive_count < 1:
            raise ValueError("max_receive_count must be at least 1")
        if self.dlq_retention_seconds < self.retention_seconds:
            raise ValueError(
                "the dead-letter queue must keep messages at least as long as the queue"
            )

    def queue_attributes(self, dlq_arn: str) -> dict[str, str]:
        """SQS CreateQueue attributes for the tasks queue (as boto3 takes them)."""
        import json

        return {
            "VisibilityTimeout": str(self.visibility_timeout),
            "ReceiveMessageWaitTimeSeconds": str(self.receive_wait_seconds),
            "MessageRetentionPeriod": str(self.retention_seconds),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": self.max_receive_count}
            ),
        }

    def dlq_attributes(self) -> dict[str, str]:
        return {"MessageRetentionPeriod": str(self.dlq_retention_seconds)}
