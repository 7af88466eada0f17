"""The fleet's dashboard, defined once: its widgets, their metrics, statistics and layout.

infra/ turns :func:`widgets` into the deployed CloudWatch dashboard's JSON; ``localfleet``
renders the same widgets from the workers' own EMF lines (and the local fleet's samples of its
queues), so what a user sees locally is what the deployed dashboard shows. Metric names come
from :mod:`posefleet.metric_names`; the queue metrics are SQS's own (namespace ``AWS/SQS``,
dimension ``QueueName``), which the local fleet samples under the same names.

This module imports nothing but :mod:`posefleet.metric_names` and the lanes of
:mod:`posefleet.resources`: no Pulumi, no boto3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from posefleet import metric_names as m
from posefleet.resources import Lane

__all__ = [
    "DIM_QUEUE_NAME",
    "PERIOD_SECONDS",
    "QUEUE_DELETED",
    "QUEUE_IN_FLIGHT",
    "QUEUE_OLDEST_AGE",
    "QUEUE_VISIBLE",
    "SQS_NAMESPACE",
    "Metric",
    "Widget",
    "widgets",
]

SQS_NAMESPACE = "AWS/SQS"
DIM_QUEUE_NAME = "QueueName"
QUEUE_VISIBLE = "ApproximateNumberOfMessagesVisible"
QUEUE_IN_FLIGHT = "ApproximateNumberOfMessagesNotVisible"
QUEUE_OLDEST_AGE = "ApproximateAgeOfOldestMessage"
QUEUE_DELETED = "NumberOfMessagesDeleted"  # messages done with: infra's autoscaling

PERIOD_SECONDS = 60  # the deployed dashboard's period
GRID_COLUMNS = 24  # CloudWatch's dashboard grid
_STATS = frozenset({"Sum", "Average", "Maximum", "Minimum", "SampleCount"})
_PERCENTILE = re.compile(r"p(\d{1,2}(\.\d+)?)")

ECS_ONLY = "ECS reports this on AWS; the local fleet runs processes, not ECS tasks."
OLDEST_AGE_NOTE = (
    "SQS computes it for CloudWatch only; no SQS call returns it. Locally, see the time in "
    "queue by lane."
)


def check_stat(stat: str) -> str:
    """A statistic CloudWatch and the local renderer both compute: Sum, Average, Maximum,
    Minimum, SampleCount or a percentile pNN."""
    if stat not in _STATS and not _PERCENTILE.fullmatch(stat):
        raise ValueError(
            f"statistic {stat!r} is not one of {sorted(_STATS)} or a percentile such as 'p90'"
        )
    return stat


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """One line on a widget: a metric identified as CloudWatch identifies it (namespace, name
    and the exact set of dimensions), the statistic drawn and its legend label."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]
    stat: str
    label: str

    def __post_init__(self) -> None:
        check_stat(self.stat)


@dataclass(frozen=True, slots=True, kw_only=True)
class Widget:
    """A time-series widget at (x, y) on CloudWatch's 24-column grid.

    ``per_second``: each metric is drawn as its Sum per period divided by the period's seconds
    (CloudWatch: metric math ``m / PERIOD(m)``). ``split_by``: each metric is drawn once per
    value of that extra dimension, as CloudWatch's ``SEARCH`` does. ``local_note``: why the local
    fleet has no data for it (the deployed fleet does).
    """

    title: str
    metrics: tuple[Metric, ...]
    unit: str
    x: int
    y: int
    width: int = 12
    height: int = 6
    per_second: bool = False
    split_by: str | None = None
    local_note: str | None = None

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError(f"widget {self.title!r} needs at least one metric")
        if not (self.x >= 0 and self.width > 0 and self.x + self.width <= GRID_COLUMNS):
            raise ValueError(
                f"widget {self.title!r}: x={self.x}, width={self.width} leave the "
                f"{GRID_COLUMNS}-column grid"
            )
        if self.per_second and any(metric.stat != "Sum" for metric in self.metrics):
            raise ValueError(f"widget {self.title!r}: a per-second rate is drawn from Sum")


def _queue(name: str, queue: str, stat: str, label: str) -> Metric:
    return Metric(
        namespace=SQS_NAMESPACE,
        name=name,
        dimensions=((DIM_QUEUE_NAME, queue),),
        stat=stat,
        label=label,
    )


def _depth_and_age(queue: str, *, depth: str, age: str) -> list[dict]:
    """A lane's queue: its depth (visible, in flight) and the age of its oldest message."""
    return [
        dict(
            title=depth,
            unit="messages",
            metrics=(
                _queue(QUEUE_VISIBLE, queue, "Maximum", "visible"),
                _queue(QUEUE_IN_FLIGHT, queue, "Maximum", "in flight"),
            ),
        ),
        dict(
            title=age,
            unit="seconds",
            metrics=(_queue(QUEUE_OLDEST_AGE, queue, "Maximum", "oldest"),),
            local_note=OLDEST_AGE_NOTE,
        ),
    ]


