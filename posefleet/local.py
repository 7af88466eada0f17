"""Local mode: moto's server on 127.0.0.1, speaking the real S3, SQS, DynamoDB and SNS
protocols.

:class:`LocalAWS` starts the server (:mod:`posefleet.moto_server`: moto's, with DynamoDB's
atomicity) on a free loopback port and stops it (by its process handle); :func:`bootstrap`
creates both lanes' queues (backfill and live, each with its dead-letter queue), the buckets,
the events topic with a queue subscribed to it and the job records' table, with the same
settings infra/ provisions (:mod:`posefleet.resources`, :mod:`posefleet.job_record`);
:func:`route_uploads` sends an input bucket's uploads to the live lane, as infra/ does with
``notify``. Producer and worker then run unchanged with :meth:`LocalAWS.env` in their
environment.
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
from posefleet.resources import (
    DEFAULT_DLQ_NAME,
    DEFAULT_EVENTS_QUEUE_NAME,
    DEFAULT_EVENTS_TOPIC_NAME,
    DEFAULT_JOBS_TABLE,
    DEFAULT_LIVE_DLQ_NAME,
    DEFAULT_LIVE_QUEUE_NAME,
    DEFAULT_QUEUE_NAME,
    QueueSpec,
)

__all__ = [
    "LocalAWS",
    "LocalQueues",
    "bootstrap",
    "free_port",
    "route_uploads",
    "stop_with_parent",
    "subscribe_queue",
]

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
    queue_url: str  # the backfill lane
    dlq_url: str
    live_queue_url: str | None = None
    live_dlq_url: str | None = None
    events_topic: str | None = None  # the SNS topic's ARN
    events_queue_url: str | None = None  # a queue subscribed to it (raw delivery)
    jobs_table: str | None = None  # created when bootstrap was given a DynamoDB client


def _queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]


def _lane(sqs: Any, spec: QueueSpec, name: str, dlq_name: str) -> tuple[str, str]:
    dlq_url = sqs.create_queue(QueueName=dlq_name, Attributes=spec.dlq_attributes())["QueueUrl"]
    attributes = spec.queue_attributes(_queue_arn(sqs, dlq_url))
    return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"], dlq_url


def subscribe_queue(sqs: Any, sns: Any, *, topic_arn: str, queue_name: str) -> str:
    """Create (or reuse) a queue and subscribe it to the topic with raw delivery, so each
    message's body is the event's JSON as published; returns the queue's URL. Every subscribed
    queue gets every event: one per reader that must see them all."""
    url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=_queue_arn(sqs, url),
        Attributes={"RawMessageDelivery": "true"},
    )
    return url


def route_uploads(s3: Any, sqs: Any, *, bucket: str, queue_url: str, prefix: str = "") -> None:
    """Send ``bucket``'s ObjectCreated notifications (under ``prefix``) to the queue, as infra/
    does for an input bucket with ``notify``: the live lane. S3 keeps one notification
    configuration per bucket; this replaces it. S3 (moto's server too) first sends an
    ``s3:TestEvent``, which the worker acknowledges and ignores. Only objects created from now
    on are announced: what the bucket holds already is backfill work."""
    rule: dict[str, Any] = {
        "QueueArn": _queue_arn(sqs, queue_url),
        "Events": ["s3:ObjectCreated:*"],
    }
    if prefix:
        rule["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [rule]}
    )


def bootstrap(
    s3: Any,
    sqs: Any,
    *,
    buckets: Iterable[str],
    spec: QueueSpec | None = None,
    queue_name: str = DEFAULT_QUEUE_NAME,
    dlq_name: str = DEFAULT_DLQ_NAME,
    live_queue_name: str | None = DEFAULT_LIVE_QUEUE_NAME,
    live_dlq_name: str = DEFAULT_LIVE_DLQ_NAME,
    sns: Any = None,
    events_topic_name: str = DEFAULT_EVENTS_TOPIC_NAME,
    events_queue_name: str = DEFAULT_EVENTS_QUEUE_NAME,
    dynamodb: Any = None,
    jobs_table: str = DEFAULT_JOBS_TABLE,
) -> LocalQueues:
    """Create (or reuse) the queues, buckets, events topic and job records' table, as infra/
    would. ``live_queue_name`` None: no live lane; ``sns`` None: no events topic;
    ``dynamodb`` None: no table."""
    spec = spec or QueueSpec()
    for bucket in buckets:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    queue_url, dlq_url = _lane(sqs, spec, queue_name, dlq_name)
    live_url = live_dlq_url = None
    if live_queue_name:
        live_url, live_dlq_url = _lane(sqs, spec, live_queue_name, live_dlq_name)
    topic = events_url = None
    if sns is not None:
        topic = sns.create_topic(Name=events_topic_name)["TopicArn"]
        events_url = subscribe_queue(sqs, sns, topic_arn=topic, queue_name=events_queue_name)
    table = None
    if dynamodb is not None:
        with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
            dynamodb.create_table(**table_definition(jobs_table))
            dynamodb.update_time_to_live(
                TableName=jobs_table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
        table = jobs_table
    return LocalQueues(
        queue_url=queue_url,
        dlq_url=dlq_url,
        live_queue_url=live_url,
        live_dlq_url=live_dlq_url,
        events_topic=topic,
        events_queue_url=events_url,
        jobs_table=table,
    )
