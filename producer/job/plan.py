"""A job's plan, written as it goes (the layout is in posefleet/layout.py's docstring).

**Task size by size.** A partition's first shard (``SHARD_TASKS`` tasks) holds small tasks
(``task_size``, 20 by default), the rest large ones (``large_task_size``, 100): a small job
keeps small tasks, so it spreads over the fleet, and a large one sends five times fewer
messages and result objects (one PUT, receive, delete and count per task). The switch depends
on the partition's keys alone, never on timing, so a re-run plans the same task ids; and every
task of a partition still has a size known from its index (``PartitionSummary``), which is
what progress and export count images by (taskspace.py).

:class:`PartitionPlanner` cuts one partition's keys into tasks (ids by
``posefleet.task.make_task_id``) and the tasks into shards of ``SHARD_TASKS``;
:class:`PlanStore` writes and reads the shards, their ``.sent`` markers, ``partition.json`` and
the index: :meth:`PlanStore.partitions` reads the index back (the task space of status and
export is built from it) and :meth:`PlanStore.tasks` a partition's planned tasks.

IAM: ``s3:PutObject``, ``s3:GetObject``, ``s3:ListBucket`` and ``s3:DeleteObject`` on the
results prefix.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from posefleet.layout import SHARD_TASKS, PartitionSummary, PlanShard, ResultsLocation
from posefleet.task import TaskMessage, plan_tasks
from producer.listing import list_range
from producer.sources import Partition

__all__ = ["PartitionPlanner", "PartitionState", "PlanStore", "Shard"]


@dataclass(slots=True)
class Shard:
    header: PlanShard
    tasks: list[TaskMessage]
    stored: bool = False  # already in S3 (a resumed submit sends it again)

    def to_bytes(self) -> bytes:
        lines = [self.header.model_dump_json()]
        lines += [
            json.dumps({"task_id": t.task_id, "keys": t.keys}, separators=(",", ":"))
            for t in self.tasks
        ]
        return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=5)

    @classmethod
    def from_bytes(cls, data: bytes, *, job_id: str, bucket: str, results: str) -> Shard:
        header, rows = parse_shard(data)
        now = time.time()
        tasks = [
            TaskMessage(
                job_id=job_id,
                task_id=task_id,
                bucket=bucket,
                keys=keys,
                results=results,
                enqueued_at=now,
            )
            for task_id, keys in rows
        ]
        return cls(header=header, tasks=tasks, stored=True)


def parse_shard(data: bytes) -> tuple[PlanShard, list[tuple[str, tuple[str, ...]]]]:
    """A stored shard (:meth:`Shard.to_bytes`): its header and its ``(task_id, keys)`` rows."""
    lines = gzip.decompress(data).decode().splitlines()
    rows = [json.loads(line) for line in lines[1:] if line]
    return PlanShard.model_validate_json(lines[0]), [(r["task_id"], tuple(r["keys"])) for r in rows]


class PartitionPlanner:
    """Keys of one partition, in order, to shards of full tasks; the last task and the last
    shard may be short. Resumes from a shard header's counts."""

    def __init__(
        self,
        *,
        part: Partition,
        job_id: str,
        bucket: str,
        task_size: int,
        results: str,
        large_task_size: int | None = None,
        next_task: int = 0,
        next_shard: int = 0,
        images_before: int = 0,
        split_at: str | None = None,
        split_hi: str | None = None,
    ) -> None:
        if task_size < 1 or (large_task_size is not None and large_task_size < 1):
            raise ValueError("task_size and large_task_size must be at least 1")
        self.part, self.job_id, self.bucket = part, job_id, bucket
        self.task_size, self.results = task_size, results
        self.large_task_size = large_task_size
        self.next_task, self.next_shard, self.images_before = next_task, next_shard, images_before
        self.split_at, self.split_hi = split_at, split_hi
        self._pending: list[str] = []

    def _size(self) -> int:
        """Keys per task of the next shard: small in the first, large after."""
        if self.large_task_size is not None and self.next_task >= SHARD_TASKS:
            return self.large_task_size
        return self.task_size

    def _shard(self, keys: list[str]) -> Shard:
        tasks = list(
            plan_tasks(
                job_id=self.job_id,
                bucket=self.bucket,
                keys=keys,
                task_size=self._size(),
                results=self.results,
                enqueued_at=time.time(),
                partition=self.part.id,
                first_index=self.next_task,
            )
        )
        header = PlanShard(
            partition=self.part.id,
            shard=self.next_shard,
            first_task=self.next_task,
            tasks=len(tasks),
            images=len(keys),
            images_before=self.images_before,
            last_key=keys[-1],
            lo=self.part.lo,
            hi=self.part.hi,
            depth=self.part.depth,
            split_at=self.split_at,
            split_hi=self.split_hi,
            source=self.part.source,
        )
        self.next_task += len(tasks)
        self.next_shard += 1
        self.images_before += len(keys)
        return Shard(header=header, tasks=tasks)

    def add(self, keys: Iterable[str]) -> Iterator[Shard]:
        self._pending.extend(keys)
        while len(self._pending) >= (per_shard := self._size() * SHARD_TASKS):
            head, self._pending = self._pending[:per_shard], self._pending[per_shard:]
            yield self._shard(head)

    def finish(self) -> Iterator[Shard]:
        if self._pending:
            keys, self._pending = self._pending, []
            yield self._shard(keys)

    def summary(self) -> PartitionSummary:
        return PartitionSummary(
            partition=self.part.id,
            tasks=self.next_task,
            images=self.images_before,
            shards=self.next_shard,
            large_task_size=self.large_task_size if self.next_task > SHARD_TASKS else None,
            lo=self.part.lo,
            hi=self.part.hi,
            depth=self.part.depth,
            split_at=self.split_at,
            split_hi=self.split_hi,
            source=self.part.source,
        )


