"""The worker image's repository: scan on push, immutable tags (ECR.2), a lifecycle policy
(ECR.3). The image itself is built from the Dockerfile and pushed (docs/deploy.md); the task
definition names it by digest, never by tag, so what runs is exactly what was scanned."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws


def lifecycle_policy(images_kept: int) -> str:
    """Untagged images (a build pushed again, a failed push) go after a week; of the rest, the
    newest ``images_kept`` stay, enough to roll back."""
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": "untagged images after 7 days",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": 7,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": f"keep the newest {images_kept} images",
                    "selection": {
                        "tagStatus": "any",
                        "countType": "imageCountMoreThan",
                        "countNumber": images_kept,
                    },
                    "action": {"type": "expire"},
                },
            ]
        }
    )


class WorkerImage(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        digest: str | None,
        tag: str | None,
        images_kept: int,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("posefleet:image:WorkerImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.repository = aws.ecr.Repository(
            f"{name}-repo",
            image_scanning_configuration={"scan_on_push": True},
            image_tag_mutability="IMMUTABLE",
            force_delete=False,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-repo-lifecycle",
            repository=self.repository.name,
            policy=lifecycle_policy(images_kept),
            opts=child,
        )
        # <repository>@sha256:...: the digest given, or the tag's digest looked up at deploy time.
        self.image_uri: pulumi.Output[str] | None = None
        if digest is None and tag is not None:
            digest = aws.ecr.get_image_output(
                repository_name=self.repository.name, image_tag=tag
            ).image_digest
        if digest is not None:
            self.image_uri = pulumi.Output.concat(self.repository.repository_url, "@", digest)
        self.register_outputs(
            {"repository_url": self.repository.repository_url, "image": self.image_uri}
        )
