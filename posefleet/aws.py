"""boto3 clients with posefleet's retry policy. No torch here.

Endpoints and credentials come from the standard AWS chain; ``AWS_ENDPOINT_URL`` points every
client at a local server (moto in local mode).

**Retries, decided.** botocore's ``standard`` mode retries throttling, 5xx, ``RequestTimeout``
and dropped connections with exponential back-off and jitter (``rand * 2**attempt`` s), and
spends a per-client retry quota (500 units, 14 a retry, 5 a throttled one, refunded on
success): once a long outage drains it, a call fails after its first attempt until successes
refill it. Callers keep ``max_attempts`` small (the worker: 3, ``POSEFLEET_AWS_MAX_ATTEMPTS``)
so one call gives up within about 3 s, and retry longer faults themselves, in place, where they
know what a retry costs (:func:`is_transient` says which errors are worth it; the worker's
``worker/retry.py``). Legacy mode has no quota but retries fewer kinds of error, and adaptive
mode rate-limits the client after throttling, which slows the recovery we want fast.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
)
from botocore.loaders import create_loader

__all__ = ["NOT_FOUND_CODES", "client", "is_not_found", "is_transient", "new_botocore_session"]

# What S3 answers for a missing key or bucket: NoSuchKey to a GET, a bare 404 to a HEAD, and
# NotFound from some clients and emulators.
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})

# Errors that say "not now" rather than "no": botocore's throttling and transient codes
# (botocore/retries/standard.py), and what SQS, SNS and DynamoDB answer when they are unwell.
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "KMS.ThrottlingException",
    }
)
# Errors of the caller's own making, never cured by waiting.
_PERMANENT = (NoCredentialsError, NoRegionError, ParamValidationError)


def client(
    service: str, *, max_attempts: int = 3, max_pool: int = 32, botocore_session: Any = None
) -> Any:
    """A boto3 client for ``service`` ("s3", "sqs", ...), created by the caller's entry point.
    ``botocore_session``: a botocore session of the caller's (e.g. with its own response
    parser, as the producer's listing client has); a fresh one by default."""
    config = Config(
        # total_max_attempts counts the first try; botocore's max_attempts counts retries only
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=max_pool,
        connect_timeout=10,
        read_timeout=60,
    )
    return _boto3_session(botocore_session).client(service, config=config)


_sessions: weakref.WeakKeyDictionary[Any, boto3.session.Session] = weakref.WeakKeyDictionary()
_sessions_lock = threading.Lock()


_loader: Any = None


def new_botocore_session() -> Any:
    """A fresh botocore session (its own credentials and config, read from the environment)
    whose service models come from one loader per process: each session reading the JSON models
    anew cost about 0.1 s a client."""
    global _loader
    with _sessions_lock:
        if _loader is None:
            _loader = create_loader()
    session = botocore.session.get_session()
    session.register_component("data_loader", _loader)
    return session


def _boto3_session(botocore_session: Any) -> boto3.session.Session:
    """One boto3 session per botocore session: each boto3 session registers its S3 helpers
    (upload_file, ...) on the botocore session, and a second one would register them twice."""
    if botocore_session is None:
        return boto3.session.Session(botocore_session=new_botocore_session())
    with _sessions_lock:
        found = _sessions.get(botocore_session)
        if found is None:
            found = _sessions[botocore_session] = boto3.session.Session(
                botocore_session=botocore_session
            )
        return found


def is_not_found(error: ClientError) -> bool:
    """Whether an S3 error says the object (or its bucket) is not there."""
    return str(error.response.get("Error", {}).get("Code", "")) in NOT_FOUND_CODES


def is_transient(error: BaseException) -> bool:
    """Whether an AWS call's error may go away by itself: throttling, a 5xx, a timeout, a
    dropped or refused connection. A refusal that names the request (access denied, no such
    queue, a bad receipt handle) is not."""
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return str(info.get("Code", "")) in _TRANSIENT_CODES or int(status or 0) >= 500
    return isinstance(error, BotoCoreError) and not isinstance(error, _PERMANENT)
