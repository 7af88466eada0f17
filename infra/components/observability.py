"""Dashboard, alarms and the SNS topic they notify. The dashboard's widgets are defined once in
posefleet.dashboard (the local fleet renders the same ones), both lanes drawn; every posefleet
metric named here comes from posefleet.metric_names, the module the worker emits from.

Alarms: dead letters on either lane, the backfill queue's oldest message, the failure rate, work
queued with no progress, and live latency (p95 of ``EndToEndLatency`` with ``Lane=live``, upload
to label, above ``liveLatencyAlarmSeconds`` in 3 of 5 minutes: one cold start's slow minute does
not raise it, a fleet that cannot keep up does)."""

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
from posefleet.resources import Lane


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservabilityArgs:
    queue_name: pulumi.Input[str]  # the backfill lane's queues
    dlq_name: pulumi.Input[str]
    live_queue_name: pulumi.Input[str]
    live_dlq_name: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    metrics_service: str
    gpu: bool
    oldest_message_alarm_seconds: int
    failure_rate_alarm_percent: float
    no_progress_minutes: int
    live_latency_alarm_seconds: float = 30.0  # p95 upload -> label
    alarm_email: str | None = None
    topic_key_arn: pulumi.Input[str] | None = None  # customer KMS key (SNS.1); None: unencrypted


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
    live_queue: str | None = None,
    live_dlq: str | None = None,
    period: int = PERIOD_SECONDS,
) -> dict:
    """The CloudWatch dashboard JSON of :func:`posefleet.dashboard.widgets`."""
    defined = widgets(
        queue=queue,
        dlq=dlq,
        live_queue=live_queue,
        live_dlq=live_dlq,
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
        self.topic = aws.sns.Topic(
            f"{name}-alarms", kms_master_key_id=args.topic_key_arn, opts=child
        )
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
            region=region,
            queue=args.queue_name,
            dlq=args.dlq_name,
            live_queue=args.live_queue_name,
            live_dlq=args.live_dlq_name,
            cluster=args.cluster_name,
            service=args.service_name,
        ).apply(
            lambda v: json.dumps(
                dashboard_body(**v, metrics_service=args.metrics_service, gpu=args.gpu)
            )
        )
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard", dashboard_name=name, dashboard_body=body, opts=child
        )
        actions = [self.topic.arn]
        alarm = {"alarm_actions": actions, "ok_actions": actions, "opts": child}
        svc = {m.DIM_SERVICE: args.metrics_service}
        self.alarms = [
            *(
                aws.cloudwatch.MetricAlarm(
                    f"{name}-{lane}dead-letters",
                    alarm_description=f"Tasks are in the {lane}dead-letter queue: "
                    "see docs/operations.md.",
                    namespace=SQS_NAMESPACE,
                    metric_name=QUEUE_VISIBLE,
                    dimensions={DIM_QUEUE_NAME: dlq},
                    statistic="Maximum",
                    period=60,
                    evaluation_periods=1,
                    comparison_operator="GreaterThanThreshold",
                    threshold=0,
                    treat_missing_data="notBreaching",
                    **alarm,
                )
                for lane, dlq in (("", args.dlq_name), ("live-", args.live_dlq_name))
            ),
            aws.cloudwatch.MetricAlarm(
                f"{name}-live-latency",
                alarm_description=(
                    f"Live photos take more than {args.live_latency_alarm_seconds:g} s from upload "
                    "to label (p95, 3 of 5 minutes): workers too few, cold, or behind. See the "
                    "live lane on the dashboard and docs/operations.md."
                ),
                namespace=m.NAMESPACE,
                metric_name=m.END_TO_END_LATENCY,
                dimensions={**svc, m.DIM_LANE: str(Lane.LIVE)},
                extended_statistic="p95",
                period=60,
                evaluation_periods=5,
                datapoints_to_alarm=3,
                comparison_operator="GreaterThanThreshold",
                threshold=args.live_latency_alarm_seconds * 1000,  # the metric is in ms
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
                alarm_description="Work is queued on either lane, no image processed: workers "
                "down or stuck.",
                comparison_operator="GreaterThanOrEqualToThreshold",
                threshold=1,
                evaluation_periods=args.no_progress_minutes,
                treat_missing_data="notBreaching",
                metric_queries=[
                    *(
                        _query(
                            qid, SQS_NAMESPACE, QUEUE_VISIBLE, {DIM_QUEUE_NAME: queue}, "Maximum"
                        )
                        for qid, queue in (
                            ("visible", args.queue_name),
                            ("live_visible", args.live_queue_name),
                        )
                    ),
                    _query("processed", m.NAMESPACE, m.IMAGES_PROCESSED, svc, "Sum"),
                    {
                        "id": "stuck",
                        "expression": "IF(visible + live_visible > 0 AND FILL(processed, 0) == 0,"
                        " 1, 0)",
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
