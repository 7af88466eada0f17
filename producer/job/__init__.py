"""A job: one handle, one module per concern.

    Job (here)     where the job lives (S3 client, results location, job id); reads its
                   manifest and its plan's task space once, when first needed
    record.py      the job's record in S3: manifest.json (read, write, clear errors)
    plan.py        the plan written as submit goes: shards, markers, partitions index
    submit.py      submit: the source streamed through planning to SQS, resumable
    taskspace.py   the plan's tasks in result-key order, from a few numbers per partition
    progress.py    progress from a bounded number of calls: exact, sampled; failed images
    follow.py      the live view, poll after poll (``status``, ``--wait``)
    export.py      every result line streamed; CSV, JSON Lines, Parquet

Every command takes a :class:`Job` rather than ``(s3, location, job_id)``:

    job = Job.open(s3, location, "nov")      # JobNotFound if there is no such job
    job.progress().images_done
    for line in job.results(): ...
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from posefleet.layout import Manifest, ResultsLocation, check_id
from posefleet.result import ResultLine
from producer.job.export import READ_THREADS, iter_results
from producer.job.plan import PlanStore
from producer.job.progress import WINDOWS, JobProgress, read_progress
from producer.job.record import JobNotFound, read_manifest
from producer.job.taskspace import TaskSpace
from producer.listing import list_range

__all__ = ["Job", "JobNotFound"]


class Job:
    """One job under a results location. Nothing is read until needed; the manifest and the
    task space are read once (:meth:`reload` reads the manifest again)."""

    def __init__(
        self,
        *,
        s3: Any,
        location: ResultsLocation,
        job_id: str,
        manifest: Manifest | None = None,
    ) -> None:
        self.s3, self.location = s3, location
        self.job_id = check_id(job_id, "job id")
        self._manifest = manifest
        self._space: TaskSpace | None = None

    @classmethod
    def open(cls, s3: Any, location: ResultsLocation, job_id: str) -> Job:
        """The job, its manifest read: raises :class:`JobNotFound` or
        :class:`ManifestUnreadable` at once, rather than at first use."""
        job = cls(s3=s3, location=location, job_id=job_id)
        job.reload()
        return job

    # -- what it is ---------------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = read_manifest(self.s3, self.location, self.job_id)
        return self._manifest

    def reload(self) -> Manifest:
        self._manifest = read_manifest(self.s3, self.location, self.job_id)
        return self._manifest

    @property
    def plan(self) -> PlanStore:
        return PlanStore(self.s3, self.location, self.job_id)

    @property
    def space(self) -> TaskSpace:
        """The plan's task space (one GET, once); the plan must be complete."""
        if self._space is None:
            self._space = TaskSpace.of(self)
        return self._space

    @property
    def results_uri(self) -> str:
        return f"{self.location.uri}/{self.job_id}/"

    @property
    def manifest_uri(self) -> str:
        return f"s3://{self.location.bucket}/{self.location.manifest_key(self.job_id)}"

    # -- what it has done ---------------------------------------------------------------------
    def result_keys(
        self, *, after: str | None = None, until: str | None = None
    ) -> Iterator[list[str]]:
        """Pages of result keys under ``tasks/``, from just after the position ``after`` to
        ``until`` (both relative to ``tasks/``; None: the start, the end)."""
        head = self.location.tasks_prefix(self.job_id)
        for keys, _ in list_range(
            self.s3,
            self.location.bucket,
            head,
            after=head + after if after else None,
            until=head + until if until else None,
        ):
            yield keys

    def progress(
        self, *, exact: bool = False, windows: int = WINDOWS, rng: random.Random | None = None
    ) -> JobProgress:
        return read_progress(self, exact=exact, windows=windows, rng=rng)

    def results(self, *, threads: int = READ_THREADS) -> Iterator[ResultLine]:
        return iter_results(self, threads=threads)
