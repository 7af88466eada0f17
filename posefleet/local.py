"""Local mode: moto's server on 127.0.0.1, speaking the real S3, SQS, DynamoDB and SNS
protocols.

:class:`LocalAWS` starts the server (:mod:`posefleet.moto_server`: moto's, with DynamoDB's
atomicity) on a free loopback port and stops it (by its process handle); :func:`bootstrap`
creates the tasks queue, its dead-letter queue, the buckets and the job records' table with the
same settings infra/ provisions (:mod:`posefleet.resources`, :mod:`posefleet.job_record`).
Producer and worker then run unchanged with :meth:`LocalAWS.env` in their environment.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from posefleet.job_record import TTL_ATTRIBUTE, table_definition
from posefleet.resources import DEFAULT_DLQ_NAME, DEFAULT_JOBS_TABLE, DEFAULT_QUEUE_NAME, QueueSpec

__all__ = ["LocalAWS", "LocalQueues", "bootstrap", "free_port", "stop_with_parent"]

REGION = "us-east-1"
_PR_SET_PDEATHSIG = 1


def stop_with_parent() -> None:
    """In a child about to exec (``preexec_fn``): ask Linux to send it SIGTERM when the process
    that started it dies, so that a killed owner leaves nothing behind. Elsewhere, nothing."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalAWS:
    """moto's server as a child process. Use as a context manager, or start() and stop()."""

    def __init__(
        self, *, port: int | None = None, log_file: Path | None = None, own_session: bool = False
    ) -> None:
        """``own_session``: run the server in its own session, so that a Ctrl-C in the terminal
        does not stop it before its owner has drained what uses it (the owner stops it); on
        Linux it is also sent SIGTERM if its owner dies without stopping it."""
        if port is not None and not 0 <= port < 65536:
            raise ValueError(f"port must be 1 to 65535, or 0 or None for a free one; got {port}")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        self.own_session = own_session
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """Variables that point boto3 (in this or a child process) at the server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def start(self, timeout: float = 30.0) -> LocalAWS:
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        server = ["-m", "posefleet.moto_server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            [sys.executable, *server],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=self.own_session,
            preexec_fn=stop_with_parent if self.own_session else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"moto server did not answer on {self.url} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def apply_env(self) -> None:
        """Point this process's boto3 at the server too."""
        os.environ.update(self.env())

    def __enter__(self) -> LocalAWS:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class LocalQueues:
    queue_url: str
    dlq_url: str
    jobs_table: str | None = None  # created when bootstrap was given a DynamoDB client


def bootstrap(
    s3: Any,
    sqs: Any,
    *,
    buckets: Iterable[str],
    spec: QueueSpec | None = None,
    queue_name: str = DEFAULT_QUEUE_NAME,
    dlq_name: str = DEFAULT_DLQ_NAME,
    dynamodb: Any = None,
    jobs_table: str = DEFAULT_JOBS_TABLE,
) -> LocalQueues:
    """Create (or reuse) the queues and buckets, and with ``dynamodb`` the job records' table,
    as infra/ would."""
    spec = spec or QueueSpec()
    for bucket in buckets:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    dlq_url = sqs.create_queue(QueueName=dlq_name, Attributes=spec.dlq_attributes())["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(QueueName=queue_name, Attributes=spec.queue_attributes(dlq_arn))[
        "QueueUrl"
    ]
    if dynamodb is None:
        return LocalQueues(queue_url=queue_url, dlq_url=dlq_url)
    with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
        dynamodb.create_table(**table_definition(jobs_table))
        dynamodb.update_time_to_live(
            TableName=jobs_table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    return LocalQueues(queue_url=queue_url, dlq_url=dlq_url, jobs_table=jobs_table)
