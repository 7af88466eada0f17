"""The whole stack, wired from its components. ``__main__.py`` calls :func:`build`."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.components.autoscaling import Autoscaling, AutoscalingArgs
from infra.components.cluster import Cluster, ClusterArgs
from infra.components.iam import WorkerRoles, WorkerRolesArgs
from infra.components.image import WorkerImage
from infra.components.keys import TopicKey
from infra.components.network import Network, NetworkArgs
from infra.components.observability import Observability, ObservabilityArgs
from infra.components.queue import TaskQueue, TaskQueueArgs
from infra.components.service import WorkerService, WorkerServiceArgs
from infra.components.storage import Storage, StorageArgs
from infra.config import StackConfig
from posefleet.metric_names import SERVICE
from posefleet.model_pointer import MODELS_PREFIX, POINTER_NAME
from posefleet.resources import DISCOVERY_PARAMETER

NO_IMAGE = (
    "no worker image yet (posefleet:imageDigest or posefleet:imageTag): the stack is created "
    "without the worker service. Push the image to repository_url, then "
    "`pulumi config set posefleet:imageDigest sha256:...` and `pulumi up` (docs/deploy.md)"
)


def build(config: StackConfig | None = None) -> dict[str, pulumi.Output]:
    config = config or StackConfig.load()
    name = "posefleet"
    gpu = config.capacity == "gpu"
    notifying = tuple(f"arn:aws:s3:::{b.bucket}" for b in config.input_buckets if b.notify)

    queue = TaskQueue(name, TaskQueueArgs(spec=config.queue_spec, notifying_bucket_arns=notifying))
    storage = Storage(
        name,
        StorageArgs(
            results_expire_days=config.results_expire_days,
            queue_arn=queue.queue.arn,
            input_buckets=config.input_buckets,
            model_publishers=config.model_publishers,
            models_object_lock=config.models_object_lock,
            models_lock_days=config.models_lock_days,
        ),
        opts=pulumi.ResourceOptions(depends_on=[queue]),
    )
    image = WorkerImage(
        name, digest=config.image_digest, tag=config.image_tag, images_kept=config.images_kept
    )
    network = Network(
        name,
        NetworkArgs(
            gpu=gpu,
            vpc_id=None if config.own_network else config.vpc_id,
            subnet_ids=config.subnet_ids,
            endpoints=config.vpc_endpoints,
            availability_zones=config.availability_zones,
        ),
    )
    cluster = Cluster(
        name,
        ClusterArgs(
            gpu=gpu,
            gpu_instance_type=config.gpu_instance_type,
            max_instances=config.max_tasks,
            subnet_ids=network.subnet_ids,
            security_group_id=network.security_group.id,
            log_retention_days=config.log_retention_days,
        ),
    )
    roles = WorkerRoles(
        name,
        WorkerRolesArgs(
            queue_arn=queue.queue.arn,
            dlq_arn=queue.dlq.arn,
            results_bucket=storage.results.bucket,
            models_bucket=storage.models.bucket,
            repository_arn=image.repository.arn,
            log_group_arn=cluster.log_group.arn,
            cluster_name=cluster.cluster.name,
            input_buckets=config.input_buckets,
        ),
    )
    results_uri = pulumi.Output.concat("s3://", storage.results.bucket, "/results")
    model_uri = pulumi.Output.concat(
        "s3://", storage.models.bucket, f"/{MODELS_PREFIX}/{POINTER_NAME}"
    )
    outputs = {
        "queue_url": queue.queue.url,
        "dlq_url": queue.dlq.url,
        "results": results_uri,
        "models_bucket": storage.models.bucket,
        "model": model_uri,
        "publisher_role": storage.publisher.arn,
        "repository_url": image.repository.repository_url,
        "cluster": cluster.cluster.name,
    }
    if image.image_uri is None:
        pulumi.log.warn(NO_IMAGE)
        outputs["next_step"] = pulumi.Output.from_input(NO_IMAGE)
    else:
        outputs.update(
            _workers(
                name,
                config,
                queue=queue,
                cluster=cluster,
                roles=roles,
                network=network,
                image_uri=image.image_uri,
                results_uri=results_uri,
                model_uri=model_uri,
            )
        )
    aws.ssm.Parameter(
        f"{name}-discovery",
        name=DISCOVERY_PARAMETER,
        type="String",
        value=pulumi.Output.all(queue.queue.url, results_uri, model_uri).apply(
            lambda v: json.dumps({"queue_url": v[0], "results": v[1], "model": v[2]})
        ),
    )
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs


def _workers(
    name: str,
    config: StackConfig,
    *,
    queue: TaskQueue,
    cluster: Cluster,
    roles: WorkerRoles,
    network: Network,
    image_uri: pulumi.Output[str],
    results_uri: pulumi.Output[str],
    model_uri: pulumi.Output[str],
) -> dict[str, pulumi.Output]:
    """The worker service, its autoscaling and its observability: once an image is named."""
    gpu = config.capacity == "gpu"
    pin = {"POSEFLEET_MODEL_SHA256": config.model_sha256} if config.model_sha256 else {}
    environment = pulumi.Output.all(queue.queue.url, results_uri, model_uri).apply(
        lambda v: {
            "POSEFLEET_QUEUE_URL": v[0],
            "POSEFLEET_RESULTS": v[1],
            "POSEFLEET_MODEL": v[2],
            "POSEFLEET_DEVICE": "cuda" if gpu else "cpu",
            "POSEFLEET_BACKEND": config.backend,
            "POSEFLEET_VISIBILITY_TIMEOUT": str(config.visibility_timeout),
            "POSEFLEET_DRAIN_SECONDS": str(config.drain_seconds),
            "POSEFLEET_SERVICE": SERVICE,
            **config.extra_env,
            **pin,  # after extraEnv: the stack's pin is not overridden by accident
        }
    )
    service = WorkerService(
        name,
        WorkerServiceArgs(
            gpu=gpu,
            cluster_arn=cluster.cluster.arn,
            gpu_provider_name=cluster.gpu_provider.name if cluster.gpu_provider else None,
            image=image_uri,
            cpu=config.cpu,
            memory=config.gpu_memory if gpu else config.memory,
            spot_weight=config.spot_weight,
            desired=config.min_tasks,
            task_role_arn=roles.task_role.arn,
            execution_role_arn=roles.execution_role.arn,
            log_group=cluster.log_group.name,
            subnet_ids=network.subnet_ids,
            security_group_id=network.security_group.id,
            assign_public_ip=config.assign_public_ip,
            environment=environment,
        ),
    )
    Autoscaling(
        name,
        AutoscalingArgs(
            cluster_name=cluster.cluster.name,
            service_name=service.service.name,
            queue_name=queue.queue.name,
            min_tasks=config.min_tasks,
            max_tasks=config.max_tasks,
            backlog_target=config.backlog_target,
            idle_minutes=config.no_progress_minutes,
        ),
    )
    observability = Observability(
        name,
        ObservabilityArgs(
            queue_name=queue.queue.name,
            dlq_name=queue.dlq.name,
            cluster_name=cluster.cluster.name,
            service_name=service.service.name,
            metrics_service=SERVICE,
            gpu=gpu,
            oldest_message_alarm_seconds=config.oldest_message_alarm_seconds,
            failure_rate_alarm_percent=config.failure_rate_alarm_percent,
            no_progress_minutes=config.no_progress_minutes,
            alarm_email=config.alarm_email,
            topic_key_arn=TopicKey(name).key.arn if config.customer_kms_key else None,
        ),
    )
    return {
        "image": image_uri,
        "service": service.service.name,
        "dashboard": observability.dashboard.dashboard_name,
        "alarm_topic": observability.topic.arn,
    }
