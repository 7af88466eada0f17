"""Backlog-based autoscaling, down to zero tasks and back up when work arrives.

* Target tracking on backlog per task: visible messages / running tasks (metric math), with the
  target ``acceptableLatencySeconds / secondsPerTask``: the tasks one worker can clear in the
  latency the users accept.
* From zero: target tracking has no running tasks to divide by, so an alarm on "messages
  visible and no task running" adds one task.
* To zero: when the queue has been empty (visible and in flight) for the idle period, an alarm
  sets the service to zero tasks (only when minTasks is 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from posefleet.dashboard import (
    DIM_QUEUE_NAME,
    QUEUE_IN_FLIGHT,
    QUEUE_VISIBLE,
    SQS_NAMESPACE,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoscalingArgs:
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    queue_name: pulumi.Input[str]
    min_tasks: int
    max_tasks: int
    backlog_target: float
    idle_minutes: int = 15


def _sqs(metric: str, queue_name: pulumi.Input[str]) -> dict:
    """For alarms: dimensions as a map."""
    return {
        "namespace": SQS_NAMESPACE,
        "metric_name": metric,
        "dimensions": {DIM_QUEUE_NAME: queue_name},
    }


def _running(cluster: pulumi.Input[str], service: pulumi.Input[str]) -> dict:
    return {
        "namespace": "ECS/ContainerInsights",
        "metric_name": "RunningTaskCount",
        "dimensions": {"ClusterName": cluster, "ServiceName": service},
    }


def _stat_metric(alarm_metric: dict) -> dict:
    """For target tracking: the same metric, dimensions as a list of name/value pairs."""
    dims = [{"name": k, "value": v} for k, v in alarm_metric["dimensions"].items()]
    return {**alarm_metric, "dimensions": dims}


class Autoscaling(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: AutoscalingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("posefleet:autoscaling:Autoscaling", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        resource_id = pulumi.Output.concat("service/", args.cluster_name, "/", args.service_name)
        self.target = aws.appautoscaling.Target(
            f"{name}-target",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=resource_id,
            min_capacity=args.min_tasks,
            max_capacity=args.max_tasks,
            opts=child,
        )
        scaling = {
            "resource_id": self.target.resource_id,
            "scalable_dimension": self.target.scalable_dimension,
            "service_namespace": self.target.service_namespace,
        }
        visible = _sqs(QUEUE_VISIBLE, args.queue_name)
        self.backlog = aws.appautoscaling.Policy(
            f"{name}-backlog-per-task",
            policy_type="TargetTrackingScaling",
            target_tracking_scaling_policy_configuration={
                "target_value": args.backlog_target,
                "scale_out_cooldown": 60,
                "scale_in_cooldown": 300,
                "customized_metric_specification": {
                    "metrics": [
                        {
                            "id": "visible",
                            "metric_stat": {"metric": _stat_metric(visible), "stat": "Sum"},
                            "return_data": False,
                        },
                        {
                            "id": "running",
                            "metric_stat": {
                                "metric": _stat_metric(
                                    _running(args.cluster_name, args.service_name)
                                ),
                                "stat": "Average",
                            },
                            "return_data": False,
                        },
                        {
                            "id": "backlog",
                            "expression": "visible / IF(running > 0, running, 1)",
                            "label": "Backlog per task",
                            "return_data": True,
                        },
                    ]
                },
            },
            **scaling,
            opts=child,
        )
        self.from_zero_policy = aws.appautoscaling.Policy(
            f"{name}-from-zero",
            policy_type="StepScaling",
            step_scaling_policy_configuration={
                "adjustment_type": "ChangeInCapacity",
                "cooldown": 60,
                "metric_aggregation_type": "Maximum",
                "step_adjustments": [{"metric_interval_lower_bound": "0", "scaling_adjustment": 1}],
            },
            **scaling,
            opts=child,
        )
        self.from_zero_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-work-waiting-no-workers",
            alarm_description="Messages are visible and no worker runs: start one.",
            comparison_operator="GreaterThanOrEqualToThreshold",
            threshold=1,
            evaluation_periods=1,
            treat_missing_data="notBreaching",
            metric_queries=[
                {
                    "id": "visible",
                    "metric": {**visible, "period": 60, "stat": "Maximum"},
                    "return_data": False,
                },
                {
                    "id": "running",
                    "metric": {
                        **_running(args.cluster_name, args.service_name),
                        "period": 60,
                        "stat": "Maximum",
                    },
                    "return_data": False,
                },
                {
                    "id": "start",
                    "expression": "IF(visible > 0 AND FILL(running, 0) == 0, 1, 0)",
                    "label": "Work waiting, no workers",
                    "return_data": True,
                },
            ],
            alarm_actions=[self.from_zero_policy.arn],
            opts=child,
        )
        self.to_zero_alarm: aws.cloudwatch.MetricAlarm | None = None
        if args.min_tasks == 0:
            to_zero = aws.appautoscaling.Policy(
                f"{name}-to-zero",
                policy_type="StepScaling",
                step_scaling_policy_configuration={
                    "adjustment_type": "ExactCapacity",
                    "cooldown": 300,
                    "metric_aggregation_type": "Maximum",
                    "step_adjustments": [
                        {"metric_interval_upper_bound": "0", "scaling_adjustment": 0}
                    ],
                },
                **scaling,
                opts=child,
            )
            self.to_zero_alarm = aws.cloudwatch.MetricAlarm(
                f"{name}-queue-idle",
                alarm_description="Nothing queued or in flight for the idle period: scale to zero.",
                comparison_operator="LessThanOrEqualToThreshold",
                threshold=0,
                evaluation_periods=args.idle_minutes,
                treat_missing_data="breaching",
                metric_queries=[
                    {
                        "id": "visible",
                        "metric": {**visible, "period": 60, "stat": "Maximum"},
                        "return_data": False,
                    },
                    {
                        "id": "inflight",
                        "metric": {
                            **_sqs(QUEUE_IN_FLIGHT, args.queue_name),
                            "period": 60,
                            "stat": "Maximum",
                        },
                        "return_data": False,
                    },
                    {
                        "id": "queued",
                        "expression": "visible + inflight",
                        "label": "Queued",
                        "return_data": True,
                    },
                ],
                alarm_actions=[to_zero.arn],
                opts=child,
            )
        self.register_outputs({})
