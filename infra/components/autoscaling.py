"""Autoscaling on both lanes' work, down to zero tasks and back up when work arrives.

* **Target tracking** holds the backlog per running task at ``backlog_target``
  (``acceptableLatencySeconds / secondsPerTask``: the tasks one worker clears in the latency
  the users accept). The backlog counts both lanes (metric math): the backfill tasks visible,
  plus every live photo labelled in the last minute or waiting, each weighing
  ``live_photo_tasks`` (``StackConfig.live_photo_tasks``: a worker kept half busy by live photos
  counts as a full backlog). Live photos are labelled as they land, so the live queue is nearly
  always empty when SQS samples it: a backlog of waiting messages alone would let target
  tracking scale in the workers that steady live traffic keeps busy. So the fleet scales in only
  when both lanes' work drops.
* **Live work waits**: while live messages are visible and the oldest has waited
  ``live_wait_seconds`` (SQS's age of the oldest message, which also counts a message a worker
  holds: hence "visible" too, since a held message needs no more workers), an alarm adds one
  task a minute until the waiting stops. It answers a waiting upload at once; target tracking
  follows with the capacity the traffic needs.
* **From zero**: target tracking has no running tasks to divide by, so an alarm on "messages
  visible on either lane and no task running" adds one task.
* **To zero**: when both lanes have been empty (visible and in flight) for the idle period, an
  alarm sets the service to zero tasks (only when the floor, minTasks or liveMinWorkers, is 0).

SQS sends its queue metrics once a minute, so each reaction takes a minute or two before ECS
starts a task (then a cold start: docs/deploy.md, "The live lane").
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from posefleet.dashboard import (
    DIM_QUEUE_NAME,
    QUEUE_DELETED,
    QUEUE_IN_FLIGHT,
    QUEUE_OLDEST_AGE,
    QUEUE_VISIBLE,
    SQS_NAMESPACE,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoscalingArgs:
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    queue_name: pulumi.Input[str]  # the backfill lane's queue
    live_queue_name: pulumi.Input[str]
    min_tasks: int  # the floor: minTasks, or liveMinWorkers if more
    max_tasks: int
    backlog_target: float
    live_photo_tasks: float
    live_wait_seconds: int = 10
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


def _tracked(qid: str, metric: dict, stat: str) -> dict:
    """One metric of target tracking's metric math."""
    return {
        "id": qid,
        "metric_stat": {"metric": _stat_metric(metric), "stat": stat},
        "return_data": False,
    }


def _queried(qid: str, metric: dict, stat: str = "Maximum") -> dict:
    """One metric of an alarm's metric math, at one-minute periods."""
    return {"id": qid, "metric": {**metric, "period": 60, "stat": stat}, "return_data": False}


def _expression(qid: str, expression: str, label: str) -> dict:
    return {"id": qid, "expression": expression, "label": label, "return_data": True}


