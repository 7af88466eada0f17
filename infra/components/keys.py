"""The stack's customer managed KMS key, for its SNS topics (Security Hub SNS.1).

CloudWatch alarms can publish to an encrypted topic only if its key lets CloudWatch use it, which
an AWS managed key (``alias/aws/sns``) cannot: hence a key of the stack's own ($1 a month, and
$0.03 per 10,000 requests: docs/deploy.md). Rotated yearly. A topic that other publishers use
(the events topic) takes the same key; those publishers need ``kms:GenerateDataKey`` and
``kms:Decrypt`` on it in their IAM policies, which the key policy delegates to the account.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.policies import topic_key_policy


class TopicKey(pulumi.ComponentResource):
    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("posefleet:keys:TopicKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = aws.get_caller_identity_output().account_id
        self.key = aws.kms.Key(
            f"{name}-topics",
            description="posefleet: SNS topics (alarms, events)",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=account.apply(lambda a: json.dumps(topic_key_policy(account=a))),
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-topics", name=f"alias/{name}-topics", target_key_id=self.key.key_id, opts=child
        )
        self.register_outputs({"key_arn": self.key.arn})
