"""The worker loop: receive -> fetch -> decode -> batch -> infer -> write -> acknowledge.

This module is the map; each stage lives in a module of its own, connected by queues and
by the ledger (``worker.ledger``: what the worker holds, and how it lets messages go):

* **receive** (``worker.receive``, one per lane) long-polls SQS while fewer images are held
  than a few seconds of work (``worker.prefetch``), parses each message and holds it; a first
  delivery goes to
* **fetch** and **decode** (``worker.prepare``: a pool of S3 GETs, a pool of decoders sized
  to the CPUs, both running live work first, ``worker.pool``), which put ``uint8`` images on
  the ready queues;
* **infer** (``worker.infer``: the one owner of the model) collects batches across tasks,
  closed on size or age; live images make a batch of their own, next;
* **isolate** (``worker.isolate``) takes a message that came back after a worker died: its
  images apart from all other work, behind an attempt marker, so an image that kills the
  process is caught by name and ends as a ``crashed_worker`` line;
* **write** (``worker.write``) PUTs one JSON Lines object per task once each of its images
  has a line (an upload's at its photo's live key), then runs the task's hooks: the "image
  labelled" event (``worker.announce``), the job record;
* **ack** (``worker.ack``) deletes a message only after all its tasks are written;
* **heartbeat** (``worker.heartbeat``) extends the visibility of every held message.

Every stage runs supervised (``worker.supervise``): a crash is logged and the stage
restarted; a stage that keeps crashing, or a stage thread gone, makes :meth:`Worker.run`
drain and return 1, so ECS replaces the task. Transient AWS faults are retried in place
(``worker.retry``) while the heartbeat holds the message; a fault that outlasts
``fault_budget_seconds`` hands the message back as new (so it is never taken for a crash
suspect). A bad image becomes an error line and its task goes on; an invalid message goes to
the dead-letter queue at once with its reason.

On SIGTERM: stop receiving, finish what fits in ``drain_seconds``, hand the rest back at once,
flush metrics, return 0.
"""

from __future__ import annotations

import resource
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from posefleet import metric_names as m
from posefleet.logs import get_logger
from posefleet.resources import Lane
from posefleet.result import ResultLine
from posefleet.settings import WorkerSettings
from worker.ack import Acker
from worker.gate import Gate
from worker.heartbeat import Heartbeat
from worker.infer import Inferrer, Ready
from worker.isolate import Isolator
from worker.jobs import JobTracker
from worker.ledger import Held, Ledger, TaskState
from worker.metrics import Metrics
from worker.model import Classifier
from worker.pool import PriorityPool
from worker.prepare import Preparer
from worker.protection import ScaleInProtection
from worker.receive import Receiver, receive_visibility
from worker.retry import GaveUp, Retry
from worker.sqs import TaskQueue
from worker.supervise import Supervisor
from worker.write import TaskHook, Writer

__all__ = ["Worker"]

log = get_logger("worker")

EXIT_OK, EXIT_FAILED = 0, 1


def _peak_rss_mib(usage: resource.struct_rusage) -> float:
    """This process's own peak RSS. ``ru_maxrss`` is not: at exec, Linux folds in the peak of
    the parent that spawned it (a 2 GB parent makes every worker look 2 GB). ``VmHWM`` is the
    high-water mark of this process's memory alone."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return usage.ru_maxrss / 1024  # Linux reports KiB


def _receive(lane: Lane) -> str:
    """The receive stage's name for ``lane``: ``receive`` (backfill), ``receive-live``."""
    return "receive" if lane is Lane.BACKFILL else f"receive-{lane}"


