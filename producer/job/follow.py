"""Following a job until every task has a result: a progress bar on a terminal, plain lines
otherwise, and a clear failure when tasks ended in the dead-letter queue.

Each poll costs a bounded number of calls whatever the job's size (``progress.py``): a
job of at most ``EXACT_TASKS`` tasks is listed exactly and each finished task's object is read
once (failed images exact); a larger one is sampled (``WINDOWS`` LIST calls), a few finished
tasks' objects are read per poll to estimate the failed images, and the queue's and the
dead-letter queue's depths are read (two calls). When the estimate says every task is done, or
the queue has been empty a while, a parallel listing confirms it exactly. The poll interval
grows with the job: 2 s up to ``EXACT_TASKS`` tasks, then with the square root of the size, at
most 30 s.

With a job record (posefleet/job_record.py), each poll also reads it (one call): a job that
reads ``cancelled`` or ``failed`` stops the follow (:class:`JobEnded`), since no more of its
tasks will get a result.

IAM: ``sqs:GetQueueAttributes`` (and ``sqs:GetQueueUrl``) on the tasks queue and its
dead-letter queue.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

from tqdm import tqdm

from posefleet.deadletter import dead_letter_url_of
from posefleet.job_table import JobTable
from producer.job import Job
from producer.job.progress import EXACT_TASKS, FailureSample, JobProgress

__all__ = ["Follower", "JobEnded", "JobStalled", "follow", "poll_interval", "queue_depths"]

CONFIRM_EVERY = 5  # polls with an empty queue between exact confirmations


class JobStalled(RuntimeError):
    """Tasks have no result, nothing is queued for them, and the dead-letter queue holds some."""


class JobEnded(RuntimeError):
    """The job's record says it was cancelled or failed: the rest of its tasks will not come."""


DEPTH = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]


def _depths(attrs: dict[str, str]) -> tuple[int, int]:
    return int(attrs.get(DEPTH[0], 0)), int(attrs.get(DEPTH[1], 0))


def queue_depth(sqs: Any, url: str) -> int:
    """Visible plus in-flight messages (approximate, as SQS reports them)."""
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=DEPTH).get("Attributes", {})
    return sum(_depths(attrs))


def queue_depths(sqs: Any, url: str) -> tuple[int, int, int]:
    """Queued and in-flight messages of the queue, and its dead-letter queue's depth (0 without
    one): three calls at most."""
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy", *DEPTH]).get(
        "Attributes", {}
    )
    dlq = dead_letter_url_of(sqs, attrs)
    return (*_depths(attrs), queue_depth(sqs, dlq) if dlq else 0)


def poll_interval(tasks: int) -> float:
    """Seconds between polls for a job of ``tasks`` tasks: 2 s, growing past EXACT_TASKS."""
    return min(30.0, 2.0 * math.sqrt(max(1.0, tasks / EXACT_TASKS)))


@dataclass(frozen=True, slots=True)
class LiveView:
    progress: JobProgress
    failed: int | None  # None: too few images read yet to estimate it
    failed_exact: bool
    failed_basis: int  # images whose results the failed count rests on
    queued: int  # visible messages on the tasks queue (all jobs on it)
    in_flight: int
    dead: int  # messages in the dead-letter queue (0 without one)
    rate: float  # images per second since following began (0.0 before two polls)
    eta: float | None

    def as_dict(self) -> dict[str, Any]:
        p = self.progress
        return {
            "job_id": p.job_id,
            "tasks_done": p.tasks_done,
            "tasks_total": p.tasks_total,
            "tasks_remaining": p.tasks_remaining,
            "images_done": p.images_done,
            "images_total": p.images_total,
            "failed": self.failed,
            "complete": p.complete,
            "exact": p.exact,
            "failed_exact": self.failed_exact,
            "failed_basis_images": self.failed_basis,
            "sampled_tasks": p.sampled_tasks,
            "queued": self.queued,
            "in_flight": self.in_flight,
            "dead_letter": self.dead,
            "images_per_s": round(self.rate, 1),
            "eta_s": None if self.eta is None else round(self.eta),
        }

    def line(self) -> str:
        p = self.progress
        approx = "" if p.exact else "~"
        if self.failed_exact:
            failed = f"{self.failed} failed"
        elif self.failed is None:
            failed = f"? failed, {self.failed_basis} images read so far"
        else:
            failed = f"~{self.failed} failed, from {self.failed_basis} images read"
        sample = "" if p.exact else f", estimated from {p.sampled_tasks} tasks"
        eta = f"{self.eta:.0f}s" if self.eta is not None else "?"
        return (
            f"job {p.job_id}: {approx}{p.images_done}/{p.images_total} images ({failed}), "
            f"{approx}{p.tasks_remaining} tasks remaining{sample}, {self.rate:.1f} img/s, "
            f"eta {eta}, dead-letter {self.dead}"
        )


