"""Metric names: every CloudWatch metric the worker emits, named once.

The worker's EMF emitter and infra's dashboard and alarms both import from here.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALL_METRICS",
    "BATCH_SIZE",
    "DIM_SERVICE",
    "END_TO_END_LATENCY",
    "GPU_UTILIZATION",
    "IMAGES_FAILED",
    "IMAGES_PROCESSED",
    "MESSAGES_INVALID",
    "MODEL_LOAD_TIME",
    "NAMESPACE",
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

IMAGES_PROCESSED: Final = "ImagesProcessed"  # Count, ok and error alike
IMAGES_FAILED: Final = "ImagesFailed"  # Count, by ErrorKind and in total (Service only)
TASKS_COMPLETED: Final = "TasksCompleted"  # Count
TASKS_ABANDONED: Final = "TasksAbandoned"  # Count: left for redelivery
MESSAGES_INVALID: Final = "MessagesInvalid"  # Count: headed for the dead-letter queue
BATCH_SIZE: Final = "BatchSize"  # Count per batch
STAGE_TIME: Final = "StageTime"  # Milliseconds, by Stage
END_TO_END_LATENCY: Final = "EndToEndLatency"  # Milliseconds, enqueue -> result written
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
        MODEL_LOAD_TIME,
        GPU_UTILIZATION,
    }
)
