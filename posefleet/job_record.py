"""Job record: the one definition of what a job is while it runs, in a DynamoDB table.

One record per job, updated by the producer (submit, cancel) and by the workers (a count per
finished task), read by ``status`` and ``jobs``. The S3 manifest and plan stay what they are
(what was asked, and how to resume the submit); the record says where the job stands.

**States** (:data:`TRANSITIONS` is the one list of allowed moves)::

    submitting --> running --> complete
        |    \\        |   \\
        |     \\       |    `--> cancelling --> cancelled (or complete, if every task got done)
        |      `------+------------^
        `--> failed (the submit stopped on an error)
    cancelled, failed, complete --> submitting   (the same --job-id submitted again)

``submitting``: the producer is planning and sending (``tasks_total`` unknown); ``running``:
every task is on the queue; ``cancelling``: ``python -m producer cancel`` said stop, workers
acknowledge its tasks without work and count them cancelled; the job ends when every task is
counted, done or cancelled. A job ends by one conditional update of its record (state as read,
counts at or past the total), so exactly one process, worker or producer, wins and publishes
``job.finished`` (posefleet.events); no process has to stay up for it.

**Items** (:func:`table_definition`; hash key ``id``, on-demand):

* the job, ``id = <job>``: what it is (source, model at submit, task size, results, queue), its
  state, times (created, started, finished), ``tasks_total`` once planned, ``run`` (the submit
  that started it, in event ids) and ``counting`` (the generation of its counters);
* :data:`COUNTER_SHARDS` counter items, ``id = <job>#<k>``, each a share of the counts (tasks
  done, cancelled, finished; images ok, failed; failed by error kind as ``err_<kind>``). A task
  counts in shard ``crc32(task) % COUNTER_SHARDS``: a busy job's counts spread over several
  items, so the workers' transactions rarely meet on one (two transactions on one item at once
  conflict, and one item takes at most 1,000 writes a second). Reading them all is still one
  BatchGetItem, with the job item;
* one marker per counted task, ``id = <job>/<task>``: ``kind`` (done or cancelled), the
  ``counting`` generation, and ``expires_at`` (TTL, :data:`MARKER_TTL`).

Job items alone carry ``listing``: the sparse index :data:`INDEX` (``listing``, ``created_at``,
projecting ``state`` only) lists jobs newest first without the markers, and the counters'
updates never touch it (nothing they change is projected).

**Exactly once per task** under SQS's at-least-once delivery: a finished task is counted by one
``TransactWriteItems`` of two items, the marker (put if absent, or of an older generation) and
its counter shard (``ADD``, if of this generation). DynamoDB applies both or neither, so a
redelivered task (its marker there) changes nothing, a worker that dies before the transaction
leaves nothing (the task comes back and is counted then), and one that dies after it (before
deleting the message) leaves the marker (the redelivery is not counted again). The worker
counts after the task's result object is written and before its message is deleted. Simpler
forms each fail one case: an ``ADD`` alone counts a redelivery twice; a marker, then an
update, loses the count of a worker dying between the two; a set of done task ids in the job
item stops at DynamoDB's 400 KB item (about 20,000 ids) and makes every write as large as the
set. The price: a transactional write is two write units per item, four per task (at 100
images a task, 40,000 write units per million images, $0.025 on demand). A task counted
cancelled and then done (a worker that had it before the cancel) moves from one count to the
other, in a second transaction conditioned on the marker still saying cancelled. Markers live
:data:`MARKER_TTL` (30 days: longer than a message can come back, 4 days on the queue plus 14
in the dead-letter queue); a job resumed after that may show stale cancelled counts, never a
task counted twice as done once its markers are there.

**Generations.** Submitting a complete job again without ``--skip-done`` sends every task
again: its counters start afresh (``counting`` becomes the new run; old markers no longer
block). Resuming (an interrupted, cancelled or failed submit, or ``--skip-done``) keeps them.

A record that is missing or cannot be read is :class:`JobRecordCorrupt` or ``None`` to the
caller, never a crash: the job's work goes on, its progress is still in S3.

IAM: producer ``dynamodb:GetItem``, ``BatchGetItem``, ``Query`` (the index), ``PutItem``,
``UpdateItem``; worker ``GetItem``, ``BatchGetItem``, ``PutItem`` (markers), ``UpdateItem``
(counter shards, and the job item's final state) on the table (infra/components/jobs.py).
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from posefleet.events import JobFinished, job_event_id
from posefleet.result import ErrorKind, ResultLine

__all__ = [
    "COUNTER_FIELDS",
    "COUNTER_SHARDS",
    "INDEX",
    "KEY",
    "LISTING",
    "LISTING_VALUE",
    "MARKER_TTL",
    "STATES",
    "TRANSITIONS",
    "TTL_ATTRIBUTE",
    "Counts",
    "JobRecord",
    "JobRecordCorrupt",
    "JobState",
    "counter_id",
    "counts_of",
    "error_attribute",
    "finished_event",
    "marker_id",
    "shard_of",
    "table_definition",
    "utc_iso",
]

RECORD_VERSION = 1
JobState = Literal["submitting", "running", "cancelling", "cancelled", "complete", "failed"]
STATES: tuple[JobState, ...] = get_args(JobState)
FINAL_STATES: frozenset[JobState] = frozenset({"cancelled", "complete", "failed"})
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    "submitting": frozenset({"submitting", "running", "cancelling", "complete", "failed"}),
    "running": frozenset({"submitting", "cancelling", "complete", "failed"}),
    "cancelling": frozenset({"cancelled", "complete"}),
    "cancelled": frozenset({"submitting"}),
    "complete": frozenset({"submitting"}),
    "failed": frozenset({"submitting"}),
}

KEY = "id"
LISTING = "listing"  # on job items only: the sparse index's hash key
LISTING_VALUE = "job"
CREATED = "created_at"
INDEX = "by-created"
TTL_ATTRIBUTE = "expires_at"
ERROR_PREFIX = "err_"
COUNTER_SHARDS = 8
COUNTER_FIELDS = (
    "tasks_done",
    "tasks_cancelled",
    "tasks_finished",  # done + cancelled: conditions cannot add two attributes
    "images_ok",
    "images_failed",
)
MARKER_TTL = timedelta(days=30)


class JobRecordCorrupt(ValueError):
    """A job item that is not a record this code reads."""


def utc_iso(when: datetime | None = None) -> str:
    """Times in the record: UTC ISO 8601 to the millisecond, so they sort as strings."""
    return (when or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")


def shard_of(task_id: str) -> int:
    return zlib.crc32(task_id.encode()) % COUNTER_SHARDS


def counter_id(job_id: str, shard: int) -> str:
    return f"{job_id}#{shard}"


def marker_id(job_id: str, task_id: str) -> str:
    return f"{job_id}/{task_id}"


def table_definition(name: str) -> dict[str, Any]:
    """CreateTable arguments (boto3): on-demand, hash key ``id``, the sparse index."""
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": KEY, "AttributeType": "S"},
            {"AttributeName": LISTING, "AttributeType": "S"},
            {"AttributeName": CREATED, "AttributeType": "S"},
        ],
        "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": INDEX,
                "KeySchema": [
                    {"AttributeName": LISTING, "KeyType": "HASH"},
                    {"AttributeName": CREATED, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["state"]},
            }
        ],
    }


class Counts(BaseModel):
    """What the workers counted: the sum of a job's counter shards (or of one)."""

    model_config = ConfigDict(frozen=True)

    tasks_done: int = 0
    tasks_cancelled: int = 0
    tasks_finished: int = 0
    images_ok: int = 0
    images_failed: int = 0
    errors: dict[str, int] = Field(default_factory=dict)

    def __add__(self, other: Counts) -> Counts:
        errors = dict(self.errors)
        for kind, n in other.errors.items():
            errors[kind] = errors.get(kind, 0) + n
        values = {f: getattr(self, f) + getattr(other, f) for f in COUNTER_FIELDS}
        return Counts(**values, errors={k: n for k, n in errors.items() if n})


