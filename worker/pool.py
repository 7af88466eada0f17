"""A thread pool that runs urgent work first: the live lane's fetches and decodes jump the queue.

``ThreadPoolExecutor`` runs work in the order it was submitted, so a live photo's fetch would
wait behind every backfill image already queued. :class:`PriorityPool` keeps one priority
queue: lower ``priority`` first, then submission order. Same ``submit``/``shutdown`` as an
``Executor``, so the supervisor's guard takes it unchanged.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

__all__ = ["NORMAL", "URGENT", "PriorityPool"]

URGENT, NORMAL = 0, 1


class PriorityPool(Executor):
    def __init__(self, threads: int, *, name: str) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._shutdown = False
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(  # type: ignore[override]
        self, fn: Callable[..., Any], /, *args: Any, priority: int = NORMAL, **kwargs: Any
    ) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.put((priority, next(self._order), (future, fn, args, kwargs)))
        return future

    def _run(self) -> None:
        while True:
            _, _, work = self._queue.get()
            if work is None:
                return
            future, fn, args, kwargs = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as e:
                future.set_exception(e)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        _, _, work = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if work is not None:
                        work[0].cancel()
            for _ in self._threads:  # after any work still queued
                self._queue.put((NORMAL + 1, next(self._order), None))
        if wait:
            for t in self._threads:
                t.join()
