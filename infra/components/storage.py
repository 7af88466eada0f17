"""Results and models buckets: private, encrypted, TLS only; versioned models; expiring results.
Optional S3 event notifications from named input buckets into the tasks queue."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import InputBucket


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageArgs:
    results_expire_days: int
    queue_arn: pulumi.Input[str]
    input_buckets: tuple[InputBucket, ...] = ()


def _tls_only(bucket_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


class Storage(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("posefleet:storage:Storage", name, None, opts)
        self.results = self._private_bucket(f"{name}-results")
        self.models = self._private_bucket(f"{name}-models")
        child = pulumi.ResourceOptions(parent=self)
        aws.s3.BucketVersioning(
            f"{name}-models-versioning",
            bucket=self.models.id,
            versioning_configuration={"status": "Enabled"},
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-models-lifecycle",
            bucket=self.models.id,
            rules=[
                {
                    "id": "old-versions",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "noncurrent_version_expiration": {"noncurrent_days": 90},
                }
            ],
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-results-lifecycle",
            bucket=self.results.id,
            rules=[
                {
                    "id": "expire-results",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "expiration": {"days": args.results_expire_days},
                },
                {
                    "id": "abort-uploads",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
                },
            ],
            opts=child,
        )
        by_bucket: dict[str, list[InputBucket]] = {}
        for b in args.input_buckets:
            if b.notify:
                by_bucket.setdefault(b.bucket, []).append(b)
        for bucket, entries in by_bucket.items():
            # Note: S3 keeps one notification configuration per bucket; this replaces it.
            aws.s3.BucketNotification(
                f"{name}-events-{bucket}",
                bucket=bucket,
                queues=[
                    {
                        "queue_arn": args.queue_arn,
                        "events": ["s3:ObjectCreated:*"],
                        "filter_prefix": e.prefix,
                    }
                    for e in entries
                ],
                opts=child,
            )
        self.register_outputs(
            {"results_bucket": self.results.bucket, "models_bucket": self.models.bucket}
        )

    def _private_bucket(self, name: str) -> aws.s3.Bucket:
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(name, force_destroy=False, opts=child)
        aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                {
                    "apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"},
                    "bucket_key_enabled": True,
                }
            ],
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only", bucket=bucket.id, policy=bucket.arn.apply(_tls_only), opts=child
        )
        return bucket
