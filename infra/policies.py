"""IAM and resource policy documents, as pure functions of resource names: least privilege, no
``*`` action in an Allow, and no ``*`` resource except where AWS accepts nothing narrower
(ecr:GetAuthorizationToken; a KMS key policy, whose ``*`` means the key itself)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infra.config import InputBucket
from posefleet.model_pointer import MODELS_PREFIX

__all__ = [
    "DEAD_LETTER_ACTIONS",
    "KEY_ADMIN_ACTIONS",
    "LANE_QUEUE_ACTIONS",
    "MODEL_WRITE_ACTIONS",
    "assume_role",
    "deny_insecure_transport",
    "execution_policy",
    "models_bucket_policy",
    "publisher_policy",
    "publisher_trust",
    "queue_policy",
    "task_policy",
    "tls_only",
    "topic_key_policy",
    "topic_policy",
]

Doc = dict[str, Any]


def _doc(*statements: Doc) -> Doc:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def assume_role(service: str, *, account: str | None = None, region: str | None = None) -> Doc:
    """Trust for an AWS service principal. With ``account``, scoped against the confused deputy:
    the service may assume the role only on behalf of this account's resources
    (``aws:SourceAccount``, and ``aws:SourceArn`` within the service's ARNs in ``region``), as
    the ECS task roles do. EC2 adds neither key when it hands an instance its profile's role, so
    the GPU instance role is left unscoped there and guarded by who may pass it (iam:PassRole)."""
    statement: Doc = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    }
    if account is not None:
        condition: Doc = {"StringEquals": {"aws:SourceAccount": account}}
        if region is not None:
            prefix = service.split(".")[0].removesuffix("-tasks")
            condition["ArnLike"] = {"aws:SourceArn": f"arn:aws:{prefix}:{region}:{account}:*"}
        statement["Condition"] = condition
    return _doc(statement)


def deny_insecure_transport(actions: str, resources: Sequence[str]) -> Doc:
    """The statement that refuses any request not made over TLS (``aws:SecureTransport``)."""
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": actions,
        "Resource": list(resources),
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def tls_only(actions: str, resources: Sequence[str]) -> Doc:
    """A resource policy with nothing but :func:`deny_insecure_transport`."""
    return _doc(deny_insecure_transport(actions, resources))


def queue_policy(
    *,
    queue_arn: str,
    account: str,
    notifying_bucket_arns: Sequence[str] = (),
    topic_arns: Sequence[str] = (),
) -> Doc:
    """TLS only; S3 may send event notifications from the named buckets of this account
    (``aws:SourceArn`` and ``aws:SourceAccount``: another account's bucket of the same name
    cannot); SNS may deliver from the named topics only (``aws:SourceArn``: a topic ARN names its
    account)."""
    statements = [deny_insecure_transport("sqs:*", [queue_arn])]
    if notifying_bucket_arns:
        statements.append(
            _service_sends(
                "S3EventNotifications",
                "s3.amazonaws.com",
                queue_arn,
                {
                    "ArnLike": {"aws:SourceArn": list(notifying_bucket_arns)},
                    "StringEquals": {"aws:SourceAccount": account},
                },
            )
        )
    if topic_arns:
        statements.append(
            _service_sends(
                "TopicSubscription",
                "sns.amazonaws.com",
                queue_arn,
                {"ArnEquals": {"aws:SourceArn": list(topic_arns)}},
            )
        )
    return _doc(*statements)


def _service_sends(sid: str, service: str, queue_arn: str, condition: Doc) -> Doc:
    """An AWS service may send to the queue, under ``condition`` (its source, against the
    confused deputy)."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": condition,
    }


def topic_policy(*, topic_arn: str) -> Doc:
    """An SNS topic's policy: publishing only over TLS (AWS's "enforce encryption of data in
    transit" statement for SNS). Nothing is allowed here: publishers of this account are
    allowed by their IAM policies (the workers' task role), no one else's."""
    return _doc(deny_insecure_transport("sns:Publish", [topic_arn]))


# Everything that changes what the models prefix serves. s3:PutObject covers copies and
# multipart uploads; with S3 Object Lock, retention changes and governance bypass too.
MODEL_WRITE_ACTIONS = (
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention",
)


def models_bucket_policy(*, bucket_arn: str, writers: Sequence[str]) -> Doc:
    """TLS only; and no principal but ``writers`` (the publisher role, the deploying user, any
    ``modelPublishers``) may write or delete a model, whatever its own IAM policy allows."""
    return _doc(
        deny_insecure_transport("s3:*", [bucket_arn, f"{bucket_arn}/*"]),
        {
            "Sid": "OnlyPublishersWriteModels",
            "Effect": "Deny",
            "Principal": "*",
            "Action": list(MODEL_WRITE_ACTIONS),
            "Resource": f"{bucket_arn}/*",
            "Condition": {"ArnNotEquals": {"aws:PrincipalArn": sorted(set(writers))}},
        },
    )


def publisher_trust(account: str) -> Doc:
    """Principals of this account whose own IAM policy lets them assume the publisher role."""
    return _doc(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
            "Action": "sts:AssumeRole",
        }
    )


def publisher_policy(*, models_bucket: str, models_prefix: str) -> Doc:
    """What ``python -m training publish`` needs: read the current pointer, write a version and
    the pointer."""
    return _doc(
        {
            "Sid": "PublishModels",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": _object_arn(models_bucket, models_prefix),
        },
        {
            "Sid": "ListModels",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{models_bucket}",
            "Condition": {"StringLike": {"s3:prefix": [f"{models_prefix}*"]}},
        },
    )


