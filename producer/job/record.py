"""A job's records: its manifest in S3 and its record in DynamoDB, as the producer keeps them.

* ``<results>/<job>/manifest.json`` (:class:`posefleet.layout.Manifest`): what the job was
  asked to do (source, task sizes, queue, model), its counts and pointers to its plan. Submit
  writes it (``complete: false`` while it plans and sends, ``true`` after); every other command
  reads it first, so an unknown job id is a clear :class:`JobNotFound`, and a manifest this
  producer cannot read (corrupt, or the one-day version 1 format that listed every task id) is a
  clear :class:`ManifestUnreadable`, never a traceback.
* the job record (posefleet/job_record.py): where the job stands. :class:`SubmitRecord` is the
  submit's part of it; ``status``, ``jobs`` and ``cancel`` read and move it through
  :class:`posefleet.job_table.JobTable`.

IAM: ``s3:GetObject`` and ``s3:PutObject`` on ``<results>/*/manifest.json``; the producer's
DynamoDB actions of posefleet/job_record.py.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from posefleet.events import EventChannel
from posefleet.job_record import JobRecord, JobRecordCorrupt, counts_of
from posefleet.job_table import JobMoved, JobTable, table_missing
from posefleet.layout import Manifest, ResultsLocation
from posefleet.result import ResultLine
from posefleet.task import TaskMessage

__all__ = ["JobConflict", "JobNotFound", "SubmitRecord", "read_manifest", "write_manifest"]


class JobNotFound(LookupError):
    """No manifest under the results location for this job id."""


class ManifestUnreadable(ValueError):
    """A manifest is there but is not one this producer reads."""


def read_manifest(s3: Any, location: ResultsLocation, job_id: str) -> Manifest:
    key = location.manifest_key(job_id)
    try:
        body = s3.get_object(Bucket=location.bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise JobNotFound(f"no job {job_id!r} under {location.uri} (no manifest.json)") from None
    try:
        return Manifest.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ManifestUnreadable(
            f"s3://{location.bucket}/{key} is not a manifest this producer reads "
            f"({where}: {first['msg']}); submit the job again under a new --job-id"
        ) from None


def write_manifest(s3: Any, location: ResultsLocation, manifest: Manifest) -> None:
    s3.put_object(
        Bucket=location.bucket,
        Key=location.manifest_key(manifest.job_id),
        Body=manifest.model_dump_json(indent=2).encode(),
        ContentType="application/json",
    )


# -- the job record in DynamoDB (posefleet/job_record.py), as one submit keeps it -----------------

RECORD_CHECK_EVERY = 1.0  # seconds between looks at the record's state while sending
PROGRESS_EVERY = 5.0  # seconds between writes of the submit's counts to the record


class SubmitRecord:
    """What one submit does to its job's record: decide how the job restarts, create or
    restart it before the first task is sent, say how far the submit got, notice a cancel,
    and settle the job once every task is sent (an empty or already finished job ends here).

    Without a table (``table`` None, or DynamoDB says it does not exist) it does nothing: the
    submit works as before the record existed, and says so once."""

    def __init__(self, table: JobTable | None, events: EventChannel | None, job_id: str) -> None:
        self.table, self.events, self.job_id = table, events, job_id
        self.seen: JobRecord | None = None
        self.fresh = False
        self.begun = False
        self.counting = ""
        self.counts_skipped = False  # the record is new but the job is not: count what is done
        self._checked = self._written = 0.0
        self.cancelled = False

    def _off(self, e: ClientError) -> bool:
        if not table_missing(e):
            return False
        print(
            f"producer: no job records table ({e.response['Error'].get('Message')}); "
            "the job runs without a record: jobs, cancel and job.finished are off",
            file=sys.stderr,
        )
        self.table = None
        return True

    def prepare(self, *, manifest: Manifest | None, skip_done: bool) -> bool:
        # (a job whose record is new but whose manifest is not: submitted before the table
        # existed, or the local fleet restarted without it; tasks skipped as done are then
        # counted by the submit itself, since no worker will count them)
        """Read the record and decide; returns whether to skip done tasks (a cancelled or
        failed job resumes as --skip-done does). Raises JobConflict for a cancelling job."""
        if self.table is None:
            return skip_done
        try:
            self.seen = self.table.read(self.job_id, consistent=True)
        except ClientError as e:
            if self._off(e):
                return skip_done
            raise
        except JobRecordCorrupt as e:
            raise JobConflict(f"{e}; submit it under another --job-id") from None
        state = self.seen.state if self.seen else None
        if state == "cancelling":
            raise JobConflict(
                f"job {self.job_id} is being cancelled; once `python -m producer status "
                f"{self.job_id}` says cancelled, submit it again to resume it"
            )
        if state in ("cancelled", "failed"):
            skip_done = True
        self.fresh = state == "complete" and not skip_done
        self.counts_skipped = self.seen is None and manifest is not None and skip_done
        return skip_done

    def begin(self, **meta: Any) -> None:
        """Before the first task goes: the record says submitting (created if new)."""
        if self.table is None or self.begun:
            return
        try:
            self.counting = self.table.begin(
                job_id=self.job_id, seen=self.seen, fresh=self.fresh, **meta
            )
        except ClientError as e:
            if not self._off(e):
                raise
        except JobMoved as e:
            raise JobConflict(str(e)) from None
        self.begun = True

    def tick(self, *, planned: int, sent: int) -> bool:
        """While sending: True once the job reads cancelling (then stop sending)."""
        if self.table is None or not self.begun or self.cancelled:
            return self.cancelled
        now = time.monotonic()
        if now - self._checked >= RECORD_CHECK_EVERY:
            self._checked = now
            seen = self.table.state(self.job_id)
            self.cancelled = seen is not None and seen.state == "cancelling"
        if now - self._written >= PROGRESS_EVERY:
            self._written = now
            self.table.progress(self.job_id, planned=planned, sent=sent)
        return self.cancelled

    def count_done(self, task: TaskMessage, lines: list[ResultLine]) -> None:
        """A task skipped as done that no worker counted (``counts_skipped``), counted once."""
        if self.table is not None and self.begun:
            self.table.count(
                task.job_id, task.task_id, counting=self.counting, counts=counts_of(lines)
            )

    def sent_all(self, *, tasks: int, images: int, sent: int) -> JobRecord | None:
        """Every task is on the queue, or as many as went before a cancel: the total is set
        and the job settled. Returns the record if this call ended the job."""
        if self.table is None or not self.begun:
            return None
        self.table.planned(self.job_id, tasks_total=tasks, images_total=images, tasks_sent=sent)
        return self.table.settle(self.job_id, events=self.events)

    def failed(self, reason: str, *, tasks_sent: int, images: int) -> None:
        """The submit stopped on an error: the job fails (a cancel under way still ends it)."""
        if self.table is None or not self.begun:
            return
        if not self.table.fail(self.job_id, reason, events=self.events):
            self.sent_all(tasks=tasks_sent, images=images, sent=tasks_sent)


class JobConflict(ValueError):
    """The job id names an unfinished job of another source or task size, or one being
    cancelled."""
