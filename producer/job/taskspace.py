"""The plan's task space: every task of a planned job, in result-key order, from a few
numbers per partition.

A job's task ids sort by partition, then by index within the partition (``posefleet.layout``),
so the results listing ``tasks/`` walks the task space in order and any position in it can be
listed directly with ``StartAfter``. :class:`TaskSpace` maps positions to ``(partition,
index)`` and back, and says how many images each task holds (``task_size``, but the last of
each partition), from the plan's partitions index alone: one small record per partition, never
one per task. Progress (``progress.py``) samples and counts it; export (``export.py``) reads
only its tasks' objects.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from posefleet.layout import SHARD_TASKS
from posefleet.task import split_task_id, task_id_position

if TYPE_CHECKING:
    from producer.job import Job

__all__ = ["TaskSpace"]


@dataclass(frozen=True, slots=True)
class Segment:
    """One partition's tasks: ids from ``make_task_id(index, keys, partition)``, ``index`` in
    ``range(tasks)``; each holds ``task_size`` images (``large_task_size`` past the first
    shard, if set) but the last, which holds the rest."""

    partition: str
    tasks: int
    images: int
    task_size: int
    large_task_size: int | None = None

    def start_after(self, index: int) -> str:
        """A listing position just before task ``index``'s result key (relative to tasks/)."""
        return task_id_position(index, self.partition)

    def _before(self, index: int) -> int:
        """Images of the tasks before task ``index``."""
        if self.large_task_size is None or index <= SHARD_TASKS:
            return self.task_size * index
        return self.task_size * SHARD_TASKS + self.large_task_size * (index - SHARD_TASKS)

    def images_of(self, index: int) -> int:
        return (
            self._before(index + 1) - self._before(index)
            if index < self.tasks - 1
            else (self.images - self._before(index))
        )


class TaskSpace:
    """The tasks of a planned job in result-key order: partitions (segments) by id, tasks by
    index. Built from the manifest and ``plan/partitions.jsonl.gz``; holds one small record
    per partition, never per task."""

    def __init__(self, segments: Iterable[Segment]) -> None:
        self.segments = sorted((s for s in segments if s.tasks > 0), key=lambda s: s.partition)
        self.by_partition = {s.partition: s for s in self.segments}
        self.starts: list[int] = []
        total = 0
        for s in self.segments:
            self.starts.append(total)
            total += s.tasks
        self.tasks = total
        self.offsets = {
            s.partition: start for s, start in zip(self.segments, self.starts, strict=True)
        }
        self.images = sum(s.images for s in self.segments)

    @classmethod
    def of(cls, job: Job) -> TaskSpace:
        """The space of a job whose plan is complete (one GET: the partitions index)."""
        manifest = job.manifest
        if not manifest.complete:
            raise ValueError(
                f"job {manifest.job_id} is still being submitted (its plan is not complete)"
            )
        return cls(
            Segment(p.partition, p.tasks, p.images, manifest.task_size, p.large_task_size)
            for p in job.plan.partitions()
        )

    def locate(self, position: int) -> tuple[Segment, int]:
        """The segment and index of the task at ``position`` in ``range(self.tasks)``."""
        i = bisect.bisect_right(self.starts, position) - 1
        return self.segments[i], position - self.starts[i]

    def position(self, seg: Segment, index: int) -> int:
        return self.offsets[seg.partition] + index

    def images_at(self, position: int) -> int:
        seg, index = self.locate(position)
        return seg.images_of(index)

    def task_of(self, task_id: str) -> tuple[Segment, int] | None:
        """``(segment, index)`` of one of the plan's task ids; None for any other id."""
        try:
            partition, index = split_task_id(task_id)
        except ValueError:
            return None
        seg = self.by_partition.get(partition)
        return (seg, index) if seg is not None and index < seg.tasks else None

    def boundaries(self, parts: int) -> list[str]:
        """``parts + 1`` listing positions (relative to tasks/) cutting the space into ranges of
        about equal task counts; the last is None-like (the end), given as ``"\\U0010ffff"``."""
        cuts = sorted({self.tasks * i // parts for i in range(parts)})
        out = []
        for c in cuts:
            seg, index = self.locate(c)
            out.append(seg.start_after(index))
        return [*out, "\U0010ffff"]