def counts_of(lines: list[ResultLine]) -> Counts:
    """One task's contribution: its images ok and failed, failed by error kind."""
    errors: dict[str, int] = {}
    for line in lines:
        if line.status == "error":
            kind = str(line.error_kind)
            errors[kind] = errors.get(kind, 0) + 1
    failed = sum(errors.values())
    return Counts(
        tasks_done=1,
        tasks_finished=1,
        images_ok=len(lines) - failed,
        images_failed=failed,
        errors=errors,
    )


class JobRecord(BaseModel):
    """A job item and its counter shards, read together."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = RECORD_VERSION
    job_id: str
    state: JobState
    source: str
    model: str
    task_size: int = Field(ge=1)
    results: str = Field(description="s3:// URI of the job's results prefix")
    manifest: str = Field(description="s3:// URI of the job's manifest")
    queue_url: str
    created_at: str
    started_at: str
    finished_at: str | None = None
    run: str = Field(description="started_at of the submit that started the job's last run")
    counting: str = Field(description="the counters' generation (a run id)")
    tasks_total: int | None = Field(default=None, ge=0, description="set once every task is sent")
    images_total: int | None = Field(default=None, ge=0)
    tasks_planned: int = 0
    tasks_sent: int = 0
    reason: str | None = None
    event_pending: bool = False
    counts: Counts = Field(default_factory=Counts)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def images_done(self) -> int:
        return self.counts.images_ok + self.counts.images_failed

    def ending(self) -> JobState | None:
        """The final state the counts call for now, or None while work is left."""
        total = self.tasks_total
        if total is None or self.state not in ("running", "cancelling"):
            return None
        if self.counts.tasks_done >= total:
            return "complete"
        if self.state == "cancelling" and self.counts.tasks_finished >= total:
            return "cancelled"
        return None

    # -- DynamoDB items ---------------------------------------------------------------------
    @classmethod
    def from_items(cls, job: dict[str, Any], shards: list[dict[str, Any]]) -> JobRecord:
        """The record from its job item and counter shard items (DynamoDB JSON); raises
        :class:`JobRecordCorrupt` with the first thing wrong."""
        try:
            data = {k: _plain(v) for k, v in job.items() if k not in (KEY, LISTING)}
            data["job_id"] = _plain(job[KEY])
            data["event_pending"] = bool(data.get("event_pending", False))
            counting = data.get("counting")
            total = Counts()
            for shard in shards:
                if _plain(shard.get("counting", {"S": ""})) == counting:
                    total = total + _counts(shard)
            return cls(**data, counts=total)
        except (KeyError, TypeError, ValueError, ValidationError) as e:
            job_id = job.get(KEY, {}).get("S", "?") if isinstance(job, dict) else "?"
            raise JobRecordCorrupt(f"the record of job {job_id!r} cannot be read: {e}") from None


def _plain(value: dict[str, Any]) -> Any:
    """A DynamoDB JSON value (S, N, BOOL, NULL: all the record uses) as Python."""
    (kind, v), *_ = value.items()
    if kind == "S":
        return v
    if kind == "N":
        return int(v)
    if kind in ("BOOL", "NULL"):
        return bool(v) if kind == "BOOL" else None
    raise ValueError(f"unexpected DynamoDB type {kind}")


def _counts(item: dict[str, Any]) -> Counts:
    return Counts(
        **{f: int(item[f]["N"]) for f in COUNTER_FIELDS if f in item},
        errors={
            k.removeprefix(ERROR_PREFIX): int(v["N"])
            for k, v in item.items()
            if k.startswith(ERROR_PREFIX) and int(v["N"])
        },
    )


def error_attribute(kind: str) -> str:
    """The counter attribute of failed images of one error kind."""
    if kind not in ErrorKind.__members__.values():
        raise ValueError(f"unknown error kind {kind!r}")
    return ERROR_PREFIX + kind


def finished_event(record: JobRecord) -> JobFinished:
    """The ``job.finished`` event of a record in a final state."""
    if not record.final or record.finished_at is None:
        raise ValueError(f"job {record.job_id} is {record.state}, not finished")
    c = record.counts
    return JobFinished(
        id=job_event_id(record.job_id, record.state, record.run),
        job_id=record.job_id,
        state=record.state,  # type: ignore[arg-type]
        tasks_total=record.tasks_total or 0,
        tasks_done=c.tasks_done,
        tasks_cancelled=c.tasks_cancelled,
        images_ok=c.images_ok,
        images_failed=c.images_failed,
        errors=c.errors,
        results=record.results,
        manifest=record.manifest,
        reason=record.reason,
        created_at=datetime.fromisoformat(record.created_at),
        finished_at=datetime.fromisoformat(record.finished_at),
    )