# Everything an administrator does with the key, and its use through IAM policies of the
# account; named one by one, no wildcard.
KEY_ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
)


def topic_key_policy(*, account: str) -> Doc:
    """The SNS topics' key: the account administers it (and may grant its use in IAM policies);
    CloudWatch, publishing alarms to an encrypted topic, may use it for this account only."""
    return _doc(
        {
            "Sid": "AccountAdministers",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
            "Action": list(KEY_ADMIN_ACTIONS),
            "Resource": "*",
        },
        {
            "Sid": "CloudWatchAlarmsPublish",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceAccount": account}},
        },
    )


def _object_arn(bucket: str, prefix: str) -> str:
    return f"arn:aws:s3:::{bucket}/{prefix}*"


# What a worker does with a lane's queue, the same on both lanes (worker/sqs.py): receive, delete,
# extend visibility, hand a message back by sending it again, read the redrive policy.
LANE_QUEUE_ACTIONS = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:SendMessage",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
)
# And with its dead-letter queue: a body it judges invalid goes there at once, with its reason.
DEAD_LETTER_ACTIONS = ("sqs:SendMessage", "sqs:GetQueueUrl")


def _lane(queue_sid: str, queue_arn: str, dlq_sid: str, dlq_arn: str) -> list[Doc]:
    return [
        {
            "Sid": queue_sid,
            "Effect": "Allow",
            "Action": list(LANE_QUEUE_ACTIONS),
            "Resource": queue_arn,
        },
        {
            "Sid": dlq_sid,
            "Effect": "Allow",
            "Action": list(DEAD_LETTER_ACTIONS),
            "Resource": dlq_arn,
        },
    ]


def task_policy(
    *,
    queue_arn: str,
    dlq_arn: str,
    live_queue_arn: str,
    live_dlq_arn: str,
    events_topic_arn: str,
    topic_key_arn: str | None,
    results_bucket: str,
    models_bucket: str,
    input_buckets: tuple[InputBucket, ...],
    cluster_name: str,
    region: str,
    account: str,
    models_prefix: str = f"{MODELS_PREFIX}/",
) -> Doc:
    """What a worker may do: read its inputs and the models prefix, write results, use both
    lanes' queues, send an invalid message to a lane's dead-letter queue, keep its attempt
    markers (``<results>/<job>/attempts/<task>.json``, posefleet.attempts) beside the results,
    and publish events on the events topic (with ``topic_key_arn``, the key that encrypts it,
    for that topic only)."""
    statements: list[Doc] = [
        *_lane("TasksQueue", queue_arn, "DeadLetters", dlq_arn),
        *_lane("LiveQueue", live_queue_arn, "LiveDeadLetters", live_dlq_arn),
        {
            "Sid": "PublishEvents",
            "Effect": "Allow",
            "Action": "sns:Publish",
            "Resource": events_topic_arn,
        },
        {
            "Sid": "WriteResults",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": f"arn:aws:s3:::{results_bucket}/*",
        },
        {  # the worker reads back its attempt markers, and only those
            "Sid": "ReadAttemptMarkers",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{results_bucket}/*/attempts/*",
        },
        {  # without ListBucket a missing marker answers 403, not 404
            "Sid": "ListResults",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{results_bucket}",
        },
        {
            "Sid": "ReadModels",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": _object_arn(models_bucket, models_prefix),
        },
        {  # without ListBucket a missing key answers 403, not 404
            "Sid": "ListModels",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{models_bucket}",
            "Condition": {"StringLike": {"s3:prefix": [f"{models_prefix}*"]}},
        },
        {
            "Sid": "ScaleInProtection",
            "Effect": "Allow",
            "Action": ["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"],
            "Resource": f"arn:aws:ecs:{region}:{account}:task/{cluster_name}/*",
        },
    ]
    if topic_key_arn is not None:
        statements.append(
            {  # SNS encrypts what the worker publishes with a data key of the topic's key
                "Sid": "EncryptEvents",
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": topic_key_arn,
                # through SNS, for this topic's messages only (the context SNS gives KMS)
                "Condition": {
                    "StringEquals": {
                        "kms:ViaService": f"sns.{region}.amazonaws.com",
                        "kms:EncryptionContext:aws:sns:topicArn": events_topic_arn,
                    }
                },
            }
        )
    if input_buckets:
        statements.append(
            {
                "Sid": "ReadInputs",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": sorted({_object_arn(b.bucket, b.prefix) for b in input_buckets}),
            }
        )
        for i, b in enumerate(input_buckets):
            statements.append(
                {
                    "Sid": f"ListInput{i}",
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": f"arn:aws:s3:::{b.bucket}",
                    "Condition": {"StringLike": {"s3:prefix": [f"{b.prefix}*"]}},
                }
            )
    return {"Version": "2012-10-17", "Statement": statements}


def execution_policy(*, repository_arn: str, log_group_arn: str) -> Doc:
    """What ECS needs to start a worker: pull its image, write its logs."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EcrLogin",
                "Effect": "Allow",
                "Action": "ecr:GetAuthorizationToken",
                "Resource": "*",
            },
            {
                "Sid": "PullImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": repository_arn,
            },
            {
                "Sid": "WriteLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{log_group_arn}:*",
            },
        ],
    }
