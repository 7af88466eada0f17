"""The events channel (posefleet/events.py): one SNS topic that every event is published to,
with its kind in the message attribute ``posefleet-type``, and a queue subscribed to it with raw
delivery, which ``python -m producer events`` reads (local mode's ``subscribe_queue`` makes the
same pair on moto's server).

The topic is encrypted with the stack's customer managed key (SNS.1; ``keys.py``) and refuses a
publish not made over TLS; the workers' task role may publish to it (and use the key for it
only). The queue is encrypted (SSE-SQS, which SNS can deliver to without a key grant), TLS only,
and accepts messages from this topic alone (``aws:SourceArn``). An application that must see
every event subscribes a queue of its own: each subscribed queue gets every event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.policies import queue_policy, topic_policy


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsChannelArgs:
    key_arn: pulumi.Input[str] | None  # the topic's KMS key; None: unencrypted (customerKmsKey off)
    retention_seconds: int  # how long an unread event waits in the subscribed queue


class EventsChannel(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: EventsChannelArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("posefleet:events:EventsChannel", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(f"{name}-events", kms_master_key_id=args.key_arn, opts=child)
        aws.sns.TopicPolicy(
            f"{name}-events-tls-only",
            arn=self.topic.arn,
            policy=self.topic.arn.apply(lambda arn: json.dumps(topic_policy(topic_arn=arn))),
            opts=child,
        )
        self.queue = aws.sqs.Queue(
            f"{name}-events",
            message_retention_seconds=args.retention_seconds,
            sqs_managed_sse_enabled=True,
            opts=child,
        )
        account = aws.get_caller_identity_output().account_id
        queue_access = aws.sqs.QueuePolicy(
            f"{name}-events-policy",
            queue_url=self.queue.url,
            policy=pulumi.Output.all(self.queue.arn, account, self.topic.arn).apply(
                lambda v: json.dumps(queue_policy(queue_arn=v[0], account=v[1], topic_arns=[v[2]]))
            ),
            opts=child,
        )
        self.subscription = aws.sns.TopicSubscription(
            f"{name}-events-queue",
            topic=self.topic.arn,
            protocol="sqs",
            endpoint=self.queue.arn,
            raw_message_delivery=True,  # the body is the event's JSON, as published
            # delivered only once the queue lets SNS send
            opts=pulumi.ResourceOptions(parent=self, depends_on=[queue_access]),
        )
        self.register_outputs({"topic_arn": self.topic.arn, "queue_url": self.queue.url})
