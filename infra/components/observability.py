"""Dashboard, alarms and the SNS topic they notify. The dashboard's widgets are defined once in
posefleet.dashboard (the local fleet renders the same ones); every posefleet metric named here
comes from posefleet.metric_names, the module the worker emits from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from posefleet import metric_names as m
from posefleet.dashboard import (
    DIM_QUEUE_NAME,
    PERIOD_SECONDS,
    QUEUE_OLDEST_AGE,
    QUEUE_VISIBLE,
    SQS_NAMESPACE,
    Widget,
    widgets,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservabilityArgs:
    queue_name: pulumi.Input[str]
    dlq_name: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    metrics_service: str
    gpu: bool
    oldest_message_alarm_seconds: int
    failure_rate_alarm_percent: float
    no_progress_minutes: int
    alarm_email: str | None = None


def _metrics_json(widget: Widget, period: int) -> list[list[Any]]:
    """The widget's lines as CloudWatch's ``metrics`` array: a plain metric row, a SEARCH for
    one line per value of ``split_by``, or a hidden metric and its per-second expression."""
    rows: list[list[Any]] = []
    for i, metric in enumerate(widget.metrics):
        dims = [part for pair in metric.dimensions for part in pair]
        props: dict[str, Any] = {"stat": metric.stat, "label": metric.label}
        if widget.split_by:
            keys = ",".join([metric.namespace, *(k for k, _ in metric.dimensions), widget.split_by])
            filters = "".join(f' {k}="{v}"' for k, v in metric.dimensions)
            search = f"SEARCH('{{{keys}}} MetricName=\"{metric.name}\"{filters}'"
            rows.append([{"expression": f"{search}, '{metric.stat}', {period})", "id": f"s{i}"}])
        elif widget.per_second:
            rows.append(
                [{"expression": f"m{i} / PERIOD(m{i})", "label": metric.label, "id": f"rate{i}"}]
            )
            rows.append(
                [
                    metric.namespace,
                    metric.name,
                    *dims,
                    {"id": f"m{i}", "stat": metric.stat, "visible": False},
                ]
            )
        else:
            rows.append([metric.namespace, metric.name, *dims, props])
    return rows


def dashboard_body(
    *,
    region: str,
    queue: str,
    dlq: str,
    cluster: str,
    service: str,
    metrics_service: str,
    gpu: bool,
    period: int = PERIOD_SECONDS,
) -> dict:
    """The CloudWatch dashboard JSON of :func:`posefleet.dashboard.widgets`."""
    defined = widgets(
        queue=queue,
        dlq=dlq,
        cluster=cluster,
        service=service,
        metrics_service=metrics_service,
        gpu=gpu,
    )
    return {
        "widgets": [
            {
                "type": "metric",
                "x": w.x,
                "y": w.y,
                "width": w.width,
                "height": w.height,
                "properties": {
                    "title": w.title,
                    "metrics": _metrics_json(w, period),
                    "stat": w.metrics[0].stat,
                    "period": period,
                    "view": "timeSeries",
                    "region": region,
                    "yAxis": {"left": {"label": w.unit, "showUnits": False}},
                },
            }
            for w in defined
        ]
    }


def _query(qid: str, namespace: str, metric: str, dimensions: Any, stat: str) -> dict:
    """One metric of an alarm's metric math, at one-minute periods."""
    return {
        "id": qid,
        "metric": {
            "namespace": namespace,
            "metric_name": metric,
            "dimensions": dimensions,
            "period": 60,
            "stat": stat,
        },
        "return_data": False,
    }


class Observability(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("posefleet:observability:Observability", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(f"{name}-alarms", opts=child)
        if args.alarm_email:
            aws.sns.TopicSubscription(
                f"{name}-alarm-email",
                topic=self.topic.arn,
                protocol="email",
                endpoint=args.alarm_email,
                opts=child,
            )
        region = aws.get_region_output().region
        body = pulumi.Output.all(
            region, args.queue_name, args.dlq_name, args.cluster_name, args.service_name
        ).apply(
            lambda v: json.dumps(
                dashboard_body(
                    region=v[0],
                    queue=v[1],
                    dlq=v[2],
                    cluster=v[3],
                    service=v[4],
                    metrics_service=args.metrics_service,
                    gpu=args.gpu,
                )
            )
        )
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard", dashboard_name=name, dashboard_body=body, opts=child
        )
        actions = [self.topic.arn]
        alarm = {"alarm_actions": actions, "ok_actions": actions, "opts": child}
        svc = {"Service": args.metrics_service}
        self.alarms = [
            aws.cloudwatch.MetricAlarm(
                f"{name}-dead-letters",
                alarm_description="Tasks are in the dead-letter queue: see docs/operations.md.",
                namespace=SQS_NAMESPACE,
                metric_name=QUEUE_VISIBLE,
                dimensions={DIM_QUEUE_NAME: args.dlq_name},
                statistic="Maximum",
                period=60,
                evaluation_periods=1,
                comparison_operator="GreaterThanThreshold",
                threshold=0,
                treat_missing_data="notBreaching",
                **alarm,
            ),
            aws.cloudwatch.MetricAlarm(
                f"{name}-oldest-message",
                alarm_description="A task waited past the threshold: the fleet is behind or stuck.",
                namespace=SQS_NAMESPACE,
                metric_name=QUEUE_OLDEST_AGE,
                dimensions={DIM_QUEUE_NAME: args.queue_name},
                statistic="Maximum",
                period=60,
                evaluation_periods=5,
                comparison_operator="GreaterThanThreshold",
                threshold=args.oldest_message_alarm_seconds,
                treat_missing_data="notBreaching",
                **alarm,
            ),
            aws.cloudwatch.MetricAlarm(
                f"{name}-failure-rate",
                alarm_description="Too many images fail: see 'Failures by kind' on the dashboard.",
                comparison_operator="GreaterThanThreshold",
                threshold=args.failure_rate_alarm_percent,
                evaluation_periods=5,
                treat_missing_data="notBreaching",
                metric_queries=[
                    _query("failed", m.NAMESPACE, m.IMAGES_FAILED, svc, "Sum"),
                    _query("processed", m.NAMESPACE, m.IMAGES_PROCESSED, svc, "Sum"),
                    {
                        "id": "rate",
                        "expression": "100 * FILL(failed, 0) / IF(processed > 0, processed, 1)",
                        "label": "Failure rate (%)",
                        "return_data": True,
                    },
                ],
                **alarm,
            ),
            aws.cloudwatch.MetricAlarm(
                f"{name}-no-progress",
                alarm_description="Work is queued, no image processed: workers down or stuck.",
                comparison_operator="GreaterThanOrEqualToThreshold",
                threshold=1,
                evaluation_periods=args.no_progress_minutes,
                treat_missing_data="notBreaching",
                metric_queries=[
                    _query(
                        "visible",
                        SQS_NAMESPACE,
                        QUEUE_VISIBLE,
                        {DIM_QUEUE_NAME: args.queue_name},
                        "Maximum",
                    ),
                    _query("processed", m.NAMESPACE, m.IMAGES_PROCESSED, svc, "Sum"),
                    {
                        "id": "stuck",
                        "expression": "IF(visible > 0 AND FILL(processed, 0) == 0, 1, 0)",
                        "label": "Queued, no progress",
                        "return_data": True,
                    },
                ],
                **alarm,
            ),
        ]
        self.register_outputs(
            {"dashboard": self.dashboard.dashboard_name, "alarm_topic": self.topic.arn}
        )