class Worker:
    def __init__(
        self,
        *,
        settings: WorkerSettings,
        tasks_queue: TaskQueue,
        s3: Any,
        classifier: Classifier,
        metrics: Metrics,
        shutdown: threading.Event,
        decode_threads: int,
        exit_when_idle: float | None = None,
        protection: ScaleInProtection | None = None,
        live_queue: TaskQueue | None = None,
        hooks: Sequence[tuple[str, TaskHook]] = (),
        jobs: JobTracker | None = None,
    ) -> None:
        """``tasks_queue`` is the backfill lane's queue, ``live_queue`` the live lane's (None:
        no live lane); ``hooks`` run after a task's object is written (``worker.write``);
        ``jobs`` (None: no job records) counts each task in its job's record, and stops work
        on a cancelled job's tasks."""
        if settings.batch_size == 0:  # left to the device
            settings = settings.model_copy(update={"batch_size": classifier.default_batch_size})
        self.settings = settings
        self.queue = tasks_queue
        self.live_queue = live_queue
        self.jobs = jobs
        if jobs is not None:
            hooks = [*hooks, ("dynamodb:job record", self._count)]
        self.classifier = classifier
        self.metrics = metrics
        self.shutdown = shutdown
        self.exit_when_idle = exit_when_idle
        self.protection = protection or ScaleInProtection(None)

        self._stopping = threading.Event()  # no more receiving (drain)
        self._stop = threading.Event()  # every stage ends
        self.supervisor = Supervisor(
            stop=self._stop,
            max_crashes=settings.stage_max_crashes,
            window=settings.stage_crash_window_seconds,
        )
        self.retry = Retry(budget=settings.fault_budget_seconds, stop=self._stop)
        self._fetch_pool = PriorityPool(settings.fetch_threads, name="fetch")
        self._decode_pool = PriorityPool(decode_threads, name="decode")
        self._io_pool = ThreadPoolExecutor(4, thread_name_prefix="write")
        ready = Ready()
        gate = Gate()  # decoding and the model: shared, or one image on trial alone

        self.ledger = Ledger(
            metrics=metrics,
            receive_visibility=receive_visibility(settings),
            retry_delay_seconds=settings.retry_delay_seconds,
            on_task_complete=self._task_complete,
            release_retry=replace(self.retry, budget=min(30.0, settings.fault_budget_seconds)),
        )
        self.writer = Writer(
            s3=s3,
            ledger=self.ledger,
            metrics=metrics,
            retry=self.retry,
            supervisor=self.supervisor,
            pool=self._io_pool,
            hooks=hooks,
        )
        self.preparer = Preparer(
            settings=settings,
            s3=s3,
            input_size=classifier.spec.input_size,
            ledger=self.ledger,
            ready=ready,
            gate=gate,
            metrics=metrics,
            retry=self.retry,
            supervisor=self.supervisor,
            fetch_pool=self._fetch_pool,
            decode_pool=self._decode_pool,
            skip=self._cancelled,
        )
        self.isolator = Isolator(
            settings=settings,
            s3=s3,
            classifier=classifier,
            ledger=self.ledger,
            gate=gate,
            retry=self.retry,
            fetch_pool=self._fetch_pool,
            stop=self._stop,
        )
        lanes = {Lane.BACKFILL: tasks_queue}
        if live_queue is not None:
            lanes[Lane.LIVE] = live_queue
        self.receivers = {
            lane: Receiver(
                settings=settings,
                tasks_queue=lane_queue,
                lane=lane,
                ledger=self.ledger,
                metrics=metrics,
                retry=self.retry,
                supervisor=self.supervisor,
                io_pool=self._io_pool,
                stopping=self._stopping,
                dispatch=self._dispatch,
            )
            for lane, lane_queue in lanes.items()
        }
        self.inferrer = Inferrer(
            settings=settings,
            classifier=classifier,
            ready=ready,
            ledger=self.ledger,
            gate=gate,
            metrics=metrics,
            stop=self._stop,
            skip=self._cancelled,
        )
        self.acker = Acker(ledger=self.ledger, retry=self.retry, stop=self._stop)
        self.heartbeat = Heartbeat(
            settings=settings,
            ledger=self.ledger,
            retry=self.retry,
            stop=self._stop,
        )

    @property
    def stats(self) -> Counter[str]:
        return self.ledger.stats

    def _dispatch(self, held: Held) -> None:
        if self._cancelled(held):
            return
        if held.suspect:  # it came back after a worker died: taken image by image
            self.isolator.put(held)
        else:
            self.preparer.start(held)

    def _task_complete(self, state: TaskState) -> None:
        self.writer.submit(state)

    # ----------------------------------------------------------------- job records

    def _count(self, state: TaskState, lines: list[ResultLine]) -> None:
        """A write hook: the task counts once in its job's record (``worker.jobs``)."""
        assert self.jobs is not None
        self.jobs.task_finished(state.task, lines)

    def _cancelled(self, held: Held) -> bool:
        """Whether ``held`` belongs to a cancelled job (the tracker's cached state): then it
        gets no more work, its tasks are counted as cancelled and it is acknowledged."""
        if self.jobs is None or not held.tasks:
            return False
        if held.cancelled:
            return True
        if not any(self.jobs.cancelled(state.task.job_id) for state in held.tasks):
            return False
        if self.ledger.cancel(held):
            self.supervisor.guard(
                self._io_pool,
                self._count_cancelled,
                held,
                on_error=lambda _: self.ledger.give_up(held, reason="cancel_failed", crash=True),
                stage="cancel",
            )
        return True

    def _count_cancelled(self, held: Held) -> None:
        jobs = self.jobs
        assert jobs is not None
        try:
            for state in held.tasks:
                self.retry.call(
                    lambda s=state: jobs.task_cancelled(s.task),
                    what="dynamodb:job record (cancelled)",
                    task=state.task.task_id,
                )
        except GaveUp as e:
            log.warning("cancel_count_failed", error=str(e))
            self.ledger.give_up(held, reason="cancel_count_failed")
            return
        log.info(
            "message_cancelled",
            message_id=held.received.message_id,
            jobs=sorted({s.task.job_id for s in held.tasks}),
            tasks=len(held.tasks),
        )
        self.ledger.acknowledge(held)

    # ----------------------------------------------------------------- lifecycle

    def run(self) -> int:
        """Serve until SIGTERM (0), idle for ``exit_when_idle`` (0), or a stage that cannot
        recover (1, after a drain)."""
        for lane, receiver in self.receivers.items():
            self.supervisor.start(_receive(lane), receiver.loop, done=self._stopping)
        stages = {
            "infer": self.inferrer.loop,
            "isolate": self.isolator.loop,
            "ack": self.acker.loop,
            "heartbeat": self.heartbeat.loop,
        }
        for name, loop in stages.items():
            self.supervisor.start(name, loop)
        log.info(
            "worker_started",
            **self.classifier.describe(),
            batch_size=self.settings.batch_size,
            queue=self.queue.url,
            live_queue=self.live_queue.url if self.live_queue else None,
        )
        next_flush = time.monotonic() + 10
        reason, failure = "signal", None
        while not self.shutdown.wait(0.2):
            if (failure := self.supervisor.failure()) is not None:
                reason = "failure"
                break
            holding = self.ledger.holding()
            self.protection.set(holding > 0)
            if time.monotonic() >= next_flush:
                if (gpu := self.classifier.gpu_utilization()) is not None:
                    self.metrics.observe(m.GPU_UTILIZATION, gpu, "Percent")
                self.metrics.flush()
                next_flush = time.monotonic() + 10
            idle_for = time.monotonic() - self.ledger.last_activity
            if self.exit_when_idle is not None and holding == 0 and idle_for >= self.exit_when_idle:
                reason = "idle"
                break
        self._drain(reason)
        if failure is not None:
            log.critical("worker_failed", reason=failure)
            return EXIT_FAILED
        return EXIT_OK

    def holding(self) -> int:
        return self.ledger.holding()

    def _drain(self, reason: str) -> None:
        deadline = time.monotonic() + self.settings.drain_seconds
        log.info(
            "drain_started",
            reason=reason,
            holding=self.ledger.holding(),
            grace_seconds=self.settings.drain_seconds,
        )
        self._stopping.set()
        receivers = [self.supervisor.threads[_receive(lane)] for lane in self.receivers]
        for receiver in receivers:
            receiver.join(timeout=max(0.0, deadline - time.monotonic()))
        while self.ledger.holding() and time.monotonic() < deadline:
            time.sleep(0.05)
        released = self.ledger.release_all(reason="shutdown")
        self._stop.set()
        for pool in (self._fetch_pool, self._decode_pool, self._io_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        # A receive call still in its long poll hands back what it gets: wait for it a little
        # (what it gets after that comes back when its short receive visibility ends).
        for receiver in receivers:
            receiver.join(timeout=min(self.settings.wait_time_seconds + 5, 10))
        for thread in self.supervisor.threads.values():
            if thread not in receivers:  # the infer thread finishes its batch (results dropped)
                thread.join(timeout=30)
        self.protection.set(False)
        self.metrics.flush()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        log.info(
            "worker_stopped",
            reason=reason,
            released_at_stop=released,
            peak_rss_mib=round(_peak_rss_mib(usage)),
            cpu_seconds=round(usage.ru_utime + usage.ru_stime, 2),
            **dict(self.stats),
        )
