"""IAM and resource policy documents, as pure functions of resource names: least privilege, no
``*`` action in an Allow, and no ``*`` resource except where AWS accepts nothing narrower
(ecr:GetAuthorizationToken; a KMS key policy, whose ``*`` means the key itself)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infra.config import InputBucket
from posefleet.model_pointer import MODELS_PREFIX

__all__ = [
    "KEY_ADMIN_ACTIONS",
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


def queue_policy(*, queue_arn: str, account: str, notifying_bucket_arns: Sequence[str] = ()) -> Doc:
    """TLS only; and S3 may send event notifications from the named buckets of this account
    (``aws:SourceArn`` and ``aws:SourceAccount``: another account's bucket of the same name
    cannot)."""
    statements = [deny_insecure_transport("sqs:*", [queue_arn])]
    if notifying_bucket_arns:
        statements.append(
            {
                "Sid": "S3EventNotifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {
                    "ArnLike": {"aws:SourceArn": list(notifying_bucket_arns)},
                    "StringEquals": {"aws:SourceAccount": account},
                },
            }
        )
    return _doc(*statements)


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


def task_policy(
    *,
    queue_arn: str,
    dlq_arn: str,
    results_bucket: str,
    models_bucket: str,
    input_buckets: tuple[InputBucket, ...],
    cluster_name: str,
    region: str,
    account: str,
    models_prefix: str = f"{MODELS_PREFIX}/",
) -> Doc:
    """What a worker may do: read its inputs and the models prefix, write results, use the queue,
    send an invalid message to the dead-letter queue, and keep its attempt markers
    (``<results>/<job>/attempts/<task>.json``, posefleet.attempts) beside the results."""
    statements: list[Doc] = [
        {
            "Sid": "TasksQueue",
            "Effect": "Allow",
            "Action": [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:SendMessage",  # a message handed back by a live worker is sent again
                "sqs:GetQueueUrl",
                "sqs:GetQueueAttributes",
            ],
            "Resource": queue_arn,
        },
        {  # a body the worker judges invalid goes there at once, with its reason
            "Sid": "DeadLetters",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage", "sqs:GetQueueUrl"],
            "Resource": dlq_arn,
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
