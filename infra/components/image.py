"""The worker image's repository (scan on push). The image itself is built from the Dockerfile
and pushed with `make image-push` (docs/deploy.md); the stack serves `<repo>:<imageTag>`."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws


class WorkerImage(pulumi.ComponentResource):
    def __init__(self, name: str, tag: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("posefleet:image:WorkerImage", name, None, opts)
        self.repository = aws.ecr.Repository(
            f"{name}-repo",
            image_scanning_configuration={"scan_on_push": True},
            image_tag_mutability="MUTABLE",
            force_delete=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.image_uri = pulumi.Output.concat(self.repository.repository_url, ":", tag)
        self.register_outputs(
            {"repository_url": self.repository.repository_url, "image": self.image_uri}
        )
