"""Submitting a job: list the images, plan tasks, write the manifest, send the tasks."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from posefleet.layout import Manifest, ResultsLocation
from posefleet.task import TaskMessage, plan_tasks
from producer.send import send_tasks

__all__ = ["JobPlan", "default_job_id", "done_task_ids", "plan_job", "submit_job"]


@dataclass(frozen=True, slots=True)
class JobPlan:
    manifest: Manifest
    tasks: list[TaskMessage]
    skipped: int  # tasks whose results already exist


def default_job_id(bucket: str, prefix: str, now: datetime | None = None) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", prefix.strip("/")).strip("-") or bucket
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stem[:80]}-{stamp}"


def done_task_ids(s3: Any, location: ResultsLocation, job_id: str) -> set[str]:
    """Ids of the tasks of ``job_id`` whose result objects exist."""
    done = set()
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=location.bucket, Prefix=location.tasks_prefix(job_id)):
        for obj in page.get("Contents", []):
            if (task_id := location.task_id_of(job_id, obj["Key"])) is not None:
                done.add(task_id)
    return done


def plan_job(
    *,
    keys: list[str],
    job_id: str,
    bucket: str,
    prefix: str,
    task_size: int,
    location: ResultsLocation,
    queue_url: str,
    model: str,
    skip: set[str] | None = None,
) -> JobPlan:
    tasks = list(
        plan_tasks(
            job_id=job_id,
            bucket=bucket,
            keys=keys,
            task_size=task_size,
            results=location.uri,
            enqueued_at=time.time(),
        )
    )
    manifest = Manifest(
        job_id=job_id,
        source_bucket=bucket,
        source_prefix=prefix,
        tasks=len(tasks),
        images=len(keys),
        task_size=task_size,
        task_ids=[t.task_id for t in tasks],
        queue_url=queue_url,
        model=model,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    todo = [t for t in tasks if t.task_id not in (skip or set())]
    return JobPlan(manifest=manifest, tasks=todo, skipped=len(tasks) - len(todo))


def submit_job(
    s3: Any,
    sqs: Any,
    plan: JobPlan,
    location: ResultsLocation,
    *,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Write the manifest, then send the tasks; returns how many were sent."""
    s3.put_object(
        Bucket=location.bucket,
        Key=location.manifest_key(plan.manifest.job_id),
        Body=plan.manifest.model_dump_json(indent=2).encode(),
        ContentType="application/json",
    )
    return send_tasks(sqs, plan.manifest.queue_url, plan.tasks, on_sent=on_sent)