class Follower:
    """One job's live view, poll after poll: the plan's task space is read once, the
    dead-letter queue found once, the failure sample accumulates."""

    def __init__(
        self,
        job: Job,
        sqs: Any,
        *,
        rng: random.Random | None = None,
        failures_per_poll: int = 4,
    ) -> None:
        self.job, self.sqs = job, sqs
        self.queue_url = job.manifest.queue_url
        self.rng = rng or random.Random()
        attrs = sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy", *DEPTH]
        ).get("Attributes", {})
        self.dlq = dead_letter_url_of(sqs, attrs)
        self._first_depths: tuple[int, int] | None = _depths(attrs)
        self.space = job.space
        self.failures = FailureSample(job, per_poll=failures_per_poll)
        self.started = time.monotonic()
        self.first: JobProgress | None = None
        self.empty_polls = 0

    def depths(self) -> tuple[int, int, int]:
        if self._first_depths is not None:
            queued, in_flight = self._first_depths
            self._first_depths = None
        else:
            queued, in_flight = _depths(
                self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=DEPTH).get(
                    "Attributes", {}
                )
            )
        dead = queue_depth(self.sqs, self.dlq) if self.dlq else 0
        return queued, in_flight, dead

    def poll(self, *, exact: bool = False) -> LiveView:
        """One look at the job; ``exact`` counts every result of a large job too."""
        progress = self.job.progress(rng=self.rng)
        queued, in_flight, dead = self.depths()
        self.empty_polls = self.empty_polls + 1 if queued + in_flight == 0 else 0
        if progress.exact:  # a small job: every finished task read once
            failed, failed_exact = self.failures.exact_count(progress.done_ids), True
        else:
            self.failures.sample(progress.done_keys, self.rng)
            if exact or progress.looks_done or self.empty_polls % CONFIRM_EVERY == 1:
                # the estimate says done, or nothing is left on the queue: count exactly
                progress = self.job.progress(exact=True)
            failed, failed_exact = self.failures.estimate(progress.images_done), False
        if self.first is None:
            self.first = progress
        elapsed = time.monotonic() - self.started
        gained = progress.images_done - self.first.images_done
        rate = gained / elapsed if elapsed > 0 and gained > 0 else 0.0
        remaining = progress.images_total - progress.images_done
        return LiveView(
            progress=progress,
            failed=failed,
            failed_exact=failed_exact,
            failed_basis=progress.images_done if failed_exact else self.failures.sampled_images,
            queued=queued,
            in_flight=in_flight,
            dead=dead,
            rate=rate,
            eta=remaining / rate if rate > 0 else None,
        )


def _planned(job: Job, stream: IO[str], interval: float) -> None:
    """Returns once the job's plan is complete (a submit may still be running)."""
    said = False
    manifest = job.manifest
    while not manifest.complete:
        if not said:
            print(
                f"job {manifest.job_id}: still being submitted "
                f"({manifest.tasks_sent or 0} of {manifest.tasks} tasks planned so far sent)",
                file=stream,
                flush=True,
            )
            said = True
        time.sleep(interval)
        manifest = job.reload()


def follow(
    job: Job,
    sqs: Any,
    *,
    interval: float | None = None,
    timeout: float | None = None,
    stream: IO[str] | None = None,
    records: JobTable | None = None,
) -> JobProgress:
    """Poll until the job is complete; raises :class:`JobStalled`, :class:`JobEnded` or
    ``TimeoutError``.

    ``interval`` defaults to :func:`poll_interval` of the job's size."""
    stream = stream or sys.stderr
    started = time.monotonic()
    _planned(job, stream, interval or 2.0)
    manifest = job.manifest
    follower = Follower(job, sqs)
    interval = interval if interval is not None else poll_interval(follower.space.tasks)
    if follower.dlq is None:
        print(
            f"job {manifest.job_id}: {manifest.queue_url} has no dead-letter queue "
            "(no RedrivePolicy): tasks that keep failing are retried until they expire",
            file=stream,
            flush=True,
        )
    interactive = stream.isatty()
    bar = tqdm(
        total=follower.space.images,
        unit="img",
        desc=f"job {manifest.job_id}",
        file=stream,
        disable=not interactive,
        dynamic_ncols=True,
    )
    stalled_polls = 0
    try:
        while True:
            view = follower.poll()
            progress = view.progress
            bar.update(progress.images_done - bar.n)
            bar.set_postfix(
                tasks=f"{progress.tasks_done}/{progress.tasks_total}",
                failed="?" if view.failed is None else view.failed,
                dead=view.dead,
                refresh=False,
            )
            if not interactive:
                print(view.line(), file=stream, flush=True)
            if progress.complete:
                return progress
            record = records.read(job.job_id) if records is not None else None
            if record is not None and record.state in ("cancelled", "failed"):
                raise JobEnded(
                    f"job {job.job_id} was {record.state}"
                    + (f" ({record.reason})" if record.reason else "")
                    + f": {progress.tasks_remaining} of its tasks have no result"
                )
            stalled_polls = (
                stalled_polls + 1 if view.dead and view.queued + view.in_flight == 0 else 0
            )
            if stalled_polls >= 2:
                raise JobStalled(
                    f"{progress.tasks_remaining} tasks of job {manifest.job_id} have no result, "
                    f"the queue is empty and {view.dead} messages are in the dead-letter queue; "
                    "see docs/operations.md"
                )
            if timeout is not None and time.monotonic() - started > timeout:
                raise TimeoutError(f"job {manifest.job_id} not complete after {timeout:.0f}s")
            time.sleep(interval)
    finally:
        bar.close()
