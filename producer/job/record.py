"""A job's record in S3: ``<results>/<job>/manifest.json`` (:class:`posefleet.layout.Manifest`).

What the job was asked to do (source, task size, queue, model), its counts and pointers to its
plan. Submit writes it (``complete: false`` while it plans and sends, ``true`` after); every
other command reads it first, so an unknown job id is a clear :class:`JobNotFound`, and a
manifest this producer cannot read (corrupt, or the one-day version 1 format that listed every
task id) is a clear :class:`ManifestUnreadable`, never a traceback.

IAM: ``s3:GetObject`` and ``s3:PutObject`` on ``<results>/*/manifest.json``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from posefleet.layout import Manifest, ResultsLocation

__all__ = ["JobNotFound", "read_manifest", "write_manifest"]


class JobNotFound(LookupError):
    """No manifest under the results location for this job id."""


class ManifestUnreadable(ValueError):
    """A manifest is there but is not one this producer reads."""


def read_manifest(s3: Any, location: ResultsLocation, job_id: str) -> Manifest:
    key = location.manifest_key(job_id)
    try:
        body = s3.get_object(Bucket=location.bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise JobNotFound(f"no job {job_id!r} under {location.uri} (no manifest.json)") from None
    try:
        return Manifest.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ManifestUnreadable(
            f"s3://{location.bucket}/{key} is not a manifest this producer reads "
            f"({where}: {first['msg']}); submit the job again under a new --job-id"
        ) from None


def write_manifest(s3: Any, location: ResultsLocation, manifest: Manifest) -> None:
    s3.put_object(
        Bucket=location.bucket,
        Key=location.manifest_key(manifest.job_id),
        Body=manifest.model_dump_json(indent=2).encode(),
        ContentType="application/json",
    )