def widgets(
    *,
    queue: str,
    dlq: str,
    cluster: str,
    service: str,
    metrics_service: str,
    gpu: bool,
    live_queue: str | None = None,
    live_dlq: str | None = None,
) -> tuple[Widget, ...]:
    """The dashboard: ``queue``/``dlq`` are the backfill lane's SQS queue names, ``cluster``/
    ``service`` the ECS names, ``metrics_service`` the workers' Service dimension
    (POSEFLEET_SERVICE), ``gpu`` whether the fleet has GPU workers. ``live_queue``/``live_dlq``:
    the live lane's queue names; with ``live_queue``, two widgets of its own (depth, age of its
    oldest message: what a waiting upload sees) follow the backfill queue's, and the
    dead-letter widget draws ``live_dlq`` beside ``dlq``. Time in queue and latency are drawn
    per lane either way (the workers' ``Lane`` dimension). Two widgets a row, in this order."""
    if live_dlq is not None and live_queue is None:
        raise ValueError("live_dlq needs live_queue: the live lane's widgets are drawn with both")
    svc = ((m.DIM_SERVICE, metrics_service),)

    def worker(name: str, stat: str, label: str, *dims: tuple[str, str]) -> Metric:
        return Metric(
            namespace=m.NAMESPACE, name=name, dimensions=svc + dims, stat=stat, label=label
        )

    def by_lane(title: str, name: str) -> dict:
        """A time the workers measure per lane (milliseconds), p50 and p99 of each lane."""
        metrics = tuple(
            worker(name, p, f"{lane} {p}", (m.DIM_LANE, lane))
            for lane in Lane
            for p in ("p50", "p99")
        )
        return dict(title=title, unit="ms", metrics=metrics)

    ecs = (("ClusterName", cluster), ("ServiceName", service))
    rows = _depth_and_age(
        queue, depth="Queue: visible and in flight", age="Age of oldest message (s)"
    )
    if live_queue:
        rows += _depth_and_age(
            live_queue,
            depth="Live queue: visible and in flight",
            age="Live queue: age of oldest message (s)",
        )
    dead_letters = [_queue(QUEUE_VISIBLE, dlq, "Maximum", "dead letters")]
    if live_dlq:
        dead_letters.append(_queue(QUEUE_VISIBLE, live_dlq, "Maximum", "live dead letters"))
    rows += [
        dict(title="Dead-letter queue depth", unit="messages", metrics=tuple(dead_letters)),
        dict(
            title="Images per second",
            unit="images/s",
            metrics=(worker(m.IMAGES_PROCESSED, "Sum", "images/s"),),
            per_second=True,
        ),
        dict(
            title="Failures by kind",
            unit="images",
            metrics=(worker(m.IMAGES_FAILED, "Sum", "failed"),),
            split_by=m.DIM_ERROR_KIND,
        ),
        by_lane("Latency, enqueue (live: upload) to result (ms)", m.END_TO_END_LATENCY),
        by_lane("Time in queue by lane (ms)", m.QUEUE_TIME),
        dict(
            title="Time per stage, p50 (ms)",
            unit="ms",
            metrics=tuple(
                worker(m.STAGE_TIME, "p50", stage, (m.DIM_STAGE, stage)) for stage in m.STAGES
            ),
        ),
        dict(
            title="Batch size",
            unit="images",
            metrics=(worker(m.BATCH_SIZE, "Average", "average"),),
        ),
        dict(
            title="Running tasks",
            unit="tasks",
            metrics=(
                Metric(
                    namespace="ECS/ContainerInsights",
                    name="RunningTaskCount",
                    dimensions=ecs,
                    stat="Average",
                    label="running",
                ),
            ),
            local_note=ECS_ONLY,
        ),
        dict(
            title="CPU and memory (%)",
            unit="%",
            metrics=(
                Metric(
                    namespace="AWS/ECS",
                    name="CPUUtilization",
                    dimensions=ecs,
                    stat="Average",
                    label="CPU",
                ),
                Metric(
                    namespace="AWS/ECS",
                    name="MemoryUtilization",
                    dimensions=ecs,
                    stat="Average",
                    label="memory",
                ),
            ),
            local_note=ECS_ONLY,
        ),
    ]
    if gpu:
        rows.append(
            dict(
                title="GPU utilisation (%)",
                unit="%",
                metrics=(worker(m.GPU_UTILIZATION, "Average", "GPU"),),
            )
        )
    return tuple(Widget(x=(i % 2) * 12, y=(i // 2) * 6, **row) for i, row in enumerate(rows))
