"""Results layout: where a job's objects live. Keys derive from job and task ids alone.

    <prefix>/<job>/manifest.json                          the job record (:class:`Manifest`)
    <prefix>/<job>/tasks/<task>.jsonl                     one per task, written by the worker
    <prefix>/<job>/plan/<partition>/<shard>.jsonl.gz      the plan, written as submit goes
    <prefix>/<job>/plan/<partition>/<shard>.sent          marker: every task of the shard is on SQS
    <prefix>/<job>/plan/<partition>/<shard>.part          {"sent_through": i}: a stopped send
    <prefix>/<job>/plan/<partition>/partition.json        the partition is fully planned
    <prefix>/<job>/plan/partitions.jsonl.gz               index of every partition, once complete
    <prefix>/live/<bucket>/<key>.json                     one uploaded photo's result line (live)

A retried or duplicated task writes the same key with the same lines, so a job's merged
results hold every image exactly once.

**Live results.** A photo labelled because it was uploaded (an S3 event, the live lane) has its
result line at a key derived from its input alone (:meth:`ResultsLocation.live_key`), so an
application finds one photo's label with one GET, and a re-upload overwrites its own result. So
that no job's objects can mix with them, ``live`` is not a job id.

**The plan.** ``python -m producer`` streams keys from its source, cuts them into
*partitions* (a range of the listing's key space, one S3 Inventory data file, or one keys
file; see ``producer/sources.py``), numbers the tasks within each partition, and writes them
as it goes, in *shards* of at most :data:`SHARD_TASKS` tasks:

* ``<shard>`` is a 6-digit sequence number within the partition (``000000``, ``000001``...).
* A shard object is gzipped JSON Lines: first line a :class:`PlanShard` header, then one
  ``{"task_id": ..., "keys": [...]}`` line per task, in task order.
* A shard is written *before* its tasks are sent; ``<shard>.sent`` (empty) is written after
  every one of them is on the queue. A shard without its marker is sent again on resume,
  but for the tasks up to index ``sent_through`` of its ``<shard>.part`` (written when a
  send is stopped between batches, Ctrl-C).
* ``partition.json`` (a :class:`PartitionSummary`) is written when the partition holds no more
  tasks to plan; ``plan/partitions.jsonl.gz`` (one :class:`PartitionSummary` a line, only
  partitions with at least one task) is written when the whole plan is done, just before the
  manifest says ``complete``.

**Task ids** (``posefleet.task.make_task_id``) are ``<partition>-<index:09d>-<digest>``: every
task of a partition starts with ``<partition>-``, its index counts from 0 within the partition,
so a partition's results are the keys under ``tasks/<partition>-`` and a range of indexes can
be listed with ``StartAfter``. Every task of a partition holds ``task_size`` images except its
last one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SHARD_TASKS",
    "Manifest",
    "PartitionSummary",
    "PlanShard",
    "ResultsLocation",
    "check_id",
]

LIVE = "live"  # the key segment of live results; reserved, not a job id
SHARD_TASKS = 100  # tasks per plan shard: what a resumed submit may send twice, per sender

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")


def check_id(value: str, what: str) -> str:
    """Job and task ids become key segments: letters, digits, ``._=-``, at most 128 chars."""
    if not _ID.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be 1-128 characters of letters, digits, '.', '_', '=' or '-'"
            " and start with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class ResultsLocation:
    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> ResultsLocation:
        if not uri.startswith("s3://"):
            raise ValueError(f"results location must look like s3://bucket/prefix, got {uri!r}")
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise ValueError(f"results location {uri!r} has no bucket")
        return cls(bucket=bucket, prefix=prefix.strip("/"))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _join(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def job_prefix(self, job_id: str) -> str:
        if job_id == LIVE:
            raise ValueError(f"job id {LIVE!r} is reserved for live results")
        return self._join(check_id(job_id, "job id")) + "/"

    def tasks_prefix(self, job_id: str) -> str:
        return self.job_prefix(job_id) + "tasks/"

    def task_key(self, job_id: str, task_id: str) -> str:
        return self.tasks_prefix(job_id) + check_id(task_id, "task id") + ".jsonl"

    def live_prefix(self) -> str:
        return self._join(LIVE) + "/"

    def live_key(self, bucket: str, key: str) -> str:
        """``<prefix>/live/<bucket>/<key>.json``: one uploaded photo's result, from its input
        alone. A key too long for that (S3 keys stop at 1,024 bytes) is named by its digest,
        ``<prefix>/live/<bucket>/_digest/<sha256>.json``."""
        live = self.live_prefix() + bucket + "/"
        name = f"{live}{key}.json"
        if len(name.encode()) <= 1024:
            return name
        return f"{live}_digest/{hashlib.sha256(key.encode()).hexdigest()}.json"

    def manifest_key(self, job_id: str) -> str:
        return self.job_prefix(job_id) + "manifest.json"

    def plan_prefix(self, job_id: str) -> str:
        return self.job_prefix(job_id) + "plan/"

    def partition_prefix(self, job_id: str, partition: str) -> str:
        return self.plan_prefix(job_id) + check_id(partition, "partition id") + "/"

    def shard_key(self, job_id: str, partition: str, shard: int) -> str:
        return self.partition_prefix(job_id, partition) + f"{shard:06d}.jsonl.gz"

    def shard_sent_key(self, job_id: str, partition: str, shard: int) -> str:
        return self.partition_prefix(job_id, partition) + f"{shard:06d}.sent"

    def shard_part_key(self, job_id: str, partition: str, shard: int) -> str:
        return self.partition_prefix(job_id, partition) + f"{shard:06d}.part"

    def partition_key(self, job_id: str, partition: str) -> str:
        return self.partition_prefix(job_id, partition) + "partition.json"

    def partitions_index_key(self, job_id: str) -> str:
        return self.plan_prefix(job_id) + "partitions.jsonl.gz"

    def plan_object_of(self, job_id: str, key: str) -> tuple[str, str, int | None] | None:
        """``(partition, kind, shard)`` of a plan object's key: kind ``shard``, ``sent``,
        ``part`` or ``partition`` (shard None); None for other keys (the index, results, the
        manifest)."""
        head = self.plan_prefix(job_id)
        if not key.startswith(head):
            return None
        partition, _, name = key[len(head) :].partition("/")
        if not name or "/" in name:
            return None
        if name == "partition.json":
            return partition, "partition", None
        stem, _, ext = name.partition(".")
        kind = {"jsonl.gz": "shard", "sent": "sent", "part": "part"}.get(ext)
        if kind is None or not stem.isdigit():
            return None
        return partition, kind, int(stem)

    def task_id_of(self, job_id: str, key: str) -> str | None:
        """The task id a result key belongs to, or None if the key is not a task result."""
        head = self.tasks_prefix(job_id)
        if key.startswith(head) and key.endswith(".jsonl"):
            return key[len(head) : -len(".jsonl")]
        return None


class PlanShard(BaseModel):
    """First line of a plan shard: where it sits in its partition, and how to resume after it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partition: str
    shard: int = Field(ge=0, description="Sequence number within the partition, from 0.")
    first_task: int = Field(ge=0, description="Index (within the partition) of its first task.")
    tasks: int = Field(ge=0)
    images: int = Field(ge=0)
    images_before: int = Field(
        ge=0, description="Images of the partition's earlier shards (resume skips this many)."
    )
    last_key: str | None = Field(description="Last key of its last task: listing resumes after.")
    lo: str | None = Field(default=None, description="Listing range (lo, hi]; None is open.")
    hi: str | None = None
    depth: int = 0
    split_at: str | None = Field(
        default=None,
        description="Listing ranges only: the partition stopped at this key and the rest of "
        "(lo, hi] went to child partitions (producer/sources.py).",
    )
    split_hi: str | None = Field(
        default=None,
        description="With split_at: the children are cut from (split_at, split_hi] (a probe "
        "found nothing beyond it), plus (split_hi, hi] when it differs from hi.",
    )
    source: str | None = Field(
        default=None, description="Inventory data file or keys file the partition reads."
    )


