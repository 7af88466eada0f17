"""Submitting a job: a stream, not phases.

    source partitions --(listers, list_concurrency threads)--> plan: tasks in shards,
        each shard written to <job>/plan/ --(bounded queue)--> senders (send_concurrency
        threads, SendMessageBatch) --> <shard>.sent marker

The first tasks are on the queue while listing goes on; a full queue of shards stops the
listers (back-pressure), so memory holds at most a few shards per thread whatever the job size.
The manifest says ``complete: false`` (with the counts so far, rewritten every few seconds)
until every partition is planned and every shard sent; then the partitions index is written
and the manifest says ``complete: true``.

**Resume.** Run again with the same ``--job-id`` while the manifest is incomplete (Ctrl-C, a
crash, a closed laptop): the plan prefix is listed once; partitions with ``partition.json`` are
not listed again; a partition left halfway continues after its last shard's ``last_key`` (or
after its ``images_before + images`` keys, for files); shards without ``.sent`` are sent again.
So no task is missing, and none is sent twice but those of the shards in flight at a crash or
a refusal (at most ``send_concurrency`` shards of ``SHARD_TASKS`` tasks); after a Ctrl-C none:
senders stop between batches and record how far they got in ``<shard>.part``. Submitting a
complete job again plans it afresh and sends every task again (with ``--skip-done``: those
without a result).

**The job record** (record.py, :class:`SubmitRecord`): created (or restarted) with the first
shard, before any task is sent; the counts so far are written to it every few seconds, and its
state read every second: once it says ``cancelling`` (``python -m producer cancel``) the
senders stop between batches, as on Ctrl-C, and the total becomes what was sent. When every
task is sent the total is set and the job settled (an empty job, or one whose every task is
already done, ends here). A cancelled or failed job submitted again resumes with its counts:
only tasks without a result are sent (``--skip-done``); a cancelled one is planned afresh (the
same task ids), since the tasks it had sent were acknowledged without work.

IAM: the sources' (producer/sources.py), ``sqs:SendMessage`` on the queue, PutObject,
GetObject, ListBucket and DeleteObject on the results prefix, and the record's (record.py).
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from posefleet.events import EventChannel
from posefleet.job_record import JobRecord
from posefleet.job_table import JobTable
from posefleet.layout import SHARD_TASKS, Manifest, PartitionSummary, ResultsLocation
from posefleet.result import load_lines
from posefleet.task import TaskMessage, split_task_id, task_id_position
from producer.job import Job, JobNotFound
from producer.job.plan import PartitionPlanner, PartitionState, Shard
from producer.job.record import JobConflict, SubmitRecord, write_manifest
from producer.listing import list_range
from producer.send import send_tasks
from producer.sources import Partition, Position, Source

__all__ = [
    "Submission",
    "SubmitOptions",
    "default_job_id",
]

MANIFEST_EVERY = 5.0  # seconds between rewrites of an in-progress manifest


class _Stopped(Exception):
    pass


def default_job_id(bucket: str, prefix: str, now: datetime | None = None) -> str:
    stem = re.sub(r"[^A-Za-z0-9]+", "-", prefix.strip("/")).strip("-") or bucket
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stem[:80]}-{stamp}"


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    job_id: str
    task_size: int
    location: ResultsLocation
    queue_url: str
    model: str
    large_task_size: int | None = None  # past each partition's first shard (plan.py)
    dry_run: bool = False
    skip_done: bool = False
    listers: int = 16
    senders: int = 8

    def __post_init__(self) -> None:
        if self.task_size < 1 or self.listers < 1 or self.senders < 1:
            raise ValueError("task_size, listers and senders must each be at least 1")
        if self.large_task_size is not None and self.large_task_size < 1:
            raise ValueError("large_task_size must be at least 1 (or None)")


@dataclass(slots=True)
class SubmitResult:
    job_id: str
    images: int = 0
    tasks: int = 0
    sent: int = 0  # by this run
    skipped_done: int = 0
    already_sent: int = 0  # by an earlier, interrupted run
    resent_shards: int = 0  # shards an earlier run wrote but did not finish sending
    partitions: int = 0
    resumed: bool = False
    interrupted: bool = False
    cancelled: bool = False  # the job was cancelled while it was being sent
    first_task: TaskMessage | None = None
    manifest: Manifest | None = None
    ended: JobRecord | None = None  # the job's final record, if this submit ended it


class _Work:
    """Partitions to plan; ``take`` returns None once none is queued and none is open."""

    def __init__(self) -> None:
        self._items: deque[Partition] = deque()
        self._cv = threading.Condition()
        self._open = 0

    def push(self, parts: list[Partition]) -> None:
        with self._cv:
            self._items.extend(parts)
            self._open += len(parts)
            self._cv.notify_all()

    def take(self, stop: threading.Event) -> Partition | None:
        with self._cv:
            while not self._items:
                if self._open == 0 or stop.is_set():
                    return None
                self._cv.wait(0.5)
            return self._items.popleft()

    def done(self) -> None:
        with self._cv:
            self._open -= 1
            self._cv.notify_all()


@dataclass(slots=True)
class _Counts:
    images: int = 0
    tasks: int = 0
    sent: int = 0
    skipped: int = 0
    already_sent: int = 0
    resent_shards: int = 0
    summaries: dict[str, PartitionSummary] = field(default_factory=dict)


class Submission:
    """One run of ``python -m producer submit``: see the module doc."""

    def __init__(
        self,
        *,
        s3: Any,
        sqs: Any,
        source: Source,
        options: SubmitOptions,
        on_progress: Callable[[int, int, int], None] | None = None,
        records: JobTable | None = None,
        events: EventChannel | None = None,
    ) -> None:
        self.s3, self.sqs = s3, sqs
        self.record = SubmitRecord(None if options.dry_run else records, events, options.job_id)
        self.skip_done = options.skip_done
        self.source, self.o = source, options
        self.location = options.location
        self.job = Job(s3=s3, location=self.location, job_id=options.job_id)
        self.store = self.job.plan
        self.on_progress = on_progress
        self.stop = threading.Event()
        self.work = _Work()
        self.shards: queue.Queue[Shard | None] = queue.Queue(maxsize=2 * options.senders)
        self.lock = threading.Lock()
        self.counts = _Counts()
        self.error: BaseException | None = None
        self.resume: dict[str, PartitionState] = {}
        self.created_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.manifest_written = False
        self.first_task: TaskMessage | None = None
        self.first_partition = ""

    # -- the job record -------------------------------------------------------------------
    def _manifest(self, *, complete: bool, partitions: int | None = None) -> Manifest:
        c = self.counts
        return Manifest(
            job_id=self.o.job_id,
            source_bucket=self.source.bucket,
            source_prefix=self.source.prefix,
            source=self.source.description,
            tasks=c.tasks,
            images=c.images,
            task_size=self.o.task_size,
            large_task_size=self.o.large_task_size,
            queue_url=self.o.queue_url,
            model=self.o.model,
            created_at=self.created_at,
            updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            complete=complete,
            tasks_sent=c.sent + c.skipped + c.already_sent,
            partitions=partitions,
            plan=self.location.plan_prefix(self.o.job_id),
        )

    def _write_manifest(self, manifest: Manifest) -> None:
        write_manifest(self.s3, self.location, manifest)

    def _ensure_manifest(self) -> None:
        """The first shard of a run writes the in-progress manifest first (an empty source
        leaves no job behind)."""
        with self.lock:
            if not self.manifest_written:
                self._begin()
                self._write_manifest(self._manifest(complete=False))
                self.manifest_written = True

    def _begin(self) -> None:
        self.record.begin(
            source=self.source.description,
            model=self.o.model,
            task_size=self.o.task_size,
            results=self.job.results_uri,
            manifest=self.job.manifest_uri,
            queue_url=self.o.queue_url,
        )

    def _prepare(self) -> None:
        if self.o.dry_run:
            return
        try:
            existing: Manifest | None = self.job.reload()
        except JobNotFound:
            existing = None
        self.skip_done = self.record.prepare(manifest=existing, skip_done=self.o.skip_done)
        if existing is None:
            return
        cancelled = self.record.seen is not None and self.record.seen.state == "cancelled"
        if not existing.complete or cancelled:  # the same ids: the same source and sizes
            asked = (self.source.description, self.o.task_size, self.o.large_task_size)
            if (existing.source, existing.task_size, existing.large_task_size) != asked:
                raise JobConflict(
                    f"job {self.o.job_id} was started from {existing.source} with task size "
                    f"{existing.task_size} (then {existing.large_task_size}); resume it with the "
                    "same source and --task-size, or choose another --job-id"
                )
            self.created_at = existing.created_at
        if existing.complete or cancelled:
            # planned afresh (the same task ids); a cancelled job's sent tasks went without
            # work, so every task without a result is sent again (skip_done)
            self.store.clear()
        else:
            self.resume = self.store.scan()

    # -- listers ------------------------------------------------------------------------
    def _fail(self, e: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = e
        self.stop.set()

    def _put(self, shard: Shard) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                self.shards.put(shard, timeout=0.5)
                return
            except queue.Full:
                continue

    def _emit(self, shard: Shard) -> None:
        h = shard.header
        if not self.o.dry_run:
            self._ensure_manifest()
            self.store.put_shard(shard)
        with self.lock:
            self.counts.images += h.images
            self.counts.tasks += h.tasks
        self._put(shard)

    def _resend(self, part: Partition, state: PartitionState) -> None:
        for n in sorted(state.shards - state.sent):
            shard = self.store.get_shard(
                part.id, n, bucket=self.source.bucket, results=self.location.uri
            )
            if n in state.part:
                through = self.store.sent_through(part.id, n)
                shard.tasks = [t for t in shard.tasks if split_task_id(t.task_id)[1] > through]
            with self.lock:
                self.counts.resent_shards += 1
            self._put(shard)

    def _resumed_counts(self, state: PartitionState, tasks: int, images: int, shards: int) -> None:
        last = tasks - SHARD_TASKS * (shards - 1)
        sent = sum(last if n == shards - 1 else SHARD_TASKS for n in state.sent if n < shards)
        with self.lock:
            self.counts.tasks += tasks
            self.counts.images += images
            self.counts.already_sent += sent

    def _record(self, summary: PartitionSummary) -> None:
        with self.lock:
            self.counts.summaries[summary.partition] = summary

    def _plan_partition(self, part: Partition) -> None:
        state = self.resume.get(part.id)
        at = Position()
        planner_from: dict[str, Any] = {}
        if state is not None and state.complete:
            summary = self.store.get_partition(part.id)
            self._resumed_counts(state, summary.tasks, summary.images, summary.shards)
            self._record(summary)
            if summary.split_at is not None:
                self.work.push(self.source.children(part, summary.split_at, summary.split_hi))
            self._resend(part, state)
            return
        if state is not None and state.shards:
            last = self.store.get_shard(
                part.id, max(state.shards), bucket=self.source.bucket, results=self.location.uri
            ).header
            done_images = last.images_before + last.images
            self._resumed_counts(
                state, last.first_task + last.tasks, done_images, max(state.shards) + 1
            )
            at = Position(
                after_key=last.last_key,
                skip_images=done_images,
                split_at=last.split_at,
                split_hi=last.split_hi,
                resumed=True,
            )
            planner_from = {
                "next_task": last.first_task + last.tasks,
                "next_shard": last.shard + 1,
                "images_before": done_images,
            }
            if last.split_at is not None:
                self.work.push(self.source.children(part, last.split_at, last.split_hi))
            self._resend(part, state)
        planner = PartitionPlanner(
            part=part,
            job_id=self.o.job_id,
            bucket=self.source.bucket,
            task_size=self.o.task_size,
            large_task_size=self.o.large_task_size,
            results=self.location.uri,
            split_at=at.split_at,
            split_hi=at.split_hi,
            **planner_from,
        )

        def on_split(key: str, hi: str | None) -> None:
            planner.split_at, planner.split_hi = key, hi
            self.work.push(self.source.children(part, key, hi))

        for keys in self.source.read(part, at, on_split):
            if self.stop.is_set():
                raise _Stopped
            for shard in planner.add(keys):
                self._emit(shard)
        for shard in planner.finish():
            self._emit(shard)
        summary = planner.summary()
        if summary.tasks or summary.split_at is not None:
            if not self.o.dry_run:
                self.store.put_partition(summary)
            self._record(summary)

    def _lister(self) -> None:
        while (part := self.work.take(self.stop)) is not None:
            try:
                self._plan_partition(part)
            except _Stopped:
                pass
            except BaseException as e:
                self._fail(e)
            finally:
                self.work.done()

    # -- senders ------------------------------------------------------------------------
    def _done_in(self, shard: Shard) -> set[str]:
        """Task ids of this shard with a result: one listing from its first task's id."""
        h = shard.header
        head = self.location.tasks_prefix(self.o.job_id)
        done: set[str] = set()
        end = h.first_task + h.tasks
        for keys, _ in list_range(
            self.s3,
            self.location.bucket,
            f"{head}{h.partition}-",
            after=head + task_id_position(h.first_task, h.partition),
        ):
            for key in keys:
                task_id = self.location.task_id_of(self.o.job_id, key)
                if task_id is None:
                    continue
                if split_task_id(task_id)[1] >= end:
                    return done
                done.add(task_id)
        return done

    def _send(self, shard: Shard) -> None:
        h = shard.header
        tasks = shard.tasks
        if not tasks:  # a resumed shard whose every task went before the stop
            if not self.o.dry_run:
                self.store.mark_sent(h.partition, h.shard)
            return
        with self.lock:
            if self.first_task is None or (
                h.partition == self.first_partition and h.shard == 0 and not shard.stored
            ):
                self.first_task = tasks[0]
        if self.skip_done:
            done = self._done_in(shard)
            if self.record.counts_skipped and not self.o.dry_run:
                self._count_done([t for t in tasks if t.task_id in done])
            tasks = [t for t in tasks if t.task_id not in done]
            with self.lock:
                self.counts.skipped += len(shard.tasks) - len(tasks)
        if self.o.dry_run:
            with self.lock:
                self.counts.sent += len(tasks)
            return
        sent = send_tasks(
            self.sqs,
            self.o.queue_url,
            tasks,
            should_stop=self.stop.is_set,
            on_sent=self._count_sent,
        )
        if sent < len(tasks):  # stopped between batches: the first `sent` tasks are on the queue
            if sent:
                through = split_task_id(tasks[sent - 1].task_id)[1]
                self.store.mark_part_sent(h.partition, h.shard, through)
            raise _Stopped
        self.store.mark_sent(h.partition, h.shard)

    def _count_done(self, tasks: list[TaskMessage]) -> None:
        for task in tasks:
            body = self.s3.get_object(Bucket=self.location.bucket, Key=task.result_key)["Body"]
            self.record.count_done(task, load_lines(body.read()))

    def _count_sent(self, n: int) -> None:
        with self.lock:
            self.counts.sent += n

    def _sender(self) -> None:
        while True:
            try:
                shard = self.shards.get(timeout=0.5)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            if shard is None:
                return
            try:
                self._send(shard)
            except _Stopped:
                return
            except BaseException as e:
                self._fail(e)
                return

    # -- the run ------------------------------------------------------------------------
    @property
    def _on_queue(self) -> int:
        """Tasks on the queue or done: sent by this run or an earlier one, or skipped."""
        c = self.counts
        return c.sent + c.skipped + c.already_sent

    def _tick(self, last_write: float) -> float:
        c = self.counts
        if self.on_progress:
            self.on_progress(c.images, c.tasks, self._on_queue)
        if self.record.tick(planned=c.tasks, sent=self._on_queue):
            self.stop.set()  # cancelled: the senders stop between batches
        now = time.monotonic()
        if self.manifest_written and now - last_write >= MANIFEST_EVERY:
            with self.lock:
                manifest = self._manifest(complete=False)
            self._write_manifest(manifest)
            return now
        return last_write

    def _wait_for(self, threads: list[threading.Thread], last_write: float) -> float:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.25)
            last_write = self._tick(last_write)
        return last_write

    def run(self) -> SubmitResult:
        """Plan and send the job; raises what a stage raised (the job stays resumable)."""
        self._prepare()
        roots = self.source.roots()
        self.first_partition = roots[0].id if roots else ""
        self.work.push(roots)
        listers = [
            threading.Thread(target=self._lister, name=f"lister-{i}", daemon=True)
            for i in range(min(self.o.listers, max(1, self.source.concurrency)))
        ]
        senders = [
            threading.Thread(target=self._sender, name=f"sender-{i}", daemon=True)
            for i in range(self.o.senders)
        ]
        for t in (*listers, *senders):
            t.start()
        interrupted = False
        last_write = time.monotonic()
        try:
            last_write = self._wait_for(listers, last_write)
            for _ in senders:
                while not self.stop.is_set():
                    try:
                        self.shards.put(None, timeout=0.5)
                        break
                    except queue.Full:
                        last_write = self._tick(last_write)
            last_write = self._wait_for(senders, last_write)
        except KeyboardInterrupt:
            interrupted = True
            self.stop.set()
            for t in (*listers, *senders):
                t.join(timeout=30)
        result = self._result(interrupted)
        cancelled = self.record.cancelled and self.error is None and not interrupted
        if self.error is not None or interrupted or cancelled:
            if self.manifest_written:
                self._write_manifest(self._manifest(complete=False))
            if self.error is not None:
                self.record.failed(
                    str(self.error), tasks_sent=self._on_queue, images=self.counts.images
                )
                raise self.error
            if cancelled:
                result.cancelled = True
                result.ended = self.record.sent_all(
                    tasks=self._on_queue, images=self.counts.images, sent=self._on_queue
                )
            return result
        if not self.o.dry_run and self.counts.images:
            partitions = self.store.put_index(self.counts.summaries.values())
            result.manifest = self._manifest(complete=True, partitions=partitions)
            self._write_manifest(result.manifest)
        if not self.o.dry_run:
            self._begin()  # an empty job gets its record here, and ends at once
            c = self.counts
            result.ended = self.record.sent_all(tasks=c.tasks, images=c.images, sent=self._on_queue)
        return result

    def _result(self, interrupted: bool) -> SubmitResult:
        c = self.counts
        return SubmitResult(
            job_id=self.o.job_id,
            images=c.images,
            tasks=c.tasks,
            sent=c.sent,
            skipped_done=c.skipped,
            already_sent=c.already_sent,
            resent_shards=c.resent_shards,
            partitions=sum(1 for s in c.summaries.values() if s.tasks),
            resumed=bool(self.resume),
            interrupted=interrupted,
            first_task=self.first_task,
        )
