"""The job records' table: every read and write of posefleet.job_record, for producer and worker.

The one place that spells the table's expressions. :meth:`JobTable.count` counts a task exactly
once, :meth:`JobTable.settle` ends a job whose counts are in (one conditional update: the one
caller that wins publishes ``job.finished``); the producer's moves (:meth:`begin`,
:meth:`planned`, :meth:`cancel`, :meth:`fail`) are conditional on the state they were decided
from, so two commands cannot both move one job. No torch; the caller's DynamoDB client.

Calls: :meth:`read` is one BatchGetItem (the job item and its counter shards);
:meth:`count` one TransactWriteItems (two when a cancelled count becomes done);
:meth:`settle` one BatchGetItem, and one UpdateItem when the job is due to end.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from posefleet.events import EventChannel
from posefleet.job_record import (
    COUNTER_FIELDS,
    COUNTER_SHARDS,
    INDEX,
    KEY,
    LISTING,
    LISTING_VALUE,
    MARKER_TTL,
    TRANSITIONS,
    TTL_ATTRIBUTE,
    Counts,
    JobRecord,
    JobRecordCorrupt,
    JobState,
    counter_id,
    error_attribute,
    finished_event,
    marker_id,
    shard_of,
    utc_iso,
)
from posefleet.logs import get_logger

__all__ = ["JobMoved", "JobTable", "StateSeen", "table_missing"]

log = get_logger("posefleet.job_table")

Counted = Literal["counted", "duplicate", "stale"]
CONDITION_FAILED = "ConditionalCheckFailed"
CONFLICT_ATTEMPTS = 6  # a transaction that met another on one of its items is tried again


class JobMoved(RuntimeError):
    """The job's state is not the one a move was decided from (another command moved it)."""


@dataclass(frozen=True, slots=True)
class StateSeen:
    """What a worker caches of a job: its state and the generation of its counters."""

    state: JobState
    counting: str


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(int(value))}


def table_missing(e: ClientError) -> bool:
    """Whether DynamoDB said the table does not exist (a stack or local server without it)."""
    return e.response.get("Error", {}).get("Code") == "ResourceNotFoundException"


def _reasons(e: ClientError) -> list[dict[str, Any]]:
    return list(e.response.get("CancellationReasons", []))


