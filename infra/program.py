"""The whole stack, wired from its components. ``__main__.py`` calls :func:`build`."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.components.autoscaling import Autoscaling, AutoscalingArgs
from infra.components.cluster import Cluster, ClusterArgs
from infra.components.iam import WorkerRoles, WorkerRolesArgs
from infra.components.image import WorkerImage
from infra.components.jobs import Jobs, JobsArgs
from infra.components.observability import Observability, ObservabilityArgs
from infra.components.queue import TaskQueue, TaskQueueArgs
from infra.components.service import WorkerService, WorkerServiceArgs
from infra.components.storage import Storage, StorageArgs
from infra.config import StackConfig
from posefleet.metric_names import SERVICE
from posefleet.resources import DISCOVERY_PARAMETER


def _network(config: StackConfig) -> tuple[pulumi.Output[list[str]], pulumi.Output[str]]:
    if config.subnet_ids:
        subnets = pulumi.Output.from_input(list(config.subnet_ids))
        vpc_id = pulumi.Output.from_input(config.vpc_id or "")
    else:
        vpc = aws.ec2.get_vpc_output(default=True)
        vpc_id = vpc.id
        subnets = aws.ec2.get_subnets_output(filters=[{"name": "vpc-id", "values": [vpc.id]}]).ids
    return subnets, vpc_id


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
        ),
        opts=pulumi.ResourceOptions(depends_on=[queue]),
    )
    image = WorkerImage(name, config.image_tag)
    subnets, vpc_id = _network(config)
    security_group = aws.ec2.SecurityGroup(
        f"{name}-worker",
        description="posefleet workers: no inbound, outbound to AWS APIs",
        vpc_id=vpc_id,
        egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"]}],
    )
    cluster = Cluster(
        name,
        ClusterArgs(
            gpu=gpu,
            gpu_instance_type=config.gpu_instance_type,
            max_instances=config.max_tasks,
            subnet_ids=subnets,
            security_group_id=security_group.id,
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
    jobs = Jobs(
        name, JobsArgs(results_bucket=storage.results.bucket, task_role_name=roles.task_role.name)
    )
    results_uri = pulumi.Output.concat("s3://", storage.results.bucket, "/results")
    model_uri = pulumi.Output.concat(
        "s3://", storage.models.bucket, "/pose_classifier/current.json"
    )
    environment = pulumi.Output.all(queue.queue.url, results_uri, model_uri, jobs.table.name).apply(
        lambda v: {
            "POSEFLEET_QUEUE_URL": v[0],
            "POSEFLEET_RESULTS": v[1],
            "POSEFLEET_MODEL": v[2],
            "POSEFLEET_JOBS_TABLE": v[3],
            "POSEFLEET_DEVICE": "cuda" if gpu else "cpu",
            "POSEFLEET_BACKEND": config.backend,
            "POSEFLEET_VISIBILITY_TIMEOUT": str(config.visibility_timeout),
            "POSEFLEET_DRAIN_SECONDS": str(config.drain_seconds),
            "POSEFLEET_SERVICE": SERVICE,
            **config.extra_env,
        }
    )
    service = WorkerService(
        name,
        WorkerServiceArgs(
            gpu=gpu,
            cluster_arn=cluster.cluster.arn,
            gpu_provider_name=cluster.gpu_provider.name if cluster.gpu_provider else None,
            image=image.image_uri,
            cpu=config.cpu,
            memory=config.gpu_memory if gpu else config.memory,
            spot_weight=config.spot_weight,
            desired=config.min_tasks,
            task_role_arn=roles.task_role.arn,
            execution_role_arn=roles.execution_role.arn,
            log_group=cluster.log_group.name,
            subnet_ids=subnets,
            security_group_id=security_group.id,
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
        ),
    )
    aws.ssm.Parameter(
        f"{name}-discovery",
        name=DISCOVERY_PARAMETER,
        type="String",
        value=pulumi.Output.all(queue.queue.url, results_uri, model_uri, jobs.table.name).apply(
            lambda v: json.dumps(
                {"queue_url": v[0], "results": v[1], "model": v[2], "jobs_table": v[3]}
            )
        ),
    )
    outputs = {
        "queue_url": queue.queue.url,
        "dlq_url": queue.dlq.url,
        "results": results_uri,
        "models_bucket": storage.models.bucket,
        "model": model_uri,
        "repository_url": image.repository.repository_url,
        "cluster": cluster.cluster.name,
        "service": service.service.name,
        "dashboard": observability.dashboard.dashboard_name,
        "alarm_topic": observability.topic.arn,
        "jobs_table": jobs.table.name,
        "results_table": pulumi.Output.concat(jobs.database.name, ".", jobs.results_table.name),
        "athena_workgroup": jobs.workgroup.name,
    }
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
