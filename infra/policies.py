"""IAM policy documents, as pure functions of resource names: least privilege, no ``*`` action,
and no ``*`` resource except where AWS accepts nothing narrower (ecr:GetAuthorizationToken)."""

from __future__ import annotations

from typing import Any

from infra.config import InputBucket

__all__ = ["assume_role", "execution_policy", "task_policy"]

Doc = dict[str, Any]


def assume_role(service: str) -> Doc:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
        ],
    }


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
    models_prefix: str = "pose_classifier/",
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