class JobTable:
    def __init__(self, *, dynamodb: Any, table: str, marker_ttl: timedelta = MARKER_TTL) -> None:
        if not table:
            raise ValueError("table must name the job records' DynamoDB table")
        self.db, self.table, self.marker_ttl = dynamodb, table, marker_ttl

    # -- reading ------------------------------------------------------------------------------
    def _get_many(self, ids: list[str], *, consistent: bool) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 100):
            keys = [{KEY: _s(i)} for i in ids[start : start + 100]]
            request = {self.table: {"Keys": keys, "ConsistentRead": consistent}}
            for attempt in range(8):
                got = self.db.batch_get_item(RequestItems=request)
                for item in got.get("Responses", {}).get(self.table, []):
                    found[item[KEY]["S"]] = item
                request = got.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05 * 2**attempt)
        return found

    @staticmethod
    def _ids(job_id: str) -> list[str]:
        return [job_id, *(counter_id(job_id, k) for k in range(COUNTER_SHARDS))]

    def read(self, job_id: str, *, consistent: bool = False) -> JobRecord | None:
        """The record, counts summed; None if the job has none. Raises JobRecordCorrupt."""
        items = self._get_many(self._ids(job_id), consistent=consistent)
        return self._record(job_id, items)

    def _record(self, job_id: str, items: dict[str, dict[str, Any]]) -> JobRecord | None:
        job = items.get(job_id)
        if job is None:
            return None
        shards = [items[i] for i in self._ids(job_id)[1:] if i in items]
        return JobRecord.from_items(job, shards)

    def state(self, job_id: str) -> StateSeen | None:
        """State and counting generation (one eventually consistent GetItem)."""
        got = self.db.get_item(
            TableName=self.table,
            Key={KEY: _s(job_id)},
            ProjectionExpression="#s, counting",
            ExpressionAttributeNames={"#s": "state"},
        ).get("Item")
        if got is None:
            return None
        try:
            return StateSeen(state=got["state"]["S"], counting=got["counting"]["S"])
        except (KeyError, TypeError):
            raise JobRecordCorrupt(f"the record of job {job_id!r} has no state") from None

    def jobs(self, *, state: JobState | None = None, limit: int = 50) -> Iterator[JobRecord]:
        """Jobs newest first (the sparse index), ``state`` only if given; a record that cannot
        be read is skipped with a warning, so one bad item cannot hide the others."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": INDEX,
            "KeyConditionExpression": f"{LISTING} = :l",
            "ExpressionAttributeValues": {":l": _s(LISTING_VALUE)},
            "ScanIndexForward": False,
        }
        if state is not None:
            kwargs["FilterExpression"] = "#s = :s"
            kwargs["ExpressionAttributeNames"] = {"#s": "state"}
            kwargs["ExpressionAttributeValues"][":s"] = _s(state)
        given = 0
        while given < limit:
            page = self.db.query(**kwargs)
            ids = [item[KEY]["S"] for item in page.get("Items", [])][: limit - given]
            for chunk in range(0, len(ids), 100 // (COUNTER_SHARDS + 1)):
                part = ids[chunk : chunk + 100 // (COUNTER_SHARDS + 1)]
                items = self._get_many([i for j in part for i in self._ids(j)], consistent=False)
                for job_id in part:
                    try:
                        record = self._record(job_id, items)
                    except JobRecordCorrupt as e:
                        log.warning("job_record_skipped", error=str(e))
                        continue
                    if record is not None:
                        given += 1
                        yield record
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- the producer's moves -------------------------------------------------------------------
    def begin(
        self,
        *,
        job_id: str,
        seen: JobRecord | None,
        fresh: bool,
        source: str,
        model: str,
        task_size: int,
        results: str,
        manifest: str,
        queue_url: str,
    ) -> str:
        """The job is (again) submitting. ``seen``: its record as read before deciding (None
        for a new job); ``fresh``: its counters start afresh (a new generation). Returns the
        counting generation the workers will count in."""
        now = utc_iso()
        meta = {
            "state": _s("submitting"),
            "source": _s(source),
            "model": _s(model),
            "task_size": _n(task_size),
            "results": _s(results),
            "manifest": _s(manifest),
            "queue_url": _s(queue_url),
            "started_at": _s(now),
            "tasks_planned": _n(0),
            "tasks_sent": _n(0),
        }
        if seen is None:
            item = {
                KEY: _s(job_id),
                LISTING: _s(LISTING_VALUE),
                "v": _n(1),
                "created_at": _s(now),
                "run": _s(now),
                "counting": _s(now),
                **meta,
            }
            put = {"TableName": self.table, "Item": item}
            put["ConditionExpression"] = f"attribute_not_exists({KEY})"
            self._transact([{"Put": put}, *self._fresh_shards(job_id, now)])
            return now
        if "submitting" not in TRANSITIONS[seen.state]:
            raise JobMoved(f"job {job_id} is {seen.state}; it cannot be submitted again now")
        counting = now if fresh else seen.counting
        run = now if seen.final else seen.run
        sets = {**meta, "run": _s(run), "counting": _s(counting)}
        removes = ["tasks_total", "images_total", "finished_at", "reason", "event_pending"]
        names = {f"#a{i}": k for i, k in enumerate(sets)}
        names |= {f"#r{i}": k for i, k in enumerate(removes)}
        values = {f":a{i}": v for i, v in enumerate(sets.values())}
        update = "SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(sets)))
        update += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))
        names["#st"] = "state"
        values[":seen"] = _s(seen.state)
        op = {
            "TableName": self.table,
            "Key": {KEY: _s(job_id)},
            "UpdateExpression": update,
            "ConditionExpression": "#st = :seen",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        try:
            self._transact([{"Update": op}, *(self._fresh_shards(job_id, now) if fresh else [])])
        except ClientError as e:
            if any(r.get("Code") == CONDITION_FAILED for r in _reasons(e)):
                raise JobMoved(f"job {job_id} changed state while being submitted") from None
            raise
        return counting

    def _fresh_shards(self, job_id: str, counting: str) -> list[dict[str, Any]]:
        return [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        KEY: _s(counter_id(job_id, k)),
                        "counting": _s(counting),
                        **{f: _n(0) for f in COUNTER_FIELDS},
                    },
                }
            }
            for k in range(COUNTER_SHARDS)
        ]

    def _transact(self, items: list[dict[str, Any]]) -> None:
        self.db.transact_write_items(TransactItems=items)

    def _update(
        self,
        job_id: str,
        update: str,
        *,
        condition: str,
        names: dict[str, str] | None = None,
        values: dict[str, Any] | None = None,
    ) -> bool:
        """One conditional UpdateItem of the job item; False if the condition failed."""
        try:
            self.db.update_item(
                TableName=self.table,
                Key={KEY: _s(job_id)},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "state", **(names or {})},
                ExpressionAttributeValues=values or {},
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def progress(self, job_id: str, *, planned: int, sent: int) -> None:
        """A submit's counts so far (while submitting or cancelling)."""
        self._update(
            job_id,
            "SET tasks_planned = :p, tasks_sent = :t",
            condition="#s IN (:a, :b)",
            values={
                ":p": _n(planned),
                ":t": _n(sent),
                ":a": _s("submitting"),
                ":b": _s("cancelling"),
            },
        )

    def planned(self, job_id: str, *, tasks_total: int, images_total: int, tasks_sent: int) -> None:
        """Every task is sent (or, cancelled during the submit, ``tasks_total`` of them were):
        the total is known and the job runs (a cancelling job stays cancelling)."""
        values = {":t": _n(tasks_total), ":i": _n(images_total), ":n": _n(tasks_sent)}
        totals = "SET tasks_total = :t, images_total = :i, tasks_sent = :n"
        if not self._update(
            job_id,
            totals + ", tasks_planned = :t, #s = :run",
            condition="#s = :sub",
            values={**values, ":sub": _s("submitting"), ":run": _s("running")},
        ):
            self._update(
                job_id, totals, condition="#s = :can", values={**values, ":can": _s("cancelling")}
            )

    def cancel(self, job_id: str) -> JobState | None:
        """Submitting or running -> cancelling; returns the state it was in (None: no job)."""
        seen = self.state(job_id)
        if seen is None:
            return None
        if "cancelling" in TRANSITIONS[seen.state]:
            ok = self._update(
                job_id,
                "SET #s = :c",
                condition="#s = :seen",
                values={":c": _s("cancelling"), ":seen": _s(seen.state)},
            )
            if not ok:
                raise JobMoved(f"job {job_id} changed state while being cancelled; try again")
        return seen.state

    def fail(self, job_id: str, reason: str, *, events: EventChannel | None = None) -> bool:
        """A submit that stopped on an error: submitting -> failed, ``job.finished`` published
        by this caller if it moved it."""
        moved = self._update(
            job_id,
            "SET #s = :f, finished_at = :now, reason = :r, event_pending = :p",
            condition="#s = :sub",
            values={
                ":f": _s("failed"),
                ":now": _s(utc_iso()),
                ":r": _s(reason[:1000]),
                ":p": {"BOOL": True},
                ":sub": _s("submitting"),
            },
        )
        if moved:
            self.publish(job_id, events)
        return moved

    # -- the workers' counts ------------------------------------------------------------------
    def count(
        self, job_id: str, task_id: str, *, counting: str, counts: Counts, cancelled: bool = False
    ) -> Counted:
        """Count one finished (or cancelled) task once: ``counted`` by this call, a
        ``duplicate`` of a count already made, or ``stale`` (no record, or another counting
        generation than ``counting``: read the state again). Transactions that meet another
        on the same item are retried here a few times; other botocore errors are raised."""
        kind = "cancelled" if cancelled else "done"
        adds = {"tasks_cancelled": 1, "tasks_finished": 1} if cancelled else _adds(counts)
        why, old = self._try_count(job_id, task_id, counting, kind, adds, over_cancelled=False)
        if why is None:
            return "counted"
        if why == "stale":
            return "stale"
        if cancelled or old.get("kind", {}).get("S") != "cancelled":
            return "duplicate"
        # counted cancelled by a worker that saw the cancel, done by one that had the task
        # already: it moves from one count to the other, once
        adds = {**adds, "tasks_cancelled": -1, "tasks_finished": 0}
        why, _ = self._try_count(job_id, task_id, counting, kind, adds, over_cancelled=True)
        return "counted" if why is None else "stale" if why == "stale" else "duplicate"

    def _try_count(self, *args: Any, over_cancelled: bool) -> tuple[str | None, dict]:
        """None if counted; ``("marker", old marker)`` or ``("stale", {})`` if a condition
        failed."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                self._count(*args, over_cancelled=over_cancelled)
                return None, {}
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise
                reasons = _reasons(e)
                if len(reasons) == 2 and reasons[1].get("Code") == CONDITION_FAILED:
                    return "stale", {}
                if len(reasons) == 2 and reasons[0].get("Code") == CONDITION_FAILED:
                    return "marker", reasons[0].get("Item", {})
                if attempt + 1 == CONFLICT_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.02 * 2**attempt))  # another transaction's item
        raise AssertionError("unreachable")

    def _count(
        self,
        job_id: str,
        task_id: str,
        counting: str,
        kind: str,
        adds: dict[str, int],
        *,
        over_cancelled: bool,
    ) -> None:
        expires = int(time.time() + self.marker_ttl.total_seconds())
        marker_condition = (
            "kind = :cancelled AND #c = :g"
            if over_cancelled
            else f"attribute_not_exists({KEY}) OR #c <> :g"
        )
        marker_values: dict[str, Any] = {":g": _s(counting)}
        if over_cancelled:
            marker_values[":cancelled"] = _s("cancelled")
        names = {f"#k{i}": name for i, name in enumerate(adds)}
        values = {f":k{i}": _n(n) for i, n in enumerate(adds.values())}
        self.db.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {
                            KEY: _s(marker_id(job_id, task_id)),
                            "kind": _s(kind),
                            "counting": _s(counting),
                            TTL_ATTRIBUTE: _n(expires),
                        },
                        "ConditionExpression": marker_condition,
                        "ExpressionAttributeNames": {"#c": "counting"},
                        "ExpressionAttributeValues": marker_values,
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {KEY: _s(counter_id(job_id, shard_of(task_id)))},
                        "UpdateExpression": "ADD "
                        + ", ".join(f"#k{i} :k{i}" for i in range(len(adds))),
                        "ConditionExpression": "#c = :g",
                        "ExpressionAttributeNames": {**names, "#c": "counting"},
                        "ExpressionAttributeValues": {**values, ":g": _s(counting)},
                    }
                },
            ]
        )

    # -- ending ---------------------------------------------------------------------------------
    def settle(self, job_id: str, *, events: EventChannel | None = None) -> JobRecord | None:
        """End the job if its counts are in: one consistent read, then, if due, the one
        conditional update that moves it to its final state. Returns
        the final record if this call ended the job (and published ``job.finished``)."""
        record = self.read(job_id, consistent=True)
        if record is None:
            return None
        end = record.ending()
        if end is None:
            return None
        now = utc_iso()
        moved = self._update(
            job_id,
            "SET #s = :end, finished_at = :now, event_pending = :p",
            condition="#s = :seen AND counting = :g",
            values={
                ":end": _s(end),
                ":now": _s(now),
                ":p": {"BOOL": True},
                ":seen": _s(record.state),
                ":g": _s(record.counting),
            },
        )
        if not moved:
            return None
        final = record.model_copy(update={"state": end, "finished_at": now, "event_pending": True})
        self.publish(job_id, events, record=final)
        return final

    def publish(
        self, job_id: str, events: EventChannel | None, *, record: JobRecord | None = None
    ) -> bool:
        """Publish a finished job's pending ``job.finished`` (its id is stable: publishing it
        again is harmless) and clear the pending mark; False if it stays pending."""
        if events is None:
            return False
        record = record or self.read(job_id, consistent=True)
        if record is None or not record.final or not record.event_pending:
            return False
        try:
            events.publish(finished_event(record))
        except (ClientError, BotoCoreError) as e:
            log.warning("job_finished_unpublished", job=job_id, error=str(e))
            return False
        self._update(
            job_id,
            "REMOVE event_pending",
            condition="#s = :s",
            values={":s": _s(record.state)},
        )
        return True


def _adds(counts: Counts) -> dict[str, int]:
    adds = {f: getattr(counts, f) for f in COUNTER_FIELDS if getattr(counts, f)}
    adds |= {error_attribute(k): n for k, n in counts.errors.items() if n}
    return adds or {"tasks_done": 1, "tasks_finished": 1}
