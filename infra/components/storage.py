"""Results and models buckets: private, encrypted, TLS only, ACLs disabled (S3.12); versioned
models; expiring results. Optional S3 event notifications from named input buckets into the
live lane's queue: an upload is live work (posefleet.local.route_uploads does the same locally).

The models bucket holds the one thing every result depends on, so only its publishers may write
there: the publisher role this component makes (``python -m training publish`` assumes it), the
user or role that deploys the stack, and any ``modelPublishers``. Its bucket policy denies every
other principal, the workers' task role included, whatever their IAM policies allow. With
``modelsObjectLock`` the bucket keeps every published version for ``modelsLockDays`` (S3 Object
Lock, governance mode)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import InputBucket
from infra.policies import models_bucket_policy, publisher_policy, publisher_trust, tls_only
from posefleet.model_pointer import MODELS_PREFIX


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageArgs:
    results_expire_days: int
    live_queue_arn: pulumi.Input[str]  # where inputs with ``notify`` send ObjectCreated events
    input_buckets: tuple[InputBucket, ...] = ()
    model_publishers: tuple[str, ...] = ()  # more principals that may write models
    models_object_lock: bool = False
    models_lock_days: int = 30


def _tls_only(bucket_arn: str) -> str:
    return json.dumps(tls_only("s3:*", [bucket_arn, f"{bucket_arn}/*"]))


class Storage(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("posefleet:storage:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.results = self._private_bucket(f"{name}-results")
        self.models = self._private_bucket(
            f"{name}-models", policy=False, object_lock=args.models_object_lock
        )
        self.publisher = self._publisher(name, args)
        if args.models_object_lock:
            aws.s3.BucketObjectLockConfiguration(
                f"{name}-models-lock",
                bucket=self.models.id,
                rule={"default_retention": {"mode": "GOVERNANCE", "days": args.models_lock_days}},
                opts=child,
            )
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
                        "queue_arn": args.live_queue_arn,
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

    def _publisher(self, name: str, args: StorageArgs) -> aws.iam.Role:
        """The publisher role, and the models bucket's policy naming who may write."""
        child = pulumi.ResourceOptions(parent=self)
        caller = aws.get_caller_identity_output()
        # The deploying principal as aws:PrincipalArn sees it: a role, not its session.
        deployer = aws.iam.get_session_context_output(arn=caller.arn).issuer_arn
        role = aws.iam.Role(
            f"{name}-publisher",
            description="python -m training publish: the only writer of the models prefix",
            assume_role_policy=caller.account_id.apply(lambda a: json.dumps(publisher_trust(a))),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-publisher-policy",
            role=role.id,
            policy=self.models.bucket.apply(
                lambda b: json.dumps(
                    publisher_policy(models_bucket=b, models_prefix=f"{MODELS_PREFIX}/")
                )
            ),
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-models-policy",
            bucket=self.models.id,
            policy=pulumi.Output.all(self.models.arn, role.arn, deployer).apply(
                lambda v: json.dumps(
                    models_bucket_policy(
                        bucket_arn=v[0], writers=[v[1], v[2], *args.model_publishers]
                    )
                )
            ),
            opts=child,
        )
        return role

    def _private_bucket(
        self, name: str, *, policy: bool = True, object_lock: bool = False
    ) -> aws.s3.Bucket:
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(
            name, force_destroy=False, object_lock_enabled=object_lock or None, opts=child
        )
        aws.s3.BucketOwnershipControls(  # ACLs disabled: the bucket owner owns every object
            f"{name}-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child,
        )
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
        if policy:
            aws.s3.BucketPolicy(
                f"{name}-tls-only",
                bucket=bucket.id,
                policy=bucket.arn.apply(_tls_only),
                opts=child,
            )
        return bucket
