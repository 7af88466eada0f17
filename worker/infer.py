"""The infer stage: the one owner of the model, batching decoded images across tasks.

Decoded images wait in :class:`Ready`: live ones apart, and first. When a live image is
waiting, the next batch is the live images alone, closed at once: a live photo waits for at
most the batch the model is on, never for backfill images to fill its batch. Otherwise the
batch is collected from the backfill, closed on size or age (``worker.batching``). It drops
images whose message was let go meanwhile, runs the model and records each image's ``ok``
line. A batch the model fails on gives up its messages (by visibility: an error nobody
expected, so the receive count rises and the redrive policy stays the backstop).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from posefleet import metric_names as m
from posefleet.logs import get_logger
from posefleet.result import ResultLine
from posefleet.settings import WorkerSettings
from posefleet.task import TaskMessage
from worker.batching import collect_batch
from worker.gate import Gate
from worker.ledger import Held, Item, Ledger
from worker.metrics import Metrics
from worker.model import Classifier, Prediction

__all__ = ["Inferrer", "Ready", "ok_line"]

log = get_logger("worker")


def ok_line(
    task: TaskMessage, index: int, p: Prediction, original_size: tuple[int, int], version: str
) -> ResultLine:
    return ResultLine(
        bucket=task.bucket,
        key=task.keys[index],
        status="ok",
        model_version=version,
        original_size=original_size,
        predicted_class_index=p.predicted_class_index,
        predicted_class_id=p.predicted_class_id,
        predicted_class_name=p.predicted_class_name,
        confidence=p.confidence,
        all_probabilities=p.all_probabilities,
    )


class Ready:
    """Decoded images waiting for the model: the live lane's first."""

    def __init__(self) -> None:
        self.live: queue.Queue[Item] = queue.Queue()
        self.backfill: queue.Queue[Item] = queue.Queue()

    def put(self, item: Item) -> None:
        (self.live if item.state.held.urgent else self.backfill).put(item)

    def next_batch(self, *, max_size: int, max_wait: float) -> list[Item]:
        """Every live image waiting (up to ``max_size``), at once; else a backfill batch closed
        on size or age, or as soon as a live image arrives. Waits at most 50 ms for a first
        backfill image, so a live one that arrives meanwhile is seen soon."""
        live: list[Item] = []
        while len(live) < max_size:
            try:
                live.append(self.live.get_nowait())
            except queue.Empty:
                break
        if live:
            return live
        return collect_batch(
            self.backfill,
            max_size=max_size,
            max_wait=max_wait,
            first_wait=0.05,
            close_early=lambda: not self.live.empty(),
        )


class Inferrer:
    def __init__(
        self,
        *,
        settings: WorkerSettings,
        classifier: Classifier,
        ready: Ready,
        ledger: Ledger,
        gate: Gate,
        metrics: Metrics,
        stop: threading.Event,
        skip: Callable[[Held], bool] = lambda held: False,
    ) -> None:
        """``skip(held)``: whether an image's message should get no more work (its job was
        cancelled); checked before each batch."""
        self.settings = settings
        self.classifier = classifier
        self.ready = ready
        self.ledger = ledger
        self.gate = gate
        self.metrics = metrics
        self.stop = stop
        self.skip = skip

    def loop(self) -> None:
        while not self.stop.is_set():
            batch = self.ready.next_batch(
                max_size=self.settings.batch_size, max_wait=self.settings.batch_wait_ms / 1000
            )
            live = [
                item
                for item in batch
                if not (item.state.held.stopped or self.skip(item.state.held))
            ]
            if live:
                try:
                    self.run(live)
                except Exception:  # whatever broke, these images' messages do not wait forever
                    for held in {item.state.held for item in live}:
                        self.ledger.give_up(held, reason="inference_failed", crash=True)
                    raise

    def run(self, live: list[Item]) -> None:
        started = time.perf_counter()
        try:
            with self.gate.shared():
                probs = self.classifier.predict([item.pixels for item in live])
                predictions = self.classifier.postprocess(probs)
        except Exception:
            log.exception("inference_failed", batch=len(live))
            for held in {item.state.held for item in live}:
                self.ledger.give_up(held, reason="inference_failed", crash=True)
            return
        seconds = time.perf_counter() - started
        self.metrics.observe(m.STAGE_TIME, seconds * 1000, Stage="infer")
        self.metrics.observe(m.BATCH_SIZE, len(live), "Count")
        # at debug level (POSEFLEET_LOG_LEVEL=debug), each batch: what make bench-cancel counts
        log.debug(
            "batch_done",
            images=len(live),
            jobs=sorted({item.state.task.job_id for item in live}),
            seconds=round(seconds, 3),
        )
        self.ledger.stats["batches"] += 1
        version = self.classifier.version
        for item, p in zip(live, predictions, strict=True):
            line = ok_line(item.state.task, item.index, p, item.original_size, version)
            self.ledger.finish_item(item.state, item.index, line)
