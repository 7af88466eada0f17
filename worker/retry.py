"""Transient AWS faults, retried in place: exponential back-off with full jitter, bounded in time.

A live worker that meets a fault AWS will get over (throttling, a 5xx, a dropped connection,
an outage) keeps the message, whose heartbeat holds it, and tries the call again after
``random() * min(max_delay, base * 2**attempt)`` seconds (AWS's "full jitter"), until the call
succeeds, the fault has lasted ``budget`` seconds, or the worker stops. Only then does the
caller give the work up (``worker.ledger``: handed back, never counted as a crash). The delay
is capped low (4 s by default) so a worker takes work again within seconds of AWS answering.

botocore's own retries (``posefleet.aws``: 3 attempts, about 3 s) run inside each try.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from posefleet.aws import is_transient
from posefleet.logs import get_logger

__all__ = ["GaveUp", "Retry", "backoff_delay"]

log = get_logger("worker")

T = TypeVar("T")


class GaveUp(RuntimeError):
    """A transient fault outlasted the retry budget, or the worker is stopping."""

    def __init__(self, what: str, error: BaseException, *, tries: int, seconds: float) -> None:
        super().__init__(f"{what}: {error} (after {tries} tries in {seconds:.1f}s)")
        self.what = what
        self.error = error


def backoff_delay(attempt: int, *, base: float, max_delay: float, rng: random.Random) -> float:
    """Full jitter: a uniform draw in ``[0, min(max_delay, base * 2**attempt))``."""
    if attempt < 0 or base <= 0 or max_delay <= 0:
        raise ValueError("attempt must be 0 or more; base and max_delay greater than 0")
    return rng.random() * min(max_delay, base * 2.0**attempt)


@dataclass(slots=True)
class Retry:
    """One worker's policy for transient faults; ``call`` is thread-safe."""

    budget: float
    stop: threading.Event
    base: float = 0.25
    max_delay: float = 4.0
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.budget < 0:
            raise ValueError("budget must be 0 or more seconds")

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, base=self.base, max_delay=self.max_delay, rng=self.rng)

    def call(
        self,
        fn: Callable[[], T],
        *,
        what: str,
        transient: Callable[[BaseException], bool] = is_transient,
        **fields: object,
    ) -> T:
        """``fn()``, tried again while it raises a transient error; raises :class:`GaveUp`
        once the budget is spent or the worker stops, and anything else at once."""
        started = self.clock()
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as e:
                if not transient(e):
                    raise
                spent = self.clock() - started
                if spent >= self.budget or self.stop.is_set():
                    raise GaveUp(what, e, tries=attempt + 1, seconds=spent) from e
                wait = min(self.delay(attempt), self.budget - spent)
                log.warning(
                    "aws_retry",
                    call=what,
                    attempt=attempt + 1,
                    error=str(e),
                    retry_in=wait,
                    **fields,
                )
                attempt += 1
                if self.stop.wait(wait):
                    raise GaveUp(what, e, tries=attempt, seconds=self.clock() - started) from e
