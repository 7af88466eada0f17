"""Collecting a batch: one small pure function, closed on size or on age."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["collect_batch"]

T = TypeVar("T")


def collect_batch(
    source: queue.Queue[T],
    *,
    max_size: int,
    max_wait: float,
    first_wait: float | None = None,
    close_early: Callable[[], bool] | None = None,
    poll: float = 0.01,
) -> list[T]:
    """Take up to ``max_size`` items from ``source``.

    Blocks up to ``first_wait`` seconds for the first item (forever if None; returns ``[]`` on
    timeout). Once one item is in hand, the batch closes when it has ``max_size`` items or
    ``max_wait`` seconds have passed since that first item, whichever comes first, or, with
    ``close_early``, as soon as it returns True (checked every ``poll`` seconds while waiting:
    more urgent work arrived elsewhere).
    """
    if max_size < 1:
        raise ValueError("max_size must be greater than 0")
    if max_wait < 0:
        raise ValueError("max_wait must be 0 or more")
    try:
        batch = [source.get(timeout=first_wait)]
    except queue.Empty:
        return []
    deadline = time.monotonic() + max_wait
    while len(batch) < max_size:
        if close_early is not None and close_early():
            break
        remaining = deadline - time.monotonic()
        if close_early is not None:
            remaining = min(remaining, poll)
        try:
            batch.append(source.get(timeout=remaining) if remaining > 0 else source.get_nowait())
        except queue.Empty:
            if close_early is None or time.monotonic() >= deadline:
                break
    return batch
