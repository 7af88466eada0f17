"""Listing S3 keys cheaply: a client whose ListObjectsV2 parser reads only the keys, and
range listings ``(after, until]`` for the parallel listers of ``producer/sources.py``.

botocore parses every ``<Contents>`` element of a page into a dict, its ``LastModified``
through dateutil: about 88 ms of CPU for a page of 1,000 keys, 60% of the producer's CPU at a
million keys. :func:`list_client` keeps botocore for everything (signing, retries, errors, the
URL-decoding of keys) but pulls the keys out of a page with one regular expression (0.4 ms)
and hands botocore a page without its ``<Contents>`` to parse. Its pages have
``Contents: [{"Key": ...}]`` and nothing else per object. It also skips botocore's second XML
parse of every S3 200 body (the check for errors embedded in a 200, which a listing page
never holds; a page cut short is still retried).

IAM: ``s3:ListBucket`` on the input bucket (with the prefix as condition).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Iterator
from typing import Any

from botocore import handlers
from botocore.parsers import ResponseParserFactory

from posefleet.aws import client, new_botocore_session

__all__ = ["PAGE", "image_extensions", "is_image_key", "list_client", "list_range"]

_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.S)
_KEY = re.compile(rb"<Key>(.*?)</Key>", re.S)
PAGE = 1000  # ListObjectsV2's most keys a page


def image_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    """``extensions`` as :func:`is_image_key` takes them fastest: a tuple, lower case."""
    return tuple(e.lower() for e in extensions)


def is_image_key(key: str, extensions: Iterable[str]) -> bool:
    """Whether ``key`` ends with one of ``extensions``, case-insensitively (a key ending in
    ``/`` never does). Per key, pass :func:`image_extensions`' tuple: one C call."""
    exts = extensions if isinstance(extensions, tuple) else image_extensions(extensions)
    return key.lower().endswith(exts)


def _text(raw: bytes) -> str:
    text = raw.decode()
    return html.unescape(text) if "&" in text else text


class _KeysOnlyListParser:
    """ListObjectsV2 pages: keys by regex, the rest of the page by botocore's own parser."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def parse(self, response: dict, shape: Any) -> dict:
        body = response.get("body")
        if (
            shape is None
            or shape.name != "ListObjectsV2Output"
            or response.get("status_code", 500) >= 300
            or not isinstance(body, bytes)
        ):
            return self._inner.parse(response, shape)
        keys = [_text(k) for k in _KEY.findall(body)]
        parsed = self._inner.parse({**response, "body": _CONTENTS.sub(b"", body)}, shape)
        if keys:
            parsed["Contents"] = [{"Key": k} for k in keys]
        return parsed


class _Factory(ResponseParserFactory):
    def create_parser(self, protocol_name: str) -> Any:
        parser = super().create_parser(protocol_name)
        return _KeysOnlyListParser(parser) if protocol_name == "rest-xml" else parser


_BOTOCORE_200_ERROR = getattr(handlers, "_handle_200_error", None)


def _handle_200_error(operation_model: Any, response_dict: dict, **kwargs: Any) -> None:
    """botocore parses every S3 200 body as XML, looking for an error S3 may embed in a 200
    (CopyObject, CompleteMultipartUpload), or a body cut short; a listing page never holds the
    former, so for ListObjectsV2 only a page that does not end as one is retried."""
    if operation_model.name == "ListObjectsV2":
        body = response_dict.get("body")
        whole = isinstance(body, bytes) and body.rstrip().endswith(b"</ListBucketResult>")
        if response_dict.get("status_code") == 200 and not whole:
            response_dict["status_code"] = 500
    elif _BOTOCORE_200_ERROR is not None:
        _BOTOCORE_200_ERROR(operation_model, response_dict, **kwargs)


def list_client(*, max_pool: int = 32) -> Any:
    """An S3 client for listing: ListObjectsV2 pages carry keys only (see the module doc);
    every other call behaves as :func:`posefleet.aws.client`'s."""
    session = new_botocore_session()
    factory = _Factory()
    factory.set_parser_defaults(timestamp_parser=str)  # what is left to parse: no dateutil
    session.register_component("response_parser_factory", factory)
    s3 = client("s3", max_pool=max_pool, botocore_session=session)
    if _BOTOCORE_200_ERROR is not None:
        s3.meta.events.unregister("before-parse.s3.*", _BOTOCORE_200_ERROR)
        s3.meta.events.register_first("before-parse.s3.*", _handle_200_error)
    return s3


def list_range(
    s3: Any,
    bucket: str,
    prefix: str,
    *,
    after: str | None = None,
    until: str | None = None,
    page_size: int = PAGE,
) -> Iterator[tuple[list[str], bool]]:
    """Pages of the keys under ``prefix`` in ``(after, until]`` (None: open), in S3's order;
    each page with whether the range may hold more (the page was full and did not pass
    ``until``)."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    if after is not None:
        kwargs["StartAfter"] = after
    while True:
        page = s3.list_objects_v2(**kwargs)
        keys = [o["Key"] for o in page.get("Contents", ())]
        more = bool(page.get("IsTruncated"))
        if until is not None and keys and keys[-1] > until:
            keys = [k for k in keys if k <= until]
            more = False
        yield keys, more
        if not more:
            return
        kwargs.pop("StartAfter", None)
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
