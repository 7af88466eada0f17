"""ECS cluster with Fargate and Fargate Spot, and optionally GPU EC2 capacity: an Auto Scaling
group on the ECS GPU-optimised AMI (from its public SSM parameter) with managed scaling."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.policies import assume_role

GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterArgs:
    gpu: bool
    gpu_instance_type: str
    max_instances: int
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    log_retention_days: int


class Cluster(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("posefleet:cluster:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            settings=[{"name": "containerInsights", "value": "enabled"}],
            opts=child,
        )
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", retention_in_days=args.log_retention_days, opts=child
        )
        providers = ["FARGATE", "FARGATE_SPOT"]
        self.gpu_provider: aws.ecs.CapacityProvider | None = None
        if args.gpu:
            self.gpu_provider = self._gpu_capacity(name, args)
            providers.append(self.gpu_provider.name)
        aws.ecs.ClusterCapacityProviders(
            f"{name}-capacity",
            cluster_name=self.cluster.name,
            capacity_providers=providers,
            opts=child,
        )
        self.register_outputs({"cluster_name": self.cluster.name})

    def _gpu_capacity(self, name: str, args: ClusterArgs) -> aws.ecs.CapacityProvider:
        child = pulumi.ResourceOptions(parent=self)
        ami = aws.ssm.get_parameter_output(name=GPU_AMI_PARAMETER).value
        role = aws.iam.Role(
            f"{name}-gpu-instance",
            assume_role_policy=json.dumps(assume_role("ec2.amazonaws.com")),
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-gpu-instance-ecs",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role",
            opts=child,
        )
        profile = aws.iam.InstanceProfile(f"{name}-gpu-instance", role=role.name, opts=child)
        user_data = self.cluster.name.apply(
            lambda cluster: base64.b64encode(
                f"#!/bin/bash\necho ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\n"
                "echo ECS_ENABLE_GPU_SUPPORT=true >> /etc/ecs/ecs.config\n".encode()
            ).decode()
        )
        template = aws.ec2.LaunchTemplate(
            f"{name}-gpu",
            image_id=ami,
            instance_type=args.gpu_instance_type,
            iam_instance_profile={"arn": profile.arn},
            vpc_security_group_ids=[args.security_group_id],
            user_data=user_data,
            metadata_options={"http_tokens": "required"},
            opts=child,
        )
        group = aws.autoscaling.Group(
            f"{name}-gpu",
            min_size=0,
            max_size=args.max_instances,
            vpc_zone_identifiers=args.subnet_ids,
            launch_template={"id": template.id, "version": "$Latest"},
            protect_from_scale_in=True,
            tags=[{"key": "AmazonECSManaged", "value": "true", "propagate_at_launch": True}],
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["desiredCapacity"]),
        )
        return aws.ecs.CapacityProvider(
            f"{name}-gpu",
            auto_scaling_group_provider={
                "auto_scaling_group_arn": group.arn,
                "managed_termination_protection": "ENABLED",
                "managed_draining": "ENABLED",
                "managed_scaling": {
                    "status": "ENABLED",
                    "target_capacity": 100,
                    "minimum_scaling_step_size": 1,
                    "maximum_scaling_step_size": 4,
                },
            },
            opts=child,
        )
