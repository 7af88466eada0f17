"""Fetch and decode: a first delivery's images, from S3 bytes to pixels on the ready queue.

Each image of a held message is fetched on the fetch pool (S3 GETs) and decoded on the decode
pool (sized to the CPUs), then put on the ready queue for the model (``worker.infer``). An
image's own fault (missing, denied, too large, not an image) becomes its error line and the
task goes on. A transient S3 fault is retried in place (``worker.retry``) while the heartbeat
holds the message; only if it outlasts ``fault_budget_seconds`` is the message handed back.

:func:`decode` is the one way the worker turns bytes into pixels; isolation uses it too.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from typing import Any

from posefleet import metric_names as m
from posefleet.logs import get_logger
from posefleet.preprocess import DecodedImage, decode_image
from posefleet.result import ErrorKind, ImageError
from posefleet.settings import WorkerSettings
from worker.fetch import TransientFetchError, fetch_object
from worker.gate import Gate
from worker.infer import Ready
from worker.ledger import Held, Item, Ledger, TaskState
from worker.metrics import Metrics
from worker.pool import NORMAL, URGENT
from worker.retry import GaveUp, Retry
from worker.supervise import Supervisor

__all__ = ["Preparer", "decode", "fetch"]

log = get_logger("worker")


def fetch(
    s3: Any, state: TaskState, index: int, *, settings: WorkerSettings, retry: Retry
) -> bytes:
    """Image ``index`` of the task, with transient faults retried in place; raises
    :class:`ImageError` for the image's own fault, :class:`GaveUp` past the budget."""
    task = state.task
    return retry.call(
        lambda: fetch_object(s3, task.bucket, task.keys[index], max_bytes=settings.max_image_bytes),
        what="s3:GetObject",
        transient=lambda e: isinstance(e, TransientFetchError),
        job=task.job_id,
        task=task.task_id,
        key=task.keys[index],
    )


def decode(
    state: TaskState, index: int, data: bytes, *, settings: WorkerSettings, input_size: int
) -> DecodedImage:
    """Decode one image; raises :class:`ImageError`, also for a decoder's unexpected exception."""
    try:
        return decode_image(
            data,
            input_size=input_size,
            max_pixels=settings.max_image_pixels,
            draft=settings.jpeg_draft,
        )
    except ImageError:
        raise
    except Exception as e:  # an image must never fail its task or batch
        log.exception(
            "decode_crashed",
            job=state.task.job_id,
            task=state.task.task_id,
            key=state.task.keys[index],
        )
        raise ImageError(ErrorKind.DECODE_FAILED, f"decoding failed: {e}") from e


class Preparer:
    def __init__(
        self,
        *,
        settings: WorkerSettings,
        s3: Any,
        input_size: int,
        ledger: Ledger,
        ready: Ready,
        gate: Gate,
        metrics: Metrics,
        retry: Retry,
        supervisor: Supervisor,
        fetch_pool: Executor,
        decode_pool: Executor,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.input_size = input_size
        self.ledger = ledger
        self.ready = ready
        self.gate = gate
        self.metrics = metrics
        self.retry = retry
        self.supervisor = supervisor
        self.fetch_pool = fetch_pool
        self.decode_pool = decode_pool

    def start(self, held: Held) -> None:
        for state in held.tasks:
            log.debug(
                "task_received",
                job=state.task.job_id,
                task=state.task.task_id,
                images=len(state.task.keys),
            )
            for index in range(len(state.task.keys)):
                self.supervisor.guard(
                    self.fetch_pool,
                    self._fetch,
                    state,
                    index,
                    on_error=lambda _, h=held: self.ledger.give_up(
                        h, reason="fetch_crashed", crash=True
                    ),
                    stage="fetch",
                    priority=URGENT if held.urgent else NORMAL,
                )

    def _fetch(self, state: TaskState, index: int) -> None:
        if state.held.closed:
            return
        started = time.perf_counter()
        try:
            data = fetch(self.s3, state, index, settings=self.settings, retry=self.retry)
        except ImageError as e:
            self.ledger.image_failed(state, index, e)
            return
        except GaveUp as e:
            log.warning(
                "fetch_failed", job=state.task.job_id, task=state.task.task_id, error=str(e)
            )
            self.ledger.give_up(state.held, reason="fetch_failed")
            return
        self.metrics.observe(m.STAGE_TIME, (time.perf_counter() - started) * 1000, Stage="fetch")
        self.supervisor.guard(
            self.decode_pool,
            self._decode,
            state,
            index,
            data,
            on_error=lambda _: self.ledger.give_up(state.held, reason="decode_crashed", crash=True),
            stage="decode",
            priority=URGENT if state.held.urgent else NORMAL,
        )

    def _decode(self, state: TaskState, index: int, data: bytes) -> None:
        if state.held.closed:
            return
        started = time.perf_counter()
        try:
            with self.gate.shared():
                decoded = decode(
                    state, index, data, settings=self.settings, input_size=self.input_size
                )
        except ImageError as e:
            self.ledger.image_failed(state, index, e)
            return
        self.metrics.observe(m.STAGE_TIME, (time.perf_counter() - started) * 1000, Stage="decode")
        self.ready.put(
            Item(
                state=state, index=index, pixels=decoded.pixels, original_size=decoded.original_size
            )
        )
