"""Stack configuration: every choice is a Pulumi config key (``posefleet:<key>``) with a default.

Documented in docs/deploy.md; checked here so a bad value fails at ``pulumi preview``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pulumi

from posefleet.resources import QueueSpec

__all__ = ["InputBucket", "StackConfig"]

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _flag(c: pulumi.Config, key: str, default: bool) -> bool:
    value = c.get_bool(key)
    return default if value is None else value


@dataclass(frozen=True, slots=True, kw_only=True)
class InputBucket:
    bucket: str
    prefix: str = ""
    notify: bool = False  # send S3 ObjectCreated events for this prefix to the live lane


@dataclass(frozen=True, slots=True, kw_only=True)
class StackConfig:
    capacity: str = "fargate"  # fargate | gpu
    min_tasks: int = 0
    max_tasks: int = 20
    # The live lane (docs/deploy.md, "The live lane"): workers kept warm for uploads (on Fargate
    # Spot while spotWeight > 0), how long a live photo may wait visible before a worker is
    # added, and the p95 upload -> label latency that raises the alarm.
    live_min_workers: int = 0
    live_wait_seconds: int = 10
    live_latency_alarm_seconds: float = 30.0
    cpu: int = 2048
    memory: int = 4096
    spot_weight: int = 3
    gpu_instance_type: str = "g5.xlarge"
    gpu_memory: int = 14336
    # The worker image, always deployed by digest: imageDigest as given, or imageTag resolved to
    # its digest in the stack's repository at deploy time. Neither: the stack is created
    # without the worker service, to push the first image to its repository (docs/deploy.md).
    image_digest: str | None = None
    image_tag: str | None = None
    backend: str = "torch"  # torch | openvino | openvino-int8 (CPU only; docs/benchmarks.md)
    input_buckets: tuple[InputBucket, ...] = ()
    # Network (docs/deploy.md, "Security controls"). By default the stack makes its own VPC:
    # private subnets with no internet gateway and no NAT, and VPC endpoints for every AWS API
    # the workers call. vpcId + subnetIds use yours instead.
    vpc_id: str | None = None
    subnet_ids: tuple[str, ...] = ()
    assign_public_ip: bool = False
    vpc_endpoints: bool = True
    availability_zones: int = 2
    # Security switches whose secure value is the default.
    customer_kms_key: bool = True  # the SNS topic's key (CloudWatch alarms need a customer key)
    model_sha256: str | None = None  # pin the checkpoint every worker must serve
    models_object_lock: bool = False  # S3 Object Lock on the models bucket (chosen at creation)
    models_lock_days: int = 30
    model_publishers: tuple[str, ...] = ()  # more IAM ARNs that may write the models prefix
    images_kept: int = 30  # ECR lifecycle: the newest images kept
    task_size: int = 20
    longest_task_seconds: int = 120  # the slowest task we expect, image fetches included
    acceptable_latency_seconds: int = 600
    seconds_per_task: float = 12.0  # measured: docs/benchmarks.md
    max_receive_count: int = QueueSpec().max_receive_count  # the one default: resources.py
    drain_seconds: int = 90
    log_retention_days: int = 30
    results_expire_days: int = 90
    oldest_message_alarm_seconds: int = 3600
    failure_rate_alarm_percent: float = 5.0
    no_progress_minutes: int = 15
    alarm_email: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.capacity not in ("fargate", "gpu"):
            raise ValueError(f"posefleet:capacity must be fargate or gpu, got {self.capacity!r}")
        if not 0 <= self.min_tasks <= self.max_tasks or self.max_tasks < 1:
            raise ValueError(
                "posefleet:minTasks must be between 0 and posefleet:maxTasks (at least 1)"
            )
        if self.backend not in ("torch", "openvino", "openvino-int8"):
            raise ValueError(
                f"posefleet:backend must be torch, openvino or openvino-int8, got {self.backend!r}"
            )
        if self.backend != "torch" and self.capacity == "gpu":
            raise ValueError(
                "posefleet:backend openvino* runs on CPUs; use torch with capacity gpu"
            )
        if not 0 <= self.live_min_workers <= self.max_tasks:
            raise ValueError("posefleet:liveMinWorkers must be between 0 and posefleet:maxTasks")
        if self.live_wait_seconds < 1 or self.live_latency_alarm_seconds <= 0:
            raise ValueError(
                "posefleet:liveWaitSeconds and liveLatencyAlarmSeconds must be positive"
            )
        if self.drain_seconds >= 120:
            raise ValueError("posefleet:drainSeconds must stay under ECS's 120 s stopTimeout")
        if self.task_size < 1:
            raise ValueError("posefleet:taskSize must be at least 1")
        if self.seconds_per_task <= 0 or self.acceptable_latency_seconds <= 0:
            raise ValueError(
                "posefleet:secondsPerTask and acceptableLatencySeconds must be positive"
            )
        if self.image_digest is not None and not _DIGEST.fullmatch(self.image_digest):
            raise ValueError(
                "posefleet:imageDigest must be sha256:<64 hex digits> (buildah push "
                "--digestfile, or docker inspect --format '{{index .RepoDigests 0}}')"
            )
        if self.model_sha256 is not None and not _SHA256.fullmatch(self.model_sha256):
            raise ValueError(
                "posefleet:modelSha256 must be the checkpoint's SHA-256 (64 lowercase hex digits, "
                "the sha256 in current.json)"
            )
        if self.subnet_ids and not self.vpc_id:
            raise ValueError("posefleet:subnetIds needs posefleet:vpcId, the VPC they are in")
        if self.assign_public_ip and not self.subnet_ids:
            raise ValueError(
                "posefleet:assignPublicIp needs public subnets of yours (posefleet:subnetIds): "
                "the stack's own subnets are private"
            )
        if not 1 <= self.availability_zones <= 6:
            raise ValueError("posefleet:availabilityZones must be between 1 and 6")
        if self.models_lock_days < 1 or self.images_kept < 1:
            raise ValueError("posefleet:modelsLockDays and imagesKept must be at least 1")
        for arn in self.model_publishers:
            if not arn.startswith("arn:") or "*" in arn:
                raise ValueError(f"posefleet:modelPublishers takes IAM ARNs, no wildcard: {arn!r}")

    @property
    def own_network(self) -> bool:
        """Whether the stack makes its VPC (no subnetIds given)."""
        return not self.subnet_ids

    @property
    def floor(self) -> int:
        """Workers that run however idle the fleet is: minTasks, or liveMinWorkers if more."""
        return max(self.min_tasks, self.live_min_workers)

    @property
    def visibility_timeout(self) -> int:
        """Above the longest task, with room for a heartbeat to be missed twice."""
        return max(60, 3 * self.longest_task_seconds)

    @property
    def queue_spec(self) -> QueueSpec:
        return QueueSpec(
            visibility_timeout=self.visibility_timeout, max_receive_count=self.max_receive_count
        )

    @property
    def backlog_target(self) -> float:
        """Tasks waiting per running worker that still meets the acceptable latency."""
        return max(1.0, math.floor(self.acceptable_latency_seconds / self.seconds_per_task))

    @property
    def live_photo_tasks(self) -> float:
        """What one live photo (labelled or waiting, per minute) weighs in the backlog that
        target tracking holds at ``backlog_target`` per worker: a photo takes
        ``secondsPerTask / taskSize`` seconds of a worker, counted twice so that live work runs
        at half a worker's capacity (room for bursts: a live photo should not wait). A worker
        busy half the time with live photos counts as a worker's full backlog, so live traffic
        keeps its workers and backfill work gets workers of its own."""
        seconds_per_photo = self.seconds_per_task / self.task_size
        return self.backlog_target * 2 * seconds_per_photo / 60

    @classmethod
    def load(cls, config: pulumi.Config | None = None) -> StackConfig:
        c = config or pulumi.Config("posefleet")
        d = cls()
        buckets = tuple(
            InputBucket(
                bucket=b["bucket"], prefix=b.get("prefix", ""), notify=bool(b.get("notify", False))
            )
            for b in (c.get_object("inputBuckets") or [])
        )
        return cls(
            capacity=c.get("capacity") or d.capacity,
            min_tasks=c.get_int("minTasks") if c.get("minTasks") is not None else d.min_tasks,
            max_tasks=c.get_int("maxTasks") or d.max_tasks,
            live_min_workers=c.get_int("liveMinWorkers") or d.live_min_workers,
            live_wait_seconds=c.get_int("liveWaitSeconds") or d.live_wait_seconds,
            live_latency_alarm_seconds=c.get_float("liveLatencyAlarmSeconds")
            or d.live_latency_alarm_seconds,
            cpu=c.get_int("cpu") or d.cpu,
            memory=c.get_int("memory") or d.memory,
            spot_weight=c.get_int("spotWeight")
            if c.get("spotWeight") is not None
            else d.spot_weight,
            gpu_instance_type=c.get("gpuInstanceType") or d.gpu_instance_type,
            gpu_memory=c.get_int("gpuMemory") or d.gpu_memory,
            image_digest=c.get("imageDigest"),
            image_tag=c.get("imageTag"),
            backend=c.get("backend") or d.backend,
            input_buckets=buckets,
            vpc_id=c.get("vpcId"),
            subnet_ids=tuple(c.get_object("subnetIds") or ()),
            assign_public_ip=_flag(c, "assignPublicIp", d.assign_public_ip),
            vpc_endpoints=_flag(c, "vpcEndpoints", d.vpc_endpoints),
            availability_zones=c.get_int("availabilityZones") or d.availability_zones,
            customer_kms_key=_flag(c, "customerKmsKey", d.customer_kms_key),
            model_sha256=c.get("modelSha256"),
            models_object_lock=_flag(c, "modelsObjectLock", d.models_object_lock),
            models_lock_days=c.get_int("modelsLockDays") or d.models_lock_days,
            model_publishers=tuple(c.get_object("modelPublishers") or ()),
            images_kept=c.get_int("imagesKept") or d.images_kept,
            task_size=c.get_int("taskSize") or d.task_size,
            longest_task_seconds=c.get_int("longestTaskSeconds") or d.longest_task_seconds,
            acceptable_latency_seconds=c.get_int("acceptableLatencySeconds")
            or d.acceptable_latency_seconds,
            seconds_per_task=c.get_float("secondsPerTask") or d.seconds_per_task,
            max_receive_count=c.get_int("maxReceiveCount") or d.max_receive_count,
            drain_seconds=c.get_int("drainSeconds") or d.drain_seconds,
            log_retention_days=c.get_int("logRetentionDays") or d.log_retention_days,
            results_expire_days=c.get_int("resultsExpireDays") or d.results_expire_days,
            oldest_message_alarm_seconds=c.get_int("oldestMessageAlarmSeconds")
            or d.oldest_message_alarm_seconds,
            failure_rate_alarm_percent=c.get_float("failureRateAlarmPercent")
            or d.failure_rate_alarm_percent,
            no_progress_minutes=c.get_int("noProgressMinutes") or d.no_progress_minutes,
            alarm_email=c.get("alarmEmail"),
            extra_env=dict(c.get_object("extraEnv") or {}),
        )
