"""The whole stack, wired from its components. ``__main__.py`` calls :func:`build`."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.components.autoscaling import Autoscaling, AutoscalingArgs
from infra.components.cluster import Cluster, ClusterArgs
from infra.components.events import EventsChannel, EventsChannelArgs
from infra.components.iam import WorkerRoles, WorkerRolesArgs
from infra.components.image import WorkerImage
from infra.components.jobs import Jobs, JobsArgs
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

    # The two lanes (posefleet.resources.Lane), each a queue and its dead-letter queue from the
    # one QueueSpec; uploads from inputs with `notify` are live work.
    queue = TaskQueue(name, TaskQueueArgs(spec=config.queue_spec))
    live = TaskQueue(
        f"{name}-live", TaskQueueArgs(spec=config.queue_spec, notifying_bucket_arns=notifying)
    )
    key = TopicKey(name).key.arn if config.customer_kms_key else None
    events = EventsChannel(
        name, EventsChannelArgs(key_arn=key, retention_seconds=config.queue_spec.retention_seconds)
    )
    storage = Storage(
        name,
        StorageArgs(
            results_expire_days=config.results_expire_days,
            live_queue_arn=live.queue.arn,
            input_buckets=config.input_buckets,
            model_publishers=config.model_publishers,
            models_object_lock=config.models_object_lock,
            models_lock_days=config.models_lock_days,
        ),
        # S3 checks, when a notification is configured, that the queue's policy lets it send.
        opts=pulumi.ResourceOptions(depends_on=[live]),
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
            live_queue_arn=live.queue.arn,
            live_dlq_arn=live.dlq.arn,
            events_topic_arn=events.topic.arn,
            topic_key_arn=key,
            results_bucket=storage.results.bucket,
            models_bucket=storage.models.bucket,
            repository_arn=image.repository.arn,
            log_group_arn=cluster.log_group.arn,
            cluster_name=cluster.cluster.name,
            input_buckets=config.input_buckets,
        ),
    )
    jobs = Jobs(
        name, JobsArgs(results_bucket=storage.results.bucket, task_role_name=roles.task_role.name)
    )
    results_uri = pulumi.Output.concat("s3://", storage.results.bucket, "/results")
    model_uri = pulumi.Output.concat(
        "s3://", storage.models.bucket, f"/{MODELS_PREFIX}/{POINTER_NAME}"
    )
    outputs = {
        "queue_url": queue.queue.url,
        "dlq_url": queue.dlq.url,
        "live_queue_url": live.queue.url,
        "live_dlq_url": live.dlq.url,
        "events_topic": events.topic.arn,
        "events_queue_url": events.queue.url,
        "results": results_uri,
        "models_bucket": storage.models.bucket,
        "model": model_uri,
        "publisher_role": storage.publisher.arn,
        "repository_url": image.repository.repository_url,
        "cluster": cluster.cluster.name,
        "jobs_table": jobs.table.name,
        "results_table": pulumi.Output.concat(jobs.database.name, ".", jobs.results_table.name),
        "athena_workgroup": jobs.workgroup.name,
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
                live=live,
                events=events,
                jobs=jobs,
                key=key,
                cluster=cluster,
                roles=roles,
                network=network,
                image_uri=image.image_uri,
                results_uri=results_uri,
                model_uri=model_uri,
            )
        )
    # What the producer finds the stack by (producer/discovery.py).
    discovered = {
        "queue_url": queue.queue.url,
        "live_queue_url": live.queue.url,
        "events_topic": events.topic.arn,
        "events_queue_url": events.queue.url,
        "jobs_table": jobs.table.name,
        "results": results_uri,
        "model": model_uri,
    }
    aws.ssm.Parameter(
        f"{name}-discovery",
        name=DISCOVERY_PARAMETER,
        type="String",
        value=pulumi.Output.all(**discovered).apply(lambda v: json.dumps(v, sort_keys=True)),
    )
    for output, value in outputs.items():
        pulumi.export(output, value)
    return outputs


def _workers(
    name: str,
    config: StackConfig,
    *,
    queue: TaskQueue,
    live: TaskQueue,
    events: EventsChannel,
    jobs: Jobs,
    key: pulumi.Output[str] | None,
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
    environment = pulumi.Output.all(
        queue=queue.queue.url,
        live=live.queue.url,
        events=events.topic.arn,
        jobs=jobs.table.name,
        results=results_uri,
        model=model_uri,
    ).apply(
        lambda v: {
            "POSEFLEET_QUEUE_URL": v["queue"],
            "POSEFLEET_LIVE_QUEUE_URL": v["live"],
            "POSEFLEET_EVENTS_TOPIC": v["events"],
            "POSEFLEET_JOBS_TABLE": v["jobs"],
            "POSEFLEET_RESULTS": v["results"],
            "POSEFLEET_MODEL": v["model"],
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
            spot_base=config.live_min_workers,
            desired=config.floor,
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
            live_queue_name=live.queue.name,
            min_tasks=config.floor,
            max_tasks=config.max_tasks,
            backlog_target=config.backlog_target,
            live_photo_tasks=config.live_photo_tasks,
            live_wait_seconds=config.live_wait_seconds,
            idle_minutes=config.no_progress_minutes,
        ),
    )
    observability = Observability(
        name,
        ObservabilityArgs(
            queue_name=queue.queue.name,
            dlq_name=queue.dlq.name,
            live_queue_name=live.queue.name,
            live_dlq_name=live.dlq.name,
            cluster_name=cluster.cluster.name,
            service_name=service.service.name,
            metrics_service=SERVICE,
            gpu=gpu,
            oldest_message_alarm_seconds=config.oldest_message_alarm_seconds,
            failure_rate_alarm_percent=config.failure_rate_alarm_percent,
            no_progress_minutes=config.no_progress_minutes,
            live_latency_alarm_seconds=config.live_latency_alarm_seconds,
            alarm_email=config.alarm_email,
            topic_key_arn=key,
        ),
    )
    return {
        "image": image_uri,
        "service": service.service.name,
        "dashboard": observability.dashboard.dashboard_name,
        "alarm_topic": observability.topic.arn,
    }
