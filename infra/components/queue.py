"""Tasks queue and its dead-letter queue, with posefleet.resources' settings."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

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
        if args.notifying_bucket_arns:
            self.policy = aws.sqs.QueuePolicy(
                f"{name}-s3-events",
                queue_url=self.queue.url,
                policy=self.queue.arn.apply(
                    lambda arn: json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Sid": "S3EventNotifications",
                                    "Effect": "Allow",
                                    "Principal": {"Service": "s3.amazonaws.com"},
                                    "Action": "sqs:SendMessage",
                                    "Resource": arn,
                                    "Condition": {
                                        "ArnLike": {
                                            "aws:SourceArn": list(args.notifying_bucket_arns)
                                        }
                                    },
                                }
                            ],
                        }
                    )
                ),
                opts=child,
            )
        self.register_outputs({"queue_url": self.queue.url, "dlq_url": self.dlq.url})