@dataclass(slots=True)
class PartitionState:
    """What an earlier run left of a partition: its shards, which were sent, whether done."""

    shards: set[int] = field(default_factory=set)
    sent: set[int] = field(default_factory=set)
    part: set[int] = field(default_factory=set)  # shards sent in part (a ``.part`` marker)
    complete: bool = False


class PlanStore:
    """The plan objects of one job under its results location."""

    def __init__(self, s3: Any, location: ResultsLocation, job_id: str) -> None:
        self.s3, self.location, self.job_id = s3, location, job_id
        self.bucket = location.bucket

    def put_shard(self, shard: Shard) -> None:
        h = shard.header
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.location.shard_key(self.job_id, h.partition, h.shard),
            Body=shard.to_bytes(),
            ContentType="application/gzip",
        )

    def mark_sent(self, partition: str, shard: int) -> None:
        key = self.location.shard_sent_key(self.job_id, partition, shard)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"")

    def mark_part_sent(self, partition: str, shard: int, through: int) -> None:
        """The shard's tasks up to index ``through`` are on the queue (a send stopped)."""
        key = self.location.shard_part_key(self.job_id, partition, shard)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps({"sent_through": through}))

    def sent_through(self, partition: str, shard: int) -> int:
        key = self.location.shard_part_key(self.job_id, partition, shard)
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return int(json.loads(body)["sent_through"])

    def put_partition(self, summary: PartitionSummary) -> None:
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.location.partition_key(self.job_id, summary.partition),
            Body=summary.model_dump_json().encode(),
            ContentType="application/json",
        )

    def put_index(self, summaries: Iterable[PartitionSummary]) -> int:
        lines = [s.model_dump_json() for s in summaries if s.tasks]
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.location.partitions_index_key(self.job_id),
            Body=gzip.compress(("\n".join(lines) + "\n").encode() if lines else b""),
            ContentType="application/gzip",
        )
        return len(lines)

    def get_shard(self, partition: str, shard: int, *, bucket: str, results: str) -> Shard:
        key = self.location.shard_key(self.job_id, partition, shard)
        data = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return Shard.from_bytes(data, job_id=self.job_id, bucket=bucket, results=results)

    def get_partition(self, partition: str) -> PartitionSummary:
        key = self.location.partition_key(self.job_id, partition)
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return PartitionSummary.model_validate_json(body)

    def scan(self) -> dict[str, PartitionState]:
        """Every partition an earlier run left, from one listing of the plan prefix."""
        states: dict[str, PartitionState] = {}
        prefix = self.location.plan_prefix(self.job_id)
        for keys, _ in list_range(self.s3, self.bucket, prefix):
            for key in keys:
                found = self.location.plan_object_of(self.job_id, key)
                if found is None:
                    continue
                partition, kind, shard = found
                state = states.setdefault(partition, PartitionState())
                if kind == "partition":
                    state.complete = True
                elif kind == "shard":
                    state.shards.add(shard)  # type: ignore[arg-type]
                elif kind == "part":
                    state.part.add(shard)  # type: ignore[arg-type]
                else:
                    state.sent.add(shard)  # type: ignore[arg-type]
        return states

    def clear(self) -> int:
        """Delete the plan (a finished job submitted again is planned afresh)."""
        prefix = self.location.plan_prefix(self.job_id)
        deleted = 0
        for keys, _ in list_range(self.s3, self.bucket, prefix):
            if keys:
                self.s3.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys]}
                )
                deleted += len(keys)
        return deleted

    def partitions(self) -> list[PartitionSummary]:
        """The partitions of a complete plan (``plan/partitions.jsonl.gz``), with their task and
        image counts; raises ``s3.exceptions.NoSuchKey`` if the plan is not complete."""
        key = self.location.partitions_index_key(self.job_id)
        data = gzip.decompress(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        return [PartitionSummary.model_validate_json(line) for line in data.splitlines() if line]

    def tasks(
        self, partition: PartitionSummary, *, threads: int = 8
    ) -> Iterator[tuple[str, list[str]]]:
        """``(task_id, keys)`` of one planned partition, in task order, shards read in
        parallel."""

        def read(n: int) -> list[tuple[str, list[str]]]:
            key = self.location.shard_key(self.job_id, partition.partition, n)
            _, rows = parse_shard(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            return [(task_id, list(keys)) for task_id, keys in rows]

        with ThreadPoolExecutor(threads) as pool:
            for rows in pool.map(read, range(partition.shards)):
                yield from rows
