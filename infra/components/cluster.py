"""ECS cluster with Fargate and Fargate Spot, and optionally GPU EC2 capacity: an Auto Scaling
group on the ECS GPU-optimised AMI (from its public SSM parameter) with managed scaling.

GPU hosts are hardened as the tasks are: IMDSv2 only, with a hop limit of 1 so a container cannot
reach the instance's credentials through the metadata service, and ``ECS_AWSVPC_BLOCK_IMDS``
so awsvpc tasks cannot reach it at all; an encrypted root volume; no public IP."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.policies import assume_role

GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
ROOT_DEVICE = "/dev/xvda"  # the Amazon Linux 2023 ECS AMIs' root volume


def ecs_config(cluster: str) -> str:
    """The GPU host's /etc/ecs/ecs.config lines, as user data."""
    settings = {
        "ECS_CLUSTER": cluster,
        "ECS_ENABLE_GPU_SUPPORT": "true",
        "ECS_AWSVPC_BLOCK_IMDS": "true",  # tasks never see the instance's metadata service
    }
    lines = "".join(f"echo {k}={v} >> /etc/ecs/ecs.config\n" for k, v in settings.items())
    return "#!/bin/bash\n" + lines


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
            lambda cluster: base64.b64encode(ecs_config(cluster).encode()).decode()
        )
        template = aws.ec2.LaunchTemplate(
            f"{name}-gpu",
            image_id=ami,
            instance_type=args.gpu_instance_type,
            iam_instance_profile={"arn": profile.arn},
            network_interfaces=[
                {
                    "device_index": 0,
                    "associate_public_ip_address": "false",
                    "security_groups": [args.security_group_id],
                    "delete_on_termination": "true",
                }
            ],
            user_data=user_data,
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",
                "http_put_response_hop_limit": 1,
            },
            block_device_mappings=[
                {
                    "device_name": ROOT_DEVICE,
                    "ebs": {
                        "encrypted": "true",
                        "volume_type": "gp3",
                        "delete_on_termination": "true",
                    },
                }
            ],
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
