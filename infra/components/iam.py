"""The worker's task role and execution role, from infra.policies."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import InputBucket
from infra.policies import assume_role, execution_policy, task_policy


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRolesArgs:
    queue_arn: pulumi.Input[str]
    dlq_arn: pulumi.Input[str]
    live_queue_arn: pulumi.Input[str]
    live_dlq_arn: pulumi.Input[str]
    events_topic_arn: pulumi.Input[str]
    topic_key_arn: pulumi.Input[str] | None  # the events topic's key; None: it has none
    results_bucket: pulumi.Input[str]
    models_bucket: pulumi.Input[str]
    repository_arn: pulumi.Input[str]
    log_group_arn: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    input_buckets: tuple[InputBucket, ...]


class WorkerRoles(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: WorkerRolesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("posefleet:iam:WorkerRoles", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = aws.get_region_output().region
        account = aws.get_caller_identity_output().account_id
        # ECS may assume these roles only for this account's tasks (confused deputy).
        ecs_tasks = pulumi.Output.all(account, region).apply(
            lambda v: json.dumps(assume_role("ecs-tasks.amazonaws.com", account=v[0], region=v[1]))
        )
        self.task_role = aws.iam.Role(f"{name}-task", assume_role_policy=ecs_tasks, opts=child)
        self.execution_role = aws.iam.Role(
            f"{name}-execution", assume_role_policy=ecs_tasks, opts=child
        )
        aws.iam.RolePolicy(
            f"{name}-task-policy",
            role=self.task_role.id,
            policy=pulumi.Output.all(
                queue_arn=args.queue_arn,
                dlq_arn=args.dlq_arn,
                live_queue_arn=args.live_queue_arn,
                live_dlq_arn=args.live_dlq_arn,
                events_topic_arn=args.events_topic_arn,
                topic_key_arn=args.topic_key_arn,
                results_bucket=args.results_bucket,
                models_bucket=args.models_bucket,
                cluster_name=args.cluster_name,
                region=region,
                account=account,
            ).apply(lambda v: json.dumps(task_policy(**v, input_buckets=args.input_buckets))),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-execution-policy",
            role=self.execution_role.id,
            policy=pulumi.Output.all(args.repository_arn, args.log_group_arn).apply(
                lambda v: json.dumps(execution_policy(repository_arn=v[0], log_group_arn=v[1]))
            ),
            opts=child,
        )
        self.register_outputs({"task_role_arn": self.task_role.arn})
