"""boto3 clients with posefleet's retry policy. No torch here.

Endpoints and credentials come from the standard AWS chain; ``AWS_ENDPOINT_URL`` points every
client at a local server (moto in local mode). Throttling and 5xx are retried by botocore's
``standard`` retry mode, with a bounded number of attempts.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

__all__ = ["NOT_FOUND_CODES", "client", "is_not_found"]

# What S3 answers for a missing key or bucket: NoSuchKey to a GET, a bare 404 to a HEAD, and
# NotFound from some clients and emulators.
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


def client(
    service: str, *, max_attempts: int = 5, max_pool: int = 32, botocore_session: Any = None
) -> Any:
    """A boto3 client for ``service`` ("s3", "sqs", ...), created by the caller's entry point.
    ``botocore_session``: a botocore session of the caller's (e.g. with its own response
    parser, as the producer's listing client has); a fresh one by default."""
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=max_pool,
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session(botocore_session=botocore_session).client(service, config=config)


def is_not_found(error: ClientError) -> bool:
    """Whether an S3 error says the object (or its bucket) is not there."""
    return str(error.response.get("Error", {}).get("Code", "")) in NOT_FOUND_CODES
