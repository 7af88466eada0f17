"""Listing the images under a prefix: every page, keys in S3's (lexicographic) order.

IAM: ``s3:ListBucket`` on the input bucket (with the prefix as condition).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["is_image_key", "list_image_keys"]


def is_image_key(key: str, extensions: Iterable[str]) -> bool:
    lower = key.lower()
    return not key.endswith("/") and any(lower.endswith(ext.lower()) for ext in extensions)


def list_image_keys(
    s3: Any,
    bucket: str,
    prefix: str,
    *,
    extensions: Iterable[str],
    on_page: Callable[[int, int], None] | None = None,
) -> Iterator[str]:
    """Yield image keys; ``on_page(listed, kept)`` is called after each page."""
    exts = tuple(extensions)
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        contents = page.get("Contents", [])
        kept = [o["Key"] for o in contents if is_image_key(o["Key"], exts)]
        if on_page:
            on_page(len(contents), len(kept))
        yield from kept
