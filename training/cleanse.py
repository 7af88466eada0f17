"""Finding (and, only when asked and confirmed, deleting) objects that have no label.

IAM: ``s3:ListBucket`` on the buckets; ``s3:DeleteObject`` only for a confirmed delete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from posefleet.settings import IMAGE_EXTENSIONS
from producer.listing import is_image_key

__all__ = ["BucketReport", "delete_unlabeled", "find_unlabeled"]


@dataclass(slots=True)
class BucketReport:
    bucket: str
    total: int = 0
    labeled: int = 0
    unlabeled_keys: list[str] = field(default_factory=list)
    unlabeled_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "total": self.total,
            "labeled": self.labeled,
            "unlabeled": len(self.unlabeled_keys),
            "unlabeled_bytes": self.unlabeled_bytes,
        }


def find_unlabeled(
    s3: Any, sources: Iterable[tuple[str, str]], labels: dict[str, str]
) -> list[BucketReport]:
    reports: dict[str, BucketReport] = {}
    for bucket, prefix in sources:
        report = reports.setdefault(bucket, BucketReport(bucket))
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if not is_image_key(obj["Key"], IMAGE_EXTENSIONS):
                    continue
                report.total += 1
                if f"{bucket}/{obj['Key']}" in labels:
                    report.labeled += 1
                else:
                    report.unlabeled_keys.append(obj["Key"])
                    report.unlabeled_bytes += obj["Size"]
    return list(reports.values())


def delete_unlabeled(
    s3: Any, reports: list[BucketReport], *, on_deleted: Callable[[int], None] | None = None
) -> int:
    deleted = 0
    for report in reports:
        keys = report.unlabeled_keys
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            response = s3.delete_objects(
                Bucket=report.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
            errors = response.get("Errors", [])
            if errors:
                raise RuntimeError(
                    f"{len(errors)} deletes failed in {report.bucket}: {errors[0].get('Message')}"
                )
            deleted += len(chunk)
            if on_deleted:
                on_deleted(len(chunk))
    return deleted
