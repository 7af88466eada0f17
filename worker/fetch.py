"""Fetching one image from S3, with errors sorted into the image's fault and S3's.

An image's own fault (missing, denied, too large) becomes an :class:`ImageError` and an error
line; anything else (throttling or 5xx that botocore's retries did not cure, a dropped
connection) raises :class:`TransientFetchError`, and the task is left for redelivery.

IAM: ``s3:GetObject`` on the input buckets and prefixes.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from posefleet.result import ErrorKind, ImageError

__all__ = ["TransientFetchError", "fetch_object"]

_IMAGE_FAULTS = {
    "NoSuchKey": ErrorKind.NOT_FOUND,
    "NoSuchBucket": ErrorKind.NOT_FOUND,
    "404": ErrorKind.NOT_FOUND,
    "NotFound": ErrorKind.NOT_FOUND,
    "AccessDenied": ErrorKind.ACCESS_DENIED,
    "403": ErrorKind.ACCESS_DENIED,
    "AllAccessDisabled": ErrorKind.ACCESS_DENIED,
    "InvalidObjectState": ErrorKind.ACCESS_DENIED,
}


class TransientFetchError(RuntimeError):
    """S3 could not serve the object now; try the whole task again later."""


def fetch_object(s3: Any, bucket: str, key: str, *, max_bytes: int) -> bytes:
    where = f"s3://{bucket}/{key}"
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in _IMAGE_FAULTS:
            kind = _IMAGE_FAULTS[code]
            verb = (
                "does not exist"
                if kind is ErrorKind.NOT_FOUND
                else "cannot be read (access denied)"
            )
            raise ImageError(kind, f"{where} {verb}") from None
        raise TransientFetchError(f"{where}: {code or e}") from e
    except BotoCoreError as e:
        raise TransientFetchError(f"{where}: {e}") from e
    body = response["Body"]
    size = int(response.get("ContentLength", 0))
    if size > max_bytes:
        body.close()  # refused from its size: the body is never downloaded
        raise ImageError(
            ErrorKind.TOO_LARGE, f"{where} is {size} bytes, over the limit of {max_bytes}"
        )
    try:
        return body.read()
    except (BotoCoreError, OSError) as e:
        raise TransientFetchError(f"{where}: reading the body failed: {e}") from e
