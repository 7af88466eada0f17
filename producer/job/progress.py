"""A job's progress from a bounded number of calls, at any size; and its failed images.

A job's task ids sort by partition, then by index (``taskspace.py``), so a position in the task
space can be listed directly with ``StartAfter``. A job of at most :data:`EXACT_TASKS` tasks is
counted exactly (every result key, at most a few LIST calls). A larger one is *sampled*:
:data:`WINDOWS` windows of at most 1,000 consecutive tasks, one per equal stratum of the task
space at a random offset, are listed concurrently (one LIST each), and the fraction of their
tasks that have a result estimates the job's. That is a stratified sample: unbiased, and within
one stratum's share (1/WINDOWS of the job) of the truth however the finished tasks cluster.
:func:`count_done` gives the exact figure with a parallel listing over key ranges (a thread
pool, counts only, flat memory); ``status --exact`` and a live view that says "done" use it.

:class:`FailureSample` counts failed images: exactly while every finished task's object can be
read once (small jobs), else from a few finished tasks' objects per poll.

IAM: ``s3:ListBucket`` and ``s3:GetObject`` on the results prefix.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from posefleet.result import load_lines

if TYPE_CHECKING:
    from producer.job import Job

__all__ = [
    "EXACT_TASKS",
    "WINDOWS",
    "FailureSample",
    "JobProgress",
    "read_progress",
]

EXACT_TASKS = 5000  # jobs of at most this many tasks are counted exactly (<= 5 LIST calls)
WINDOWS = 10  # sampled windows (one LIST call each) for the live view of a larger job
PAGE = 1000
MIN_FAILURE_BASIS = 10  # images read before a failed count is extrapolated from them


@dataclass(frozen=True, slots=True)
class JobProgress:
    job_id: str
    tasks_total: int
    tasks_done: int
    images_total: int
    images_done: int
    done_ids: frozenset[str] = frozenset()  # exact small jobs only
    exact: bool = True
    sampled_tasks: int = 0  # tasks looked at by the sample (estimates only)
    done_keys: tuple[str, ...] = ()  # result keys seen in the sample, for failure sampling
    calls: int = 0  # S3 calls this reading took (manifest and plan index not counted)

    @property
    def tasks_remaining(self) -> int:
        return self.tasks_total - self.tasks_done

    @property
    def complete(self) -> bool:
        """Every task has a result, by an exact count (an estimate never completes a job)."""
        return self.exact and self.tasks_done >= self.tasks_total

    @property
    def looks_done(self) -> bool:
        return self.tasks_done >= self.tasks_total


def count_done(job: Job, *, threads: int = 32) -> tuple[int, int, int]:
    """Exact ``(tasks_done, images_done, calls)``: the results listed in parallel over key
    ranges of about equal task counts, counted as they stream (memory flat)."""
    space = job.space
    parts = max(1, min(threads * 4, -(-space.tasks // (PAGE * 8))))
    cuts = space.boundaries(parts)

    def one(i: int) -> tuple[int, int, int]:
        tasks = images = calls = 0
        until = None if i + 1 == len(cuts) - 1 else cuts[i + 1]
        for keys in job.result_keys(after=cuts[i], until=until):
            calls += 1
            for key in keys:
                found = space.task_of(job.location.task_id_of(job.job_id, key) or "")
                if found:
                    tasks += 1
                    images += found[0].images_of(found[1])
        return tasks, images, calls

    with ThreadPoolExecutor(min(threads, len(cuts) - 1)) as pool:
        counted = list(pool.map(one, range(len(cuts) - 1)))
    return tuple(sum(c[i] for c in counted) for i in range(3))  # type: ignore[return-value]


def _exact_small(job: Job) -> JobProgress:
    space = job.space
    done: set[str] = set()
    images = calls = 0
    for keys in job.result_keys():
        calls += 1
        for key in keys:
            task_id = job.location.task_id_of(job.job_id, key)
            found = space.task_of(task_id or "")
            if found and task_id not in done:
                done.add(task_id)  # type: ignore[arg-type]
                images += found[0].images_of(found[1])
    return JobProgress(
        job_id=job.job_id,
        tasks_total=space.tasks,
        tasks_done=len(done),
        images_total=space.images,
        images_done=images,
        done_ids=frozenset(done),
        calls=calls,
    )


def _sampled(job: Job, *, windows: int, rng: random.Random) -> JobProgress:
    space, location = job.space, job.location
    head = location.tasks_prefix(job.job_id)
    stratum = space.tasks / windows

    def window(j: int) -> tuple[int, int, int, int, list[str]]:
        # positions [start, start + width) of the task space, across partitions if need be:
        # at most `width` results lie there, so one page of `width` keys holds them all
        width = min(PAGE, max(1, int(stratum)))
        start = min(int((j + rng.random()) * stratum), space.tasks - width)
        seg, index = space.locate(start)
        page = job.s3.list_objects_v2(
            Bucket=location.bucket,
            Prefix=head,
            StartAfter=head + seg.start_after(index),
            MaxKeys=width,
        )
        in_window = sum(space.images_at(p) for p in range(start, start + width))
        done = done_images = 0
        keys = []
        for obj in page.get("Contents", ()):
            found = space.task_of(location.task_id_of(job.job_id, obj["Key"]) or "")
            if found and start <= space.position(*found) < start + width:
                done += 1
                done_images += found[0].images_of(found[1])
                keys.append(obj["Key"])
        return width, done, in_window, done_images, keys

    with ThreadPoolExecutor(windows) as pool:
        got = list(pool.map(window, range(windows)))
    looked = sum(g[0] for g in got)
    done = sum(g[1] for g in got)
    images_looked = sum(g[2] for g in got) or 1
    images_done = sum(g[3] for g in got)
    tasks_done = round(space.tasks * done / looked) if looked else 0
    if done < looked:  # a task seen missing: the estimate must not say "all done"
        tasks_done = min(tasks_done, space.tasks - 1)
    return JobProgress(
        job_id=job.job_id,
        tasks_total=space.tasks,
        tasks_done=tasks_done,
        images_total=space.images,
        images_done=min(space.images, round(space.images * images_done / images_looked)),
        exact=False,
        sampled_tasks=looked,
        done_keys=tuple(k for g in got for k in g[4]),
        calls=windows,
    )


def read_progress(
    job: Job,
    *,
    exact: bool = False,
    windows: int = WINDOWS,
    rng: random.Random | None = None,
) -> JobProgress:
    """The job's progress: exact for a job of at most :data:`EXACT_TASKS` tasks or when
    ``exact``, else estimated from ``windows`` sampled LIST calls (see the module doc)."""
    space = job.space
    if space.tasks <= EXACT_TASKS:
        return _exact_small(job)
    if exact:
        tasks, images, calls = count_done(job)
        return JobProgress(
            job_id=job.job_id,
            tasks_total=space.tasks,
            tasks_done=tasks,
            images_total=space.images,
            images_done=images,
            calls=calls,
        )
    return _sampled(job, windows=windows, rng=rng or random.Random())


class FailureSample:
    """Failed images among the finished tasks, from their result objects.

    Exact while every finished task can be read once (small jobs: :meth:`exact_count`);
    otherwise a few finished tasks' objects are read per poll (:meth:`sample`), accumulated
    across polls, and :meth:`estimate` is their error rate times the images done."""

    def __init__(self, job: Job, *, per_poll: int = 4) -> None:
        self.job, self.per_poll = job, per_poll
        self.read: dict[str, tuple[int, int]] = {}  # result key -> (images, errors)

    def _read(self, key: str) -> None:
        body = self.job.s3.get_object(Bucket=self.job.location.bucket, Key=key)["Body"].read()
        lines = load_lines(body)
        self.read[key] = (len(lines), sum(1 for line in lines if line.status == "error"))

    def exact_count(self, done_ids: Iterable[str]) -> int:
        """Failed images of these finished tasks, each task's object read once ever."""
        keys = [self.job.location.task_key(self.job.job_id, t) for t in done_ids]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self._read, [k for k in keys if k not in self.read]))
        return sum(self.read[k][1] for k in keys)

    def sample(self, done_keys: Iterable[str], rng: random.Random | None = None) -> None:
        """Read up to ``per_poll`` finished tasks' objects not read before."""
        unseen = sorted(set(done_keys) - self.read.keys())
        chosen = (rng or random.Random()).sample(unseen, min(self.per_poll, len(unseen)))
        if chosen:
            with ThreadPoolExecutor(len(chosen)) as pool:
                list(pool.map(self._read, chosen))

    def estimate(self, images_done: int) -> int | None:
        """None until :data:`MIN_FAILURE_BASIS` images have been read: a rate from a handful
        of images (one-image tasks) would say more than it knows."""
        images = self.sampled_images
        if images < MIN_FAILURE_BASIS:
            return None
        errors = sum(e for _, e in self.read.values())
        return round(images_done * errors / images)

    @property
    def sampled_images(self) -> int:
        return sum(n for n, _ in self.read.values())
