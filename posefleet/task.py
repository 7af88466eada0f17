"""Task message: the one definition of what travels on the tasks queue.

A message body is either

* a posefleet task (JSON, versioned): job id, a task id deterministic for the job, the source
  bucket, up to ``task_size`` keys and where results go; or
* an S3 event notification (``Records[].s3``): each record becomes a one-key *upload* task
  of the stream job, its key URL-decoded (``unquote_plus``) exactly once; its result goes to
  the photo's live key (``ResultsLocation.live_key``), and ``upload`` names the upload (the
  object's ETag, else S3's sequencer) for the "image labelled" event's id; or
* ``s3:TestEvent``, which S3 sends when notifications are configured: acknowledged, ignored.

Anything else raises :class:`InvalidMessage`; the worker sends such a message to the
dead-letter queue itself, with the reason (posefleet.deadletter), and deletes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from posefleet.layout import LIVE, ResultsLocation, check_id

__all__ = [
    "MAX_KEYS_PER_TASK",
    "InvalidMessage",
    "ParsedMessage",
    "TaskMessage",
    "make_task_id",
    "parse_message",
    "partition_id",
    "plan_tasks",
    "split_task_id",
    "task_id_position",
]

TASK_VERSION = 1
MAX_KEYS_PER_TASK = 1000


class InvalidMessage(ValueError):
    """A message body that is not a task, an S3 event or an S3 test event.

    Judged from the body alone, so receiving it again cannot help: its message is
    dead-lettered at once, with ``str(error)`` as the reason."""


class TaskMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = TASK_VERSION
    job_id: str
    task_id: str
    bucket: str = Field(min_length=3)
    keys: tuple[str, ...] = Field(min_length=1, max_length=MAX_KEYS_PER_TASK)
    results: str
    enqueued_at: float | None = Field(default=None, description="Unix time the task was sent.")
    upload: str | None = Field(
        default=None,
        description="Upload tasks (from S3 events) only: the object's ETag or S3's sequencer. "
        "Such a task's result is its photo's live result.",
    )

    @field_validator("job_id")
    @classmethod
    def _job_ok(cls, v: str) -> str:
        if v == LIVE:
            raise ValueError(f"job id {LIVE!r} is reserved for live results")
        return check_id(v, "job id")

    @field_validator("task_id")
    @classmethod
    def _task_ok(cls, v: str) -> str:
        return check_id(v, "task id")

    @field_validator("results")
    @classmethod
    def _results_ok(cls, v: str) -> str:
        ResultsLocation.parse(v)
        return v

    @property
    def location(self) -> ResultsLocation:
        return ResultsLocation.parse(self.results)

    @property
    def result_key(self) -> str:
        if self.upload is not None:
            return self.location.live_key(self.bucket, self.keys[0])
        return self.location.task_key(self.job_id, self.task_id)

    def to_body(self) -> str:
        return self.model_dump_json(exclude_none=True)


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What one SQS message asks for: zero tasks (a test event) or more (S3 events)."""

    tasks: tuple[TaskMessage, ...]
    kind: Literal["task", "s3_event", "s3_test_event"]


def partition_id(*bounds: str | None) -> str:
    """A partition's id: a SHA-256 prefix (10 hex digits) of what bounds it, e.g. the listing
    range ``(lo, hi]`` or the inventory data file's key. Same bounds, same id."""
    text = "\x00".join("\x01" if b is None else b for b in bounds)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# Digits of a task's index within its partition: a keys file or an inventory data file is one
# partition, and ids must sort by index (sampled progress and ranged listings rely on it) for
# up to a billion tasks of one partition. Ids without a partition keep six (version 1 jobs).
TASK_INDEX_DIGITS = 9
_V1_INDEX_DIGITS = 6


def task_id_position(index: int, partition: str | None = None) -> str:
    """The start of task ``index``'s id: every id of that task sorts after it, and before the
    position of task ``index + 1`` (for listings with ``StartAfter``)."""
    if partition:
        return f"{partition}-{index:0{TASK_INDEX_DIGITS}d}"
    return f"{index:0{_V1_INDEX_DIGITS}d}"


