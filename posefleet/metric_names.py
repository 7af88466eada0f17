"""Metric names: every CloudWatch metric the worker emits, named once.

The worker's EMF emitter and infra's dashboard and alarms both import from here.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALL_METRICS",
    "BATCH_SIZE",
    "DIM_LANE",
    "DIM_SERVICE",
    "END_TO_END_LATENCY",
    "EVENTS_PUBLISHED",
    "GPU_UTILIZATION",
    "IMAGES_FAILED",
    "IMAGES_PROCESSED",
    "MESSAGES_INVALID",
    "MODEL_LOAD_TIME",
    "NAMESPACE",
    "QUEUE_TIME",
    "SERVICE",
    "STAGE_TIME",
    "TASKS_ABANDONED",
    "TASKS_COMPLETED",
]

NAMESPACE: Final = "posefleet"
DIM_SERVICE: Final = "Service"  # every metric carries it
SERVICE: Final = "posefleet-worker"  # its default value (POSEFLEET_SERVICE)
DIM_ERROR_KIND: Final = "ErrorKind"  # on IMAGES_FAILED
DIM_STAGE: Final = "Stage"  # on STAGE_TIME: fetch, decode, infer, write
DIM_LANE: Final = "Lane"  # on QUEUE_TIME and END_TO_END_LATENCY: backfill or live

IMAGES_PROCESSED: Final = "ImagesProcessed"  # Count, ok and error alike
IMAGES_FAILED: Final = "ImagesFailed"  # Count, by ErrorKind and in total (Service only)
TASKS_COMPLETED: Final = "TasksCompleted"  # Count
TASKS_ABANDONED: Final = "TasksAbandoned"  # Count: left for redelivery
MESSAGES_INVALID: Final = "MessagesInvalid"  # Count: headed for the dead-letter queue
BATCH_SIZE: Final = "BatchSize"  # Count per batch
STAGE_TIME: Final = "StageTime"  # Milliseconds, by Stage
# Milliseconds, enqueue -> result written, by Lane; for an upload, enqueue is the upload itself
# (S3's event time), so on the live lane this is upload -> label.
END_TO_END_LATENCY: Final = "EndToEndLatency"
QUEUE_TIME: Final = "QueueTime"  # Milliseconds, enqueue -> received by a worker, by Lane
EVENTS_PUBLISHED: Final = "EventsPublished"  # Count, "image labelled" events sent
MODEL_LOAD_TIME: Final = "ModelLoadTime"  # Milliseconds
GPU_UTILIZATION: Final = "GpuUtilization"  # Percent, GPU workers only

STAGES: Final = ("fetch", "decode", "infer", "write")

ALL_METRICS: Final = frozenset(
    {
        IMAGES_PROCESSED,
        IMAGES_FAILED,
        TASKS_COMPLETED,
        TASKS_ABANDONED,
        MESSAGES_INVALID,
        BATCH_SIZE,
        STAGE_TIME,
        END_TO_END_LATENCY,
        QUEUE_TIME,
        EVENTS_PUBLISHED,
        MODEL_LOAD_TIME,
        GPU_UTILIZATION,
    }
)
