"""What test modules share: putting objects, running the producer, draining queues, waiting,
reading a job's lines back. Fixtures stay in conftest.py; these are plain functions."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from posefleet.aws import client
from posefleet.layout import ResultsLocation
from posefleet.resources import DEFAULT_JOBS_TABLE
from posefleet.result import ResultLine, dump_lines, load_lines
from posefleet.task import TaskMessage
from producer.job import Job
from tests.conftest import INPUT, RESULTS, Stack
from worker.jobs import JobTracker

__all__ = [
    "LOC",
    "RESULTS_URI",
    "all_lines",
    "drain",
    "job_of",
    "produce",
    "run",
    "upload",
    "wait_until",
    "write_results",
]

RESULTS_URI = f"s3://{RESULTS}/results"  # the in-process tests' results location
LOC = ResultsLocation.parse(RESULTS_URI)


def job_of(s3: Any, job_id: str, **kw: Any) -> Job:
    """The job ``job_id`` under the in-process tests' results location."""
    return Job(s3=s3, location=LOC, job_id=job_id, **kw)


def upload(
    s3: Any, files: Mapping[str, bytes] | Iterable[str], *, bucket: str = INPUT
) -> list[str]:
    """Put ``files`` (key -> bytes, or keys whose bodies do not matter) in ``bucket``;
    returns their keys, sorted."""
    items = files.items() if isinstance(files, Mapping) else ((k, b"x") for k in files)
    keys = []
    for key, data in items:
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        keys.append(key)
    return sorted(keys)


def drain(sqs: Any, url: str) -> list[TaskMessage]:
    """Every task on the queue, received and deleted (no long poll: an empty receive ends it)."""
    tasks = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not got:
            return tasks
        for msg in got:
            tasks.append(TaskMessage.model_validate_json(msg["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])


def run(capsys: Any, *args: str) -> tuple[int, Any, str]:
    """``python -m producer ARGS`` in this process: exit code, stdout (parsed if JSON), stderr."""
    from producer.__main__ import main

    code = main(list(args))
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except json.JSONDecodeError:
        return code, out, err


def submit(capsys: Any, queues: Any, *extra: str, prefix: str = "p/") -> tuple[int, Any, str]:
    """``python -m producer`` for ``prefix`` of the input bucket onto ``queues``' backfill queue,
    results to :data:`RESULTS_URI`, with ``extra`` arguments."""
    return run(
        capsys,
        "--bucket",
        INPUT,
        "--prefix",
        prefix,
        "--queue-url",
        queues.queue_url,
        "--results",
        RESULTS_URI,
        *extra,
    )


def produce(stack: Stack, prefix: str, job: str, task_size: int = 5) -> None:
    """The real producer, as a process, enqueueing ``prefix`` of the stack's input bucket."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "producer",
            "--bucket",
            stack.input,
            "--prefix",
            prefix,
            "--job-id",
            job,
            "--task-size",
            str(task_size),
        ],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr


def all_lines(stack: Stack, job: str) -> list[ResultLine]:
    """Every line of every task object of the job, without de-duplication."""
    loc = ResultsLocation.parse(stack.results_uri)
    lines = []
    for page in stack.s3.get_paginator("list_objects_v2").paginate(
        Bucket=stack.results, Prefix=loc.tasks_prefix(job)
    ):
        for obj in page.get("Contents", []):
            lines += load_lines(
                stack.s3.get_object(Bucket=stack.results, Key=obj["Key"])["Body"].read()
            )
    return lines


def write_results(
    s3: Any,
    task: TaskMessage,
    broken: Iterable[str] = frozenset(),
    tracker: JobTracker | None = None,
) -> None:
    """What a worker does with a finished task: its result object (``broken`` keys as error
    lines), then its count in the job record."""
    from tests.v2jobs import line

    bad = set(broken)
    lines = [line(k, error=k in bad, bucket=task.bucket) for k in task.keys]
    s3.put_object(Bucket=RESULTS, Key=task.result_key, Body=dump_lines(lines))
    tracker = tracker or JobTracker(dynamodb=client("dynamodb"), table=DEFAULT_JOBS_TABLE)
    tracker.task_finished(task, lines)


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)