def backlog_expression(live_photo_tasks: float) -> str:
    """Target tracking's backlog per running task, both lanes counted (see the module doc)."""
    weight = f"{live_photo_tasks:.6g}"
    # Metric math treats a missing value as 0 in arithmetic: an idle lane's queue (inactive: SQS
    # sends it no metrics) adds nothing. FILL is left out on purpose: it would turn a minute SQS
    # has not sent yet into a 0.
    return f"(visible + {weight} * (live_done + live_waiting)) / IF(running > 0, running, 1)"


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
        live_visible = _sqs(QUEUE_VISIBLE, args.live_queue_name)
        running = _running(args.cluster_name, args.service_name)
        self.backlog = aws.appautoscaling.Policy(
            f"{name}-backlog-per-task",
            policy_type="TargetTrackingScaling",
            target_tracking_scaling_policy_configuration={
                "target_value": args.backlog_target,
                "scale_out_cooldown": 60,
                "scale_in_cooldown": 300,
                "customized_metric_specification": {
                    "metrics": [
                        _tracked("visible", visible, "Sum"),
                        _tracked("live_done", _sqs(QUEUE_DELETED, args.live_queue_name), "Sum"),
                        _tracked("live_waiting", live_visible, "Sum"),
                        _tracked("running", running, "Average"),
                        _expression(
                            "backlog",
                            backlog_expression(args.live_photo_tasks),
                            "Backlog per task, both lanes",
                        ),
                    ]
                },
            },
            **scaling,
            opts=child,
        )
        self.from_zero_alarm = self._add_one(
            f"{name}-from-zero",
            f"{name}-work-waiting-no-workers",
            "Messages are visible on either lane and no worker runs: start one.",
            [
                _queried("visible", visible),
                _queried("live_visible", live_visible),
                _queried("running", running),
                _expression(
                    "start",
                    "IF(visible + live_visible > 0 AND FILL(running, 0) == 0, 1, 0)",
                    "Work waiting, no workers",
                ),
            ],
            scaling,
        )
        self.live_waiting_alarm = self._add_one(
            f"{name}-live-scale-out",
            f"{name}-live-work-waiting",
            f"A live photo has waited {args.live_wait_seconds} s and more without a worker "
            "taking it: add a worker (each minute until none waits).",
            [
                _queried("live_visible", live_visible),
                _queried("live_age", _sqs(QUEUE_OLDEST_AGE, args.live_queue_name)),
                _expression(
                    "waiting",
                    f"IF(live_visible > 0 AND live_age >= {args.live_wait_seconds}, 1, 0)",
                    "Live work waiting",
                ),
            ],
            scaling,
        )
        self.to_zero_alarm: aws.cloudwatch.MetricAlarm | None = None
        if args.min_tasks == 0:
            self.to_zero_alarm = self._to_zero(name, args, scaling)
        self.register_outputs({})

    def _add_one(
        self, policy_name: str, name: str, description: str, queries: list[dict], scaling: dict
    ) -> aws.cloudwatch.MetricAlarm:
        """An alarm whose step policy adds one task each minute it stays in alarm (CloudWatch
        invokes an Auto Scaling action every minute, not only on the change of state)."""
        child = pulumi.ResourceOptions(parent=self)
        policy = self._step(
            policy_name,
            scaling,
            adjustment="ChangeInCapacity",
            cooldown=60,
            step={"metric_interval_lower_bound": "0", "scaling_adjustment": 1},
        )
        return aws.cloudwatch.MetricAlarm(
            name,
            alarm_description=description,
            comparison_operator="GreaterThanOrEqualToThreshold",
            threshold=1,
            evaluation_periods=1,
            treat_missing_data="notBreaching",
            metric_queries=queries,
            alarm_actions=[policy.arn],
            opts=child,
        )

    def _step(
        self, name: str, scaling: dict, *, adjustment: str, cooldown: int, step: dict
    ) -> aws.appautoscaling.Policy:
        """A step scaling policy of one step, for an alarm's action."""
        return aws.appautoscaling.Policy(
            name,
            policy_type="StepScaling",
            step_scaling_policy_configuration={
                "adjustment_type": adjustment,
                "cooldown": cooldown,
                "metric_aggregation_type": "Maximum",
                "step_adjustments": [step],
            },
            **scaling,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _to_zero(
        self, name: str, args: AutoscalingArgs, scaling: dict
    ) -> aws.cloudwatch.MetricAlarm:
        child = pulumi.ResourceOptions(parent=self)
        to_zero = self._step(
            f"{name}-to-zero",
            scaling,
            adjustment="ExactCapacity",
            cooldown=300,
            step={"metric_interval_upper_bound": "0", "scaling_adjustment": 0},
        )
        lanes = {"": args.queue_name, "live_": args.live_queue_name}
        queries = [
            _queried(f"{prefix}{part}", _sqs(metric, queue))
            for prefix, queue in lanes.items()
            for part, metric in (("visible", QUEUE_VISIBLE), ("inflight", QUEUE_IN_FLIGHT))
        ]
        return aws.cloudwatch.MetricAlarm(
            f"{name}-queue-idle",
            alarm_description="Nothing queued or in flight on either lane for the idle period: "
            "scale to zero.",
            comparison_operator="LessThanOrEqualToThreshold",
            threshold=0,
            evaluation_periods=args.idle_minutes,
            treat_missing_data="breaching",
            metric_queries=[
                *queries,
                _expression(
                    "queued",
                    "visible + inflight + live_visible + live_inflight",
                    "Queued, both lanes",
                ),
            ],
            alarm_actions=[to_zero.arn],
            opts=child,
        )
