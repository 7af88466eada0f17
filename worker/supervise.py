"""Supervised stages: no worker thread dies silently.

Every stage of the worker (receive, infer, isolate, ack, heartbeat) runs its loop inside one
guard, as dramatiq's ``ConsumerThread.run`` does: an unexpected exception is logged with the
stage's name and the loop is started again after a short delay, growing with each crash in a
row. A stage that crashes ``max_crashes`` times within ``window`` seconds cannot recover by
itself: the supervisor marks the worker failed, the worker drains and exits non-zero, and ECS
starts a fresh task. A loop that returns while the worker is not stopping is a crash too.
The worker's main loop asks :meth:`Supervisor.failure` on every turn, so no path leaves a
process alive that no longer receives.

Work handed to thread pools (fetch, decode, write) goes through :meth:`Supervisor.guard`:
an exception there is logged and passed to the work's own failure handler (which gives its
message up), instead of vanishing into an unread future.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from posefleet.logs import get_logger

__all__ = ["Supervisor"]

log = get_logger("worker")


class Supervisor:
    def __init__(
        self,
        *,
        stop: threading.Event,
        max_crashes: int = 5,
        window: float = 300.0,
        restart_delay: float = 0.5,
        max_restart_delay: float = 10.0,
    ) -> None:
        if max_crashes < 1 or window <= 0 or restart_delay < 0:
            raise ValueError(
                "max_crashes must be at least 1, window above 0 and restart_delay 0 or more"
            )
        self.stop = stop
        self.max_crashes = max_crashes
        self.window = window
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.threads: dict[str, threading.Thread] = {}
        self.crashes: dict[str, int] = {}
        self._done: dict[str, threading.Event] = {}
        self._failure: str | None = None
        self._lock = threading.Lock()

    def start(
        self, name: str, loop: Callable[[], None], *, done: threading.Event | None = None
    ) -> threading.Thread:
        """Run ``loop`` on a daemon thread named ``name``, restarted when it crashes. The loop
        may return once ``done`` (default: the supervisor's stop) is set; before, a return is
        a crash."""
        done = done or self.stop
        thread = threading.Thread(target=self._run, args=(name, loop, done), name=name, daemon=True)
        self.threads[name] = thread
        self._done[name] = done
        self.crashes[name] = 0
        thread.start()
        return thread

    def failure(self) -> str | None:
        """Why the worker cannot go on (a stage that keeps crashing, or a stage thread gone),
        or None while every stage is healthy."""
        with self._lock:
            if self._failure is None and not self.stop.is_set():
                for name, thread in self.threads.items():
                    if not thread.is_alive() and not self._done[name].is_set():
                        self._failure = f"stage {name} is no longer running"
                        break
            return self._failure

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = reason

    def _run(self, name: str, loop: Callable[[], None], done: threading.Event) -> None:
        recent: deque[float] = deque()
        in_a_row = 0
        while not (self.stop.is_set() or done.is_set()):
            started = time.monotonic()
            try:
                loop()
                if done.is_set() or self.stop.is_set():
                    return
                raise RuntimeError(f"the {name} loop returned while the worker runs")
            except Exception:
                now = time.monotonic()
                self.crashes[name] += 1
                recent.append(now)
                while recent and recent[0] < now - self.window:
                    recent.popleft()
                in_a_row = in_a_row + 1 if now - started < self.window else 1
                if len(recent) >= self.max_crashes:
                    log.critical(
                        "stage_failed",
                        stage=name,
                        crashes=len(recent),
                        window_s=self.window,
                        exc_info=True,
                    )
                    self._fail(f"stage {name} crashed {len(recent)} times in {self.window:.0f}s")
                    return
                delay = min(self.max_restart_delay, self.restart_delay * 2 ** (in_a_row - 1))
                log.critical("stage_crashed", stage=name, restart_in=delay, exc_info=True)
                if self.stop.wait(delay):
                    return

    def guard(
        self,
        pool: Executor,
        work: Callable[..., None],
        *args: Any,
        on_error: Callable[[BaseException], None],
        stage: str,
        priority: int | None = None,
    ) -> None:
        """Submit ``work(*args)`` to ``pool`` (with ``priority``, for a ``worker.pool``
        PriorityPool); an exception it raises is logged and given to ``on_error``. A pool
        already shut down (the worker is stopping) takes nothing."""

        def run() -> None:
            try:
                work(*args)
            except Exception as e:
                log.exception("work_crashed", stage=stage)
                try:
                    on_error(e)
                except Exception:
                    log.exception("work_crash_unhandled", stage=stage)

        try:
            if priority is None:
                pool.submit(run)
            else:
                pool.submit(run, priority=priority)
        except RuntimeError:  # cannot schedule new futures after shutdown
            if not self.stop.is_set():
                raise
