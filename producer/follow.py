"""Following a job until every task has a result: a progress bar on a terminal, plain lines
otherwise, and a clear failure when tasks ended in the dead-letter queue.

IAM: ``sqs:GetQueueAttributes`` on the tasks queue and its dead-letter queue.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from tqdm import tqdm

from posefleet.layout import Manifest, ResultsLocation
from posefleet.result import load_lines
from producer.results import JobProgress, read_progress

__all__ = ["JobStalled", "dead_letter_url", "follow", "queue_depth"]


class JobStalled(RuntimeError):
    """Tasks have no result, nothing is queued for them, and the dead-letter queue holds some."""


def dead_letter_url(sqs: Any, queue_url: str) -> str | None:
    """The dead-letter queue named by ``queue_url``'s RedrivePolicy, or None if it has none.

    SQS leaves ``Attributes`` out of its answer when none of the asked attributes is set.
    """
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]).get(
        "Attributes", {}
    )
    if "RedrivePolicy" not in attrs:
        return None
    arn = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"]
    account, name = arn.split(":")[4:6]
    return sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]


def queue_depth(sqs: Any, url: str) -> int:
    """Visible plus in-flight messages (approximate, as SQS reports them)."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    ).get("Attributes", {})
    return int(attrs.get("ApproximateNumberOfMessages", 0)) + int(
        attrs.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


class _Failures:
    """Error lines in the tasks finished so far; each task's object is read once."""

    def __init__(self, s3: Any, location: ResultsLocation, job_id: str) -> None:
        self.s3, self.location, self.job_id = s3, location, job_id
        self.per_task: dict[str, int] = {}

    def count(self, done_ids: frozenset[str]) -> int:
        for task_id in done_ids - self.per_task.keys():
            key = self.location.task_key(self.job_id, task_id)
            body = self.s3.get_object(Bucket=self.location.bucket, Key=key)["Body"].read()
            self.per_task[task_id] = sum(1 for line in load_lines(body) if line.status == "error")
        return sum(self.per_task.values())


def follow(
    s3: Any,
    sqs: Any,
    location: ResultsLocation,
    manifest: Manifest,
    *,
    interval: float = 2.0,
    timeout: float | None = None,
    stream: IO[str] | None = None,
) -> JobProgress:
    """Poll until the job is complete; raises :class:`JobStalled` or ``TimeoutError``."""
    stream = stream or sys.stderr
    dlq = dead_letter_url(sqs, manifest.queue_url)
    if dlq is None:
        print(
            f"job {manifest.job_id}: {manifest.queue_url} has no dead-letter queue "
            "(no RedrivePolicy): tasks that keep failing are retried until they expire",
            file=stream,
            flush=True,
        )
    started = time.monotonic()
    first = read_progress(s3, location, manifest)
    interactive = stream.isatty()
    bar = tqdm(
        total=manifest.images,
        initial=first.images_done,
        unit="img",
        desc=f"job {manifest.job_id}",
        file=stream,
        disable=not interactive,
        dynamic_ncols=True,
    )
    stalled_polls = 0
    progress = first
    failures = _Failures(s3, location, manifest.job_id)
    try:
        while True:
            progress = read_progress(s3, location, manifest)
            bar.update(progress.images_done - bar.n)
            dead = queue_depth(sqs, dlq) if dlq else 0
            elapsed = time.monotonic() - started
            rate = (progress.images_done - first.images_done) / elapsed if elapsed > 0 else 0.0
            failed = failures.count(progress.done_ids)
            bar.set_postfix(
                tasks=f"{progress.tasks_done}/{progress.tasks_total}",
                failed=failed,
                dead=dead,
                refresh=False,
            )
            if not interactive:
                eta = (progress.images_total - progress.images_done) / rate if rate > 0 else None
                print(
                    f"job {manifest.job_id}: "
                    f"{progress.images_done}/{progress.images_total} images ({failed} failed), "
                    f"{progress.tasks_remaining} tasks remaining, {rate:.1f} img/s, "
                    f"eta {f'{eta:.0f}s' if eta is not None else '?'}, dead-letter {dead}",
                    file=stream,
                    flush=True,
                )
            if progress.complete:
                return progress
            stalled_polls = (
                stalled_polls + 1 if dead and queue_depth(sqs, manifest.queue_url) == 0 else 0
            )
            if stalled_polls >= 2:
                raise JobStalled(
                    f"{progress.tasks_remaining} tasks of job {manifest.job_id} have no result, "
                    f"the queue is empty and {dead} messages are in the dead-letter queue; "
                    "see docs/operations.md"
                )
            if timeout is not None and elapsed > timeout:
                raise TimeoutError(f"job {manifest.job_id} not complete after {timeout:.0f}s")
            time.sleep(interval)
    finally:
        bar.close()
