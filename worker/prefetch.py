"""How much a worker receives ahead of its model: a bound by work, not only by memory.

SQS counts receives, not failures: every message a worker holds when it dies comes back with
one more receive, however healthy it was. So a worker holds only what it will process soon:
``prefetch_seconds`` of its measured throughput, never less than ``prefetch_batches`` batches
(the batch the model is on and the next, so the model never waits) and never more than
``max_images_in_flight`` (the memory bound). A crash then touches a few seconds of work, and a
small job spreads over the fleet instead of sitting in the first worker's buffer.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["Throughput", "messages_to_receive", "prefetch_limit"]

SQS_MAX_MESSAGES = 10


def prefetch_limit(
    *, rate: float, seconds: float, batch_size: int, min_batches: int, max_images: int
) -> int:
    """Images a worker may hold: ``seconds`` of ``rate`` (images/s), at least ``min_batches``
    batches of ``batch_size``, at most ``max_images``."""
    if rate < 0:
        raise ValueError("rate must be 0 or more")
    if seconds <= 0:
        raise ValueError("seconds must be greater than 0")
    if batch_size < 1 or min_batches < 1 or max_images < 1:
        raise ValueError("batch_size, min_batches and max_images must be at least 1")
    floor = min_batches * batch_size
    return min(max_images, max(floor, math.ceil(rate * seconds)))


def messages_to_receive(*, room: int, images_per_message: float | None) -> int:
    """MaxNumberOfMessages for the next receive: the messages that fit in ``room`` images at
    the average size seen so far; 1 before any was seen; 0 without room; at most 10 (SQS).

    One message is asked for even when it may not fit whole, so the model is never starved;
    the bound is overshot by less than one message."""
    if room <= 0:
        return 0
    if not images_per_message or images_per_message <= 0:
        return 1
    return max(1, min(SQS_MAX_MESSAGES, int(room // images_per_message)))


class Throughput:
    """Images finished per second over the last ``window`` seconds. Thread-safe."""

    def __init__(self, *, window: float = 10.0, clock: Callable[[], float] = time.monotonic):
        if window <= 0:
            raise ValueError("window must be greater than 0")
        self.window = window
        self._clock = clock
        self._started = clock()
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0
        self._lock = threading.Lock()

    def add(self, images: int) -> None:
        with self._lock:
            self._events.append((self._clock(), images))
            self._total += images

    def rate(self) -> float:
        now = self._clock()
        with self._lock:
            while self._events and self._events[0][0] < now - self.window:
                self._total -= self._events.popleft()[1]
            span = min(self.window, now - self._started)
            return self._total / span if span > 0 else 0.0
