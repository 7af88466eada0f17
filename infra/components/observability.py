"""Dashboard, alarms and the SNS topic they notify. Every posefleet metric named here comes
from posefleet.metric_names, the module the worker emits from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from posefleet import metric_names as m


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


def _widget(
    title: str, metrics: list[Any], *, x: int, y: int, stat: str = "Sum", **props: Any
) -> dict:
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": 12,
        "height": 6,
        "properties": {
            "title": title,
            "metrics": metrics,
            "stat": stat,
            "period": 60,
            "view": "timeSeries",
            "region": props.pop("region"),
            **props,
        },
    }


def dashboard_body(
    *,
    region: str,
    queue: str,
    dlq: str,
    cluster: str,
    service: str,
    metrics_service: str,
    gpu: bool,
) -> dict:
    ns, svc = m.NAMESPACE, ["Service", metrics_service]
    sqs = "AWS/SQS"
    widgets = [
        (
            "Queue: visible and in flight",
            [
                [sqs, "ApproximateNumberOfMessagesVisible", "QueueName", queue],
                [sqs, "ApproximateNumberOfMessagesNotVisible", "QueueName", queue],
            ],
            "Maximum",
        ),
        (
            "Age of oldest message (s)",
            [[sqs, "ApproximateAgeOfOldestMessage", "QueueName", queue]],
            "Maximum",
        ),
        (
            "Dead-letter queue depth",
            [[sqs, "ApproximateNumberOfMessagesVisible", "QueueName", dlq]],
            "Maximum",
        ),
        (
            "Images per second",
            [
                [
                    {
                        "expression": "processed / PERIOD(processed)",
                        "label": "images/s",
                        "id": "rate",
                    }
                ],
                [ns, m.IMAGES_PROCESSED, *svc, {"id": "processed", "visible": False}],
            ],
            "Sum",
        ),
        (
            "Failures by kind",
            [
                [
                    {
                        "expression": f"SEARCH('{{{ns},Service,ErrorKind}} "
                        f'MetricName="{m.IMAGES_FAILED}"\','
                        " 'Sum', 60)",
                        "id": "failures",
                    }
                ]
            ],
            "Sum",
        ),
        (
            "Latency, enqueue to result (ms)",
            [
                [ns, m.END_TO_END_LATENCY, *svc, {"stat": "p50", "label": "p50"}],
                [ns, m.END_TO_END_LATENCY, *svc, {"stat": "p99", "label": "p99"}],
            ],
            "p50",
        ),
        (
            "Time per stage, p50 (ms)",
            [[ns, m.STAGE_TIME, *svc, "Stage", stage] for stage in m.STAGES],
            "p50",
        ),
        ("Batch size", [[ns, m.BATCH_SIZE, *svc]], "Average"),
        (
            "Running tasks",
            [
                [
                    "ECS/ContainerInsights",
                    "RunningTaskCount",
                    "ClusterName",
                    cluster,
                    "ServiceName",
                    service,
                ]
            ],
            "Average",
        ),
        (
            "CPU and memory (%)",
            [
                ["AWS/ECS", "CPUUtilization", "ClusterName", cluster, "ServiceName", service],
                ["AWS/ECS", "MemoryUtilization", "ClusterName", cluster, "ServiceName", service],
            ],
            "Average",
        ),
    ]
    if gpu:
        widgets.append(("GPU utilisation (%)", [[ns, m.GPU_UTILIZATION, *svc]], "Average"))
    return {
        "widgets": [
            _widget(title, metrics, x=(i % 2) * 12, y=(i // 2) * 6, stat=stat, region=region)
            for i, (title, metrics, stat) in enumerate(widgets)
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
                namespace="AWS/SQS",
                metric_name="ApproximateNumberOfMessagesVisible",
                dimensions={"QueueName": args.dlq_name},
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
                namespace="AWS/SQS",
                metric_name="ApproximateAgeOfOldestMessage",
                dimensions={"QueueName": args.queue_name},
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
                        "AWS/SQS",
                        "ApproximateNumberOfMessagesVisible",
                        {"QueueName": args.queue_name},
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
