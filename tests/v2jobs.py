"""A planned job written straight from the job-record contract (manifest v2, the partitions
index, result objects), for the reading side's tests: status, follow, export."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass

from posefleet.layout import Manifest, PartitionSummary, ResultsLocation
from posefleet.result import ResultLine, dump_lines
from posefleet.task import make_task_id

SOURCE = "pf-input"


@dataclass(frozen=True)
class Task:
    partition: str
    index: int
    task_id: str
    keys: tuple[str, ...]


def line(key: str, *, error: bool = False, bucket: str = SOURCE) -> ResultLine:
    """A result line for ``key``: ``ok`` with fixed predictions, or a ``truncated`` error."""
    if error:
        return ResultLine(
            bucket=bucket, key=key, status="error", error_kind="truncated", error_message="cut"
        )
    return ResultLine(
        bucket=bucket,
        key=key,
        status="ok",
        model_version="v1",
        original_size=(10, 20),
        predicted_class_index=1,
        predicted_class_id="2",
        predicted_class_name="Front Double Biceps",
        confidence=0.75,
        all_probabilities={"Front Double Biceps": 0.75, "Side Chest": 0.25},
    )


def plan(partitions: dict[str, int], *, task_size: int, last: int | None = None) -> list[Task]:
    """Tasks of each partition (name -> tasks); the last task of each holds ``last`` keys."""
    tasks = []
    for name, count in partitions.items():
        for i in range(count):
            n = last if (last is not None and i == count - 1) else task_size
            keys = tuple(f"{name}/{i:06d}/{k}.jpg" for k in range(n))
            tasks.append(Task(name, i, make_task_id(i, keys, name), keys))
    return tasks


def write_job(
    s3,
    location: ResultsLocation,
    job_id: str,
    tasks: list[Task],
    *,
    task_size: int,
    queue_url: str,
    done: Callable[[Task], bool] = lambda t: True,
    error: Callable[[str], bool] = lambda key: False,
) -> Manifest:
    """Write the manifest (complete), the partitions index, and a result object for every
    task ``done`` says; ``error(key)`` marks failed images."""
    summaries: dict[str, list[Task]] = {}
    for t in tasks:
        summaries.setdefault(t.partition, []).append(t)
    index = "".join(
        PartitionSummary(
            partition=name,
            tasks=len(ts),
            images=sum(len(t.keys) for t in ts),
            shards=1,
        ).model_dump_json()
        + "\n"
        for name, ts in summaries.items()
    )
    s3.put_object(
        Bucket=location.bucket,
        Key=location.partitions_index_key(job_id),
        Body=gzip.compress(index.encode()),
    )
    manifest = Manifest(
        job_id=job_id,
        source_bucket=SOURCE,
        source_prefix="",
        tasks=len(tasks),
        images=sum(len(t.keys) for t in tasks),
        task_size=task_size,
        queue_url=queue_url,
        model="m",
        created_at="2026-11-24T00:00:00+00:00",
        complete=True,
        partitions=len(summaries),
        plan=location.plan_prefix(job_id),
    )
    s3.put_object(
        Bucket=location.bucket,
        Key=location.manifest_key(job_id),
        Body=manifest.model_dump_json().encode(),
    )
    for t in tasks:
        if done(t):
            write_result(s3, location, job_id, t, error=error)
    return manifest


def write_result(s3, location, job_id, task: Task, *, error=lambda key: False) -> None:
    body = dump_lines([line(k, error=error(k)) for k in task.keys])
    s3.put_object(Bucket=location.bucket, Key=location.task_key(job_id, task.task_id), Body=body)


class Counting:
    """A boto3 client that counts the calls made through it, by operation."""

    def __init__(self, real) -> None:
        self.real = real
        self.calls: dict[str, int] = {}
        self.exceptions = real.exceptions

    def __getattr__(self, name: str):
        attr = getattr(self.real, name)
        if not callable(attr) or name.startswith(("get_paginator", "meta")):
            return attr

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted

    @property
    def total(self) -> int:
        return sum(self.calls.values())