def make_task_id(index: int, keys: Sequence[str], partition: str | None = None) -> str:
    """The one definition of task ids; deterministic for a given source.

    ``<partition>-<index:09d>-<digest>``: ``partition`` is :func:`partition_id` of the bounds
    of the partition the task comes from (a range ``(lo, hi]`` of the listed key space, an S3
    Inventory data file, a keys file). The source derives those bounds from the keys alone
    (producer/sources.py: a range is split at characters of the key where its first page ends,
    never by timing or by which lister got there first), so parallel listing cuts the same
    partitions every run. ``index`` counts the partition's tasks from 0 in key order and
    ``digest`` is a SHA-256 prefix of the task's keys, so a task id names its keys. Without a
    partition (a plain list of keys) the id is ``<index:06d>-<digest>``.
    """
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:10]
    return f"{task_id_position(index, partition)}-{digest}"


def split_task_id(task_id: str) -> tuple[str | None, int]:
    """``(partition, index)`` of a task id from :func:`make_task_id` (partition None for ids
    made without one); raises ValueError for other ids."""
    parts = task_id.split("-")
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    if len(parts) == 2 and parts[0].isdigit():
        return None, int(parts[0])
    raise ValueError(f"{task_id!r} is not a planned task id")


def plan_tasks(
    *,
    job_id: str,
    bucket: str,
    keys: Sequence[str],
    task_size: int,
    results: str,
    enqueued_at: float | None = None,
    partition: str | None = None,
    first_index: int = 0,
) -> Iterator[TaskMessage]:
    """Group keys (in the given order) into tasks of at most ``task_size`` keys, numbered
    from ``first_index`` within ``partition`` (see :func:`make_task_id`)."""
    if task_size < 1:
        raise ValueError("task_size must be at least 1")
    for index, start in enumerate(range(0, len(keys), task_size), start=first_index):
        chunk = tuple(keys[start : start + task_size])
        yield TaskMessage(
            job_id=job_id,
            task_id=make_task_id(index, chunk, partition),
            bucket=bucket,
            keys=chunk,
            results=results,
            enqueued_at=enqueued_at,
        )


def _event_task(record: dict, *, stream_job: str, results: str) -> TaskMessage:
    try:
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])
    except (KeyError, TypeError) as e:
        raise InvalidMessage(f"S3 event record lacks s3.bucket.name or s3.object.key: {e}") from e
    enqueued_at = None
    if when := record.get("eventTime"):
        try:
            enqueued_at = datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
        except ValueError:
            enqueued_at = None
    # One result object per source object: a re-upload overwrites its own result.
    task_id = "s3-" + hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()[:24]
    obj = record["s3"]["object"]
    upload = str(obj.get("eTag") or obj.get("sequencer") or "")
    return TaskMessage(
        job_id=stream_job,
        task_id=task_id,
        bucket=bucket,
        keys=(key,),
        results=results,
        enqueued_at=enqueued_at,
        upload=upload,
    )


def parse_message(body: str, *, stream_job: str, stream_results: str) -> ParsedMessage:
    """Parse one SQS body. S3 events take their job id and results location from the worker."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidMessage(f"body is not JSON: {e.msg if hasattr(e, 'msg') else e}") from e
    if not isinstance(data, dict):
        raise InvalidMessage(f"body is JSON {type(data).__name__}, expected an object")
    if data.get("Event") == "s3:TestEvent":
        return ParsedMessage(tasks=(), kind="s3_test_event")
    if "Records" in data:
        records = data["Records"]
        if not isinstance(records, list) or not records:
            raise InvalidMessage("S3 event has no Records")
        try:
            tasks = tuple(
                _event_task(r, stream_job=stream_job, results=stream_results)
                for r in records
                if str(r.get("eventName", "ObjectCreated")).startswith("ObjectCreated")
            )
        except ValidationError as e:
            raise InvalidMessage(
                f"S3 event record is not a valid task: {e.errors()[0]['msg']}"
            ) from e
        return ParsedMessage(tasks=tasks, kind="s3_event")
    if "v" in data and data["v"] != TASK_VERSION:
        raise InvalidMessage(
            f"task version {data['v']!r} is unknown to this worker, which reads version "
            f"{TASK_VERSION}; upgrade the workers, then redrive"
        )
    try:
        return ParsedMessage(tasks=(TaskMessage.model_validate(data),), kind="task")
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidMessage(f"not a posefleet task: {where}: {first['msg']}") from e
