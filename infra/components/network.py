"""Where the workers run: private subnets that reach AWS's APIs through VPC endpoints only.

By default the stack makes its own VPC: one private subnet per availability zone, no internet
gateway, no NAT, no public IP (Security Hub ECS.2). Every AWS API a worker or a GPU host calls
has an endpoint (EC2.10, EC2.55, EC2.56): gateway endpoints for S3 and DynamoDB (free), an
interface endpoint for each other service (priced per hour and AZ: docs/deploy.md). The workers'
security group allows no inbound traffic and outbound only HTTPS, to the interface endpoints and
the gateway endpoints' prefix lists.

With ``vpcId`` and ``subnetIds`` the workers run in your subnets instead; the endpoints are made
there too unless ``vpcEndpoints`` is false (your VPC already has them, or routes through a NAT),
and then outbound is HTTPS to anywhere.

A worker calls S3, SQS, SNS (the events it publishes) and (through awslogs) CloudWatch Logs; ECS
pulls its image from ECR (API, registry, and layers from S3). A GPU host's ECS agent also calls
the ECS control plane. A new AWS API the worker calls needs its endpoint in the lists below.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

# Gateway endpoints: route-table entries, no hourly price.
GATEWAY_SERVICES = ("s3", "dynamodb")
# Interface endpoints every stack needs (ec2: Security Hub EC2.10 asks for it in every VPC).
INTERFACE_SERVICES = ("sqs", "sns", "ecr.api", "ecr.dkr", "logs", "ec2")
# And the ECS agent of a GPU host (Fargate's agent reaches ECS by itself).
GPU_INTERFACE_SERVICES = ("ecs", "ecs-agent", "ecs-telemetry")
HTTPS = 443
VPC_CIDR = "10.42.0.0/16"


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkArgs:
    gpu: bool
    vpc_id: str | None = None  # None: the stack makes its VPC
    subnet_ids: tuple[str, ...] = ()
    endpoints: bool = True
    availability_zones: int = 2


def _subnet_cidr(index: int) -> str:
    return f"10.42.{index * 16}.0/20"


class Network(pulumi.ComponentResource):
    """``subnet_ids`` and ``security_group_id`` for the workers (and the GPU hosts)."""

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("posefleet:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.vpc: aws.ec2.Vpc | None = None
        self.endpoints: dict[str, aws.ec2.VpcEndpoint] = {}
        if args.vpc_id is None:
            vpc_id, cidr, route_tables = self._private_vpc(name, args)
        else:
            vpc_id = pulumi.Output.from_input(args.vpc_id)
            cidr = aws.ec2.get_vpc_output(id=args.vpc_id).cidr_block
            self.subnet_ids = pulumi.Output.from_input(list(args.subnet_ids))
            route_tables = aws.ec2.get_route_tables_output(vpc_id=args.vpc_id).ids
        region = aws.get_region_output().region
        egress: list[dict] = []
        if args.endpoints:
            endpoint_sg = aws.ec2.SecurityGroup(
                f"{name}-endpoints",
                description="posefleet VPC endpoints: HTTPS from inside the VPC",
                vpc_id=vpc_id,
                ingress=[
                    {
                        "protocol": "tcp",
                        "from_port": HTTPS,
                        "to_port": HTTPS,
                        "cidr_blocks": [cidr],
                        "description": "HTTPS from the VPC",
                    }
                ],
                opts=child,
            )
            for service in GATEWAY_SERVICES:
                self.endpoints[service] = aws.ec2.VpcEndpoint(
                    f"{name}-{service}",
                    vpc_id=vpc_id,
                    service_name=pulumi.Output.concat("com.amazonaws.", region, f".{service}"),
                    vpc_endpoint_type="Gateway",
                    route_table_ids=route_tables,
                    opts=child,
                )
            interfaces = INTERFACE_SERVICES + (GPU_INTERFACE_SERVICES if args.gpu else ())
            for service in interfaces:
                self.endpoints[service] = aws.ec2.VpcEndpoint(
                    f"{name}-{service.replace('.', '-')}",
                    vpc_id=vpc_id,
                    service_name=pulumi.Output.concat("com.amazonaws.", region, f".{service}"),
                    vpc_endpoint_type="Interface",
                    private_dns_enabled=True,
                    subnet_ids=self.subnet_ids,
                    security_group_ids=[endpoint_sg.id],
                    opts=child,
                )
            egress.append(
                {
                    "protocol": "tcp",
                    "from_port": HTTPS,
                    "to_port": HTTPS,
                    "security_groups": [endpoint_sg.id],
                    "description": "HTTPS to the interface endpoints",
                }
            )
            egress.append(
                {
                    "protocol": "tcp",
                    "from_port": HTTPS,
                    "to_port": HTTPS,
                    "prefix_list_ids": [self.endpoints[s].prefix_list_id for s in GATEWAY_SERVICES],
                    "description": "HTTPS to the gateway endpoints (S3, DynamoDB)",
                }
            )
        else:
            egress.append(
                {
                    "protocol": "tcp",
                    "from_port": HTTPS,
                    "to_port": HTTPS,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "description": "HTTPS to AWS's public endpoints (through your NAT)",
                }
            )
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-worker",
            description="posefleet workers: no inbound, outbound HTTPS to AWS APIs only",
            vpc_id=vpc_id,
            egress=egress,
            opts=child,
        )
        self.vpc_id = vpc_id
        self.register_outputs(
            {"vpc_id": vpc_id, "subnet_ids": self.subnet_ids, "sg": self.security_group.id}
        )

    def _private_vpc(
        self, name: str, args: NetworkArgs
    ) -> tuple[pulumi.Output[str], str, pulumi.Output[list[str]]]:
        child = pulumi.ResourceOptions(parent=self)
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=VPC_CIDR,
            enable_dns_support=True,  # interface endpoints' private DNS needs both
            enable_dns_hostnames=True,
            tags={"Name": f"{name}-private"},
            opts=child,
        )
        zones = aws.get_availability_zones_output(state="available").names
        routes = aws.ec2.RouteTable(
            f"{name}-private",
            vpc_id=self.vpc.id,
            tags={"Name": f"{name}-private: local and gateway endpoints only"},
            opts=child,
        )
        subnets = []
        for i in range(args.availability_zones):
            subnet = aws.ec2.Subnet(
                f"{name}-private-{i}",
                vpc_id=self.vpc.id,
                cidr_block=_subnet_cidr(i),
                availability_zone=zones[i],
                map_public_ip_on_launch=False,
                tags={"Name": f"{name}-private-{i}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{i}", subnet_id=subnet.id, route_table_id=routes.id, opts=child
            )
            subnets.append(subnet.id)
        self.subnet_ids = pulumi.Output.all(*subnets)
        return self.vpc.id, VPC_CIDR, pulumi.Output.all(routes.id)
