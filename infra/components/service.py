"""The worker's task definition and ECS service (CPU on Fargate/Fargate Spot, or GPU on EC2).

The container runs as it would in any hardened runtime: a read-only root filesystem (Security
Hub ECS.5, checkov CKV_AWS_336) with a volume at each path the worker writes (the model cache
and ``/tmp``, declared ``VOLUME`` in the Dockerfile so ECS copies their owner and mode into the
volume), the image's non-root user, every Linux capability dropped, no public IP (ECS.2), and
the image named by digest. ``make image-test`` runs the image with these same settings, read
from :func:`container_definitions` (tests/test_image.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerServiceArgs:
    gpu: bool
    cluster_arn: pulumi.Input[str]
    gpu_provider_name: pulumi.Input[str] | None
    image: pulumi.Input[str]
    cpu: int
    memory: int
    spot_weight: int
    desired: int
    # Tasks placed on Fargate Spot before the weights apply: the live lane's warm workers
    # (liveMinWorkers), so that what they cost is Spot's price (docs/deploy.md).
    spot_base: int = 0
    task_role_arn: pulumi.Input[str]
    execution_role_arn: pulumi.Input[str]
    log_group: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    assign_public_ip: bool
    environment: pulumi.Input[dict[str, str]]


STOP_TIMEOUT = 120  # ECS's maximum; the worker's drain grace stays under it
USER = "10001:10001"  # the image's posefleet user (Dockerfile)
MODEL_CACHE = "/home/posefleet/models"
# The only paths the worker writes on its read-only root: volume name -> path in the container.
WRITABLE_PATHS = {"tmp": "/tmp", "model-cache": MODEL_CACHE}


def container_definitions(
    *, image: str, environment: dict[str, str], log_group: str, region: str, gpu: bool
) -> str:
    environment = {**environment, "POSEFLEET_MODEL_CACHE_DIR": MODEL_CACHE, "TMPDIR": "/tmp"}
    container = {
        "name": "worker",
        "image": image,
        "essential": True,
        "stopTimeout": STOP_TIMEOUT,
        "user": USER,
        "readonlyRootFilesystem": True,
        "linuxParameters": {"capabilities": {"drop": ["ALL"]}},
        "mountPoints": [
            {"sourceVolume": volume, "containerPath": path, "readOnly": False}
            for volume, path in WRITABLE_PATHS.items()
        ],
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group,
                "awslogs-region": region,
                "awslogs-stream-prefix": "worker",
            },
        },
    }
    if gpu:
        container["resourceRequirements"] = [{"type": "GPU", "value": "1"}]
    return json.dumps([container])


class WorkerService(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: WorkerServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("posefleet:service:WorkerService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = aws.get_region_output().region
        definitions = pulumi.Output.all(args.image, args.environment, args.log_group, region).apply(
            lambda v: container_definitions(
                image=v[0], environment=v[1], log_group=v[2], region=v[3], gpu=args.gpu
            )
        )
        self.task_definition = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=f"{name}-{'gpu' if args.gpu else 'cpu'}",
            requires_compatibilities=["EC2"] if args.gpu else ["FARGATE"],
            network_mode="awsvpc",
            cpu=None if args.gpu else str(args.cpu),
            memory=str(args.memory),
            runtime_platform=None
            if args.gpu
            else {"operating_system_family": "LINUX", "cpu_architecture": "X86_64"},
            task_role_arn=args.task_role_arn,
            execution_role_arn=args.execution_role_arn,
            container_definitions=definitions,
            # Task storage (Fargate: its ephemeral storage; EC2: a Docker volume), one per path.
            volumes=[{"name": volume} for volume in WRITABLE_PATHS],
            opts=child,
        )
        if args.gpu:
            strategy = [{"capacity_provider": args.gpu_provider_name, "weight": 1, "base": 0}]
        else:
            strategy = [{"capacity_provider": "FARGATE", "weight": 1, "base": 0}]
            if args.spot_weight > 0:
                strategy.append(
                    {
                        "capacity_provider": "FARGATE_SPOT",
                        "weight": args.spot_weight,
                        "base": args.spot_base,
                    }
                )
        self.service = aws.ecs.Service(
            f"{name}-service",
            cluster=args.cluster_arn,
            task_definition=self.task_definition.arn,
            desired_count=args.desired,
            capacity_provider_strategies=strategy,
            network_configuration={
                "subnets": args.subnet_ids,
                "security_groups": [args.security_group_id],
                "assign_public_ip": args.assign_public_ip and not args.gpu,
            },
            deployment_circuit_breaker={"enable": True, "rollback": True},
            deployment_minimum_healthy_percent=0,
            deployment_maximum_percent=200,
            propagate_tags="SERVICE",
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["desiredCount"]),
        )
        self.register_outputs({"service_name": self.service.name})
