"""One lane's queue and its dead-letter queue (``posefleet.resources.Lane``: the backfill lane and
the live lane are each one of these, from the one ``QueueSpec``): encrypted (SSE-SQS), TLS only
(each queue's policy denies any request not made over TLS), and S3 event notifications accepted
only from the named buckets of this account (the live lane's, which uploads reach)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.policies import queue_policy
from posefleet.resources import QueueSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskQueueArgs:
    spec: QueueSpec
    # Buckets allowed to send S3 event notifications to the queue.
    notifying_bucket_arns: tuple[str, ...] = ()


class TaskQueue(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: TaskQueueArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("posefleet:queue:TaskQueue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        spec = args.spec
        self.dlq = aws.sqs.Queue(
            f"{name}-dlq",
            message_retention_seconds=spec.dlq_retention_seconds,
            sqs_managed_sse_enabled=True,
            opts=child,
        )
        self.queue = aws.sqs.Queue(
            f"{name}-tasks",
            visibility_timeout_seconds=spec.visibility_timeout,
            receive_wait_time_seconds=spec.receive_wait_seconds,
            message_retention_seconds=spec.retention_seconds,
            sqs_managed_sse_enabled=True,
            redrive_policy=self.dlq.arn.apply(
                lambda arn: json.dumps(
                    {"deadLetterTargetArn": arn, "maxReceiveCount": spec.max_receive_count}
                )
            ),
            opts=child,
        )
        account = aws.get_caller_identity_output().account_id
        self.policies = [
            aws.sqs.QueuePolicy(
                f"{name}-{part}-policy",
                queue_url=queue.url,
                policy=pulumi.Output.all(queue.arn, account).apply(
                    lambda v, notifying=notifying: json.dumps(
                        queue_policy(queue_arn=v[0], account=v[1], notifying_bucket_arns=notifying)
                    )
                ),
                opts=child,
            )
            for part, queue, notifying in (
                ("tasks", self.queue, args.notifying_bucket_arns),
                ("dlq", self.dlq, ()),
            )
        ]
        self.register_outputs({"queue_url": self.queue.url, "dlq_url": self.dlq.url})