class PartitionSummary(BaseModel):
    """``plan/<partition>/partition.json`` and one line of ``plan/partitions.jsonl.gz``.

    Its task ids are ``f"{partition}-{i:09d}-<digest>"`` for ``i`` in ``range(tasks)``; task
    ``i`` holds the manifest's ``task_size`` images while ``i < SHARD_TASKS`` (its first shard)
    or without ``large_task_size``, else ``large_task_size``; the last holds the rest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partition: str
    tasks: int = Field(ge=0)
    images: int = Field(ge=0)
    shards: int = Field(ge=0)
    large_task_size: int | None = Field(
        default=None, ge=1, description="Images of each task past the first shard, if larger."
    )
    lo: str | None = None
    hi: str | None = None
    depth: int = 0
    split_at: str | None = None
    split_hi: str | None = None
    source: str | None = None


class Manifest(BaseModel):
    """``<prefix>/<job>/manifest.json``: what a job was asked to do, counts and pointers.

    Version 2 holds no task ids: ``complete`` is false while ``python -m producer`` is still
    planning and sending (``tasks``, ``images`` and ``tasks_sent`` then count what is planned
    and sent so far, rewritten every few seconds) and true once the plan is done and every task
    sent; then ``tasks`` and ``images`` are the job's totals and ``partitions`` counts the lines
    of ``plan/partitions.jsonl.gz`` (``plan`` is the plan's key prefix). Version 1 (every task
    id listed in the manifest) was written for a few hours before version 2 and is not read.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[2] = 2
    job_id: str
    source_bucket: str
    source_prefix: str
    source: str = Field(
        default="",
        description="What was enumerated: s3://bucket/prefix, inventory:s3://.../manifest.json, "
        "or keys:<file or s3 URI>. A resumed submit must name the same source.",
    )
    tasks: int
    images: int
    task_size: int
    large_task_size: int | None = Field(
        default=None, description="Tasks past each partition's first shard (PartitionSummary)."
    )
    queue_url: str
    model: str
    created_at: str
    updated_at: str | None = None
    complete: bool = True
    tasks_sent: int | None = None
    partitions: int | None = None
    plan: str | None = Field(default=None, description="Key prefix of the plan objects.")
