"""The local fleet: moto's server and N ``python -m worker`` processes on this machine.

:class:`Fleet` starts moto's server on 127.0.0.1, creates both lanes' queues, the buckets and
the events topic as infra/ would (:func:`posefleet.local.bootstrap`), puts back the buckets kept
in its state folder (:mod:`localfleet.mirror`), uploads a folder of photos and publishes a
checkpoint if given, routes the input bucket's uploads from then on to the live lane
(:meth:`Fleet.route_uploads`), and starts the workers once a model is published.
:meth:`Fleet.serve` then samples the queues' depth into an EMF log (what CloudWatch records of
SQS on AWS), keeps the buckets' copy up to date and refreshes the dashboard page, until told
to stop; :meth:`Fleet.close` stops the workers (they drain), copies the buckets a last time and
stops moto's server.

Everything the fleet starts runs in its own session, so a Ctrl-C in the terminal reaches the
fleet alone and the fleet stops them in order; on Linux each is also sent SIGTERM if the fleet
dies without stopping them. The state folder::

    <state>/fleet.json            port, process ids of the running fleet
    <state>/env.sh                the environment for other shells
    <state>/s3/                   the buckets, kept between runs
    <state>/logs/worker-N.out     each worker's EMF lines (its stdout)
    <state>/logs/worker-N.log     each worker's JSON log (its stderr)
    <state>/logs/queues.emf       both lanes' queues' depth, sampled
    <state>/logs/moto.log
    <state>/dashboard.html        the fleet's dashboard, refreshed
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from posefleet.aws import client
from posefleet.local import (
    LocalAWS,
    LocalQueues,
    bootstrap,
    route_uploads,
    stop_with_parent,
    subscribe_queue,
)
from posefleet.resources import (
    DEFAULT_DLQ_NAME,
    DEFAULT_INPUT_BUCKET,
    DEFAULT_LIVE_DLQ_NAME,
    DEFAULT_LIVE_QUEUE_NAME,
    DEFAULT_MODELS_BUCKET,
    DEFAULT_QUEUE_NAME,
    DEFAULT_RESULTS_BUCKET,
)
from posefleet.settings import FleetSettings

__all__ = ["MODEL_POINTER", "Fleet", "FleetEnv", "folder_files"]

BUCKETS = (DEFAULT_INPUT_BUCKET, DEFAULT_RESULTS_BUCKET, DEFAULT_MODELS_BUCKET)
RESULTS = f"s3://{DEFAULT_RESULTS_BUCKET}/results"
MODELS = f"s3://{DEFAULT_MODELS_BUCKET}"
MODEL_POINTER = f"{MODELS}/pose_classifier/current.json"
RESTART_BACKOFF_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class FleetEnv:
    """What another shell exports to use the fleet with the unchanged commands."""

    variables: dict[str, str]

    def exports(self) -> str:
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.variables.items())


@dataclass
class _Worker:
    n: int
    popen: subprocess.Popen[bytes]
    started: float


class Fleet:
    """Use :meth:`open`, then :meth:`serve` (or :meth:`tick` in your own loop), then
    :meth:`close`, which is safe to call whatever happened before."""

    def __init__(
        self,
        *,
        settings: FleetSettings,
        persist: bool = True,
        worker_env: Mapping[str, str] | None = None,
        dashboard: Path | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.state = Path(settings.state_dir)
        self.logs = self.state / "logs"
        self.persist = persist
        self.extra_env = dict(worker_env or {})
        self.dashboard_path = dashboard or self.state / "dashboard.html"
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.aws: LocalAWS | None = None
        self.queues: LocalQueues | None = None
        self.s3: Any = None
        self.sqs: Any = None
        self.sns: Any = None
        self.mirrors: dict[str, Any] = {}
        # (key, file, etag) put from other threads (the watch), noted in the mirror by sync()
        self._recorded: deque[tuple[str, Path, str]] = deque()
        self.workers: list[_Worker] = []
        self._dead_since: dict[int, float] = {}
        self._last_render = 0.0

    # -- starting ---------------------------------------------------------------------------

    def _previous_port(self) -> int | None:
        try:
            return int(json.loads((self.state / "fleet.json").read_text())["port"])
        except (OSError, ValueError, KeyError):
            return None

    def open(self) -> FleetEnv:
        """Start moto's server, create the queues and buckets, put back the kept buckets."""
        self.logs.mkdir(parents=True, exist_ok=True)
        port = self.settings.port or (self._previous_port() if self.persist else None)
        self.aws = LocalAWS(port=port, log_file=self.logs / "moto.log", own_session=True)
        try:
            self.aws.start()
        except (RuntimeError, TimeoutError):
            if self.settings.port or port is None:
                raise
            self.say(f"port {port} of the last run is taken; using a free one")
            self.aws = LocalAWS(log_file=self.logs / "moto.log", own_session=True)
            self.aws.start()
        saved = dict(os.environ)
        os.environ.update(self.aws.env())
        try:
            self.s3, self.sqs, self.sns = client("s3"), client("sqs"), client("sns")
            self.dynamodb = client("dynamodb")
        finally:
            os.environ.clear()
            os.environ.update(saved)
        # the job records' table too (not kept across restarts: a job submitted again after one
        # gets a new record, and --skip-done counts what was done into it)
        self.queues = bootstrap(
            self.s3, self.sqs, buckets=BUCKETS, sns=self.sns, dynamodb=self.dynamodb
        )
        if self.persist:
            from localfleet.mirror import BucketMirror

            for bucket in BUCKETS:
                mirror = BucketMirror(s3=self.s3, bucket=bucket, root=self.state / "s3")
                if n := mirror.restore():
                    self.say(f"restored {n} objects into s3://{bucket} from {mirror.dir}")
                self.mirrors[bucket] = mirror
        env = self.env()
        (self.state / "env.sh").write_text(env.exports())
        self._write_record()
        return env

    def env(self) -> FleetEnv:
        assert self.aws is not None and self.queues is not None, "open() the fleet first"
        q = self.queues
        assert q.live_queue_url and q.events_topic and q.events_queue_url
        return FleetEnv(
            {
                **self.aws.env(),
                "POSEFLEET_QUEUE_URL": q.queue_url,
                "POSEFLEET_LIVE_QUEUE_URL": q.live_queue_url,
                "POSEFLEET_EVENTS_TOPIC": q.events_topic,
                "POSEFLEET_EVENTS_QUEUE_URL": q.events_queue_url,
                "POSEFLEET_RESULTS": RESULTS,
                "POSEFLEET_MODEL": MODEL_POINTER,
            }
        )

    def route_uploads(self) -> None:
        """From now on, every object created in the input bucket is a live task (an S3
        ObjectCreated notification to the live queue, as infra/ sets with ``notify``). Call it
        after the start's own uploads (restored buckets, ``--photos``): those are the back
        catalogue, for a backfill job."""
        assert self.queues is not None and self.queues.live_queue_url, "open() the fleet first"
        route_uploads(
            self.s3, self.sqs, bucket=DEFAULT_INPUT_BUCKET, queue_url=self.queues.live_queue_url
        )

    def subscribe(self, queue_name: str) -> str:
        """A queue of the fleet's own subscribed to the events topic (every event reaches
        every subscribed queue, so the fleet reading it takes nothing from
        ``python -m producer events``); returns its URL."""
        assert self.queues is not None and self.queues.events_topic, "open() the fleet first"
        return subscribe_queue(
            self.sqs, self.sns, topic_arn=self.queues.events_topic, queue_name=queue_name
        )

    def _write_record(self) -> None:
        assert self.aws is not None and self.aws.process is not None
        record = {
            "pid": os.getpid(),
            "port": self.aws.port,
            "moto_pid": self.aws.process.pid,
            "worker_pids": [w.popen.pid for w in self.workers if w.popen.poll() is None],
        }
        (self.state / "fleet.json").write_text(json.dumps(record, indent=2))

    def upload_photos(self, folder: Path, *, prefix: str = "") -> int:
        """Put every file under ``folder`` (hidden ones aside) into the input bucket, its path
        relative to ``folder`` as the key after ``prefix``; unchanged files are skipped."""
        folder = Path(folder)
        if not folder.is_dir():
            raise NotADirectoryError(f"--photos {folder} is not a folder")
        existing = {
            obj["Key"]: obj["ETag"].strip('"')
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=DEFAULT_INPUT_BUCKET, Prefix=prefix
            )
            for obj in page.get("Contents", [])
        }
        sent = 0
        for path in folder_files(folder):
            key = prefix + path.relative_to(folder).as_posix()
            data = path.read_bytes()
            if existing.get(key) == hashlib.md5(data, usedforsecurity=False).hexdigest():
                continue
            self.upload_file(path, key, data=data)
            sent += 1
        self._note_uploads()
        return sent

    def upload_file(self, path: Path, key: str, *, data: bytes | None = None) -> str:
        """Put one file into the input bucket at ``key``; returns its ETag. Safe from another
        thread: the bucket's copy notes it at the next :meth:`sync`."""
        body = path.read_bytes() if data is None else data
        etag = self.s3.put_object(Bucket=DEFAULT_INPUT_BUCKET, Key=key, Body=body)["ETag"]
        if DEFAULT_INPUT_BUCKET in self.mirrors:
            self._recorded.append((key, path, etag))
        return etag

    def _note_uploads(self) -> None:
        mirror = self.mirrors.get(DEFAULT_INPUT_BUCKET)
        if mirror is None:
            return
        while self._recorded:
            key, path, etag = self._recorded.popleft()
            with contextlib.suppress(FileNotFoundError):  # gone since: the next sync fetches it
                mirror.record(key, path, etag)
        mirror.flush()

    def publish(self, checkpoint: Path) -> str:
        """Publish a posefleet checkpoint, or the seed's ``.pth`` with ``class_mapping.json``
        beside it, as the current model; returns its model version."""
        from posefleet.checkpoint import load_checkpoint
        from training.publish import upload_model

        ckpt = load_checkpoint(Path(checkpoint))  # a clear error now, not in every worker
        accuracy = ckpt.metrics.get("val_accuracy")
        published = upload_model(
            self.s3,
            Path(checkpoint),
            MODELS,
            version=ckpt.version,
            accuracy=float(accuracy) if accuracy is not None else None,
        )
        return published.version

    def model_published(self) -> bool:
        bucket, _, key = MODEL_POINTER[5:].partition("/")
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError:
            return False
        return True

    def _worker_env(self) -> dict[str, str]:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        share = str(max(1, cpus // max(1, self.settings.workers)))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POSEFLEET_"))}
        return {
            **base,
            "POSEFLEET_TORCH_THREADS": share,
            "POSEFLEET_DECODE_THREADS": share,
            "POSEFLEET_WAIT_TIME_SECONDS": "5",
            **{k: v for k, v in os.environ.items() if k.startswith("POSEFLEET_")},
            **self.env().variables,
            "POSEFLEET_MODEL_CACHE_DIR": str(self.state / "model-cache"),
            "POSEFLEET_DRAIN_SECONDS": str(self.settings.drain_seconds),
            **self.extra_env,
        }

    def _spawn(self, n: int) -> _Worker:
        popen = subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env=self._worker_env(),
            stdout=(self.logs / f"worker-{n}.out").open("ab"),
            stderr=(self.logs / f"worker-{n}.log").open("ab"),
            start_new_session=True,
            preexec_fn=stop_with_parent,
        )
        return _Worker(n=n, popen=popen, started=time.monotonic())

    def start_workers(self) -> None:
        self.workers = [self._spawn(n) for n in range(self.settings.workers)]
        self._write_record()
        self.say(
            f"started {len(self.workers)} workers (logs in {self.logs}/worker-N.log, "
            f"metrics in worker-N.out)"
        )

    # -- running ----------------------------------------------------------------------------

    def _replace_dead_workers(self, now: float) -> None:
        for i, w in enumerate(self.workers):
            code = w.popen.poll()
            if code is None:
                continue
            since = self._dead_since.setdefault(w.n, now)
            if since == now:
                self.say(
                    f"worker {w.n} exited with code {code} (see {self.logs}/worker-{w.n}.log); "
                    f"restarting it in {RESTART_BACKOFF_SECONDS:.0f}s"
                )
            if now - since >= RESTART_BACKOFF_SECONDS:
                self.workers[i] = self._spawn(w.n)
                del self._dead_since[w.n]
                self._write_record()

    def sample_queues(self) -> None:
        """Append each lane's queue and dead-letter queue depth now to ``logs/queues.emf``, as
        CloudWatch records SQS."""
        from localfleet.dashboard import queue_depth_lines

        q = self.queues
        assert q is not None
        urls = [q.queue_url, q.dlq_url, q.live_queue_url, q.live_dlq_url]
        lines = queue_depth_lines(self.sqs, [url for url in urls if url])
        with (self.logs / "queues.emf").open("a") as out:
            out.write("".join(line + "\n" for line in lines))

    def sync(self) -> None:
        self._note_uploads()
        for mirror in self.mirrors.values():
            mirror.sync()

    def render_dashboard(self, *, title: str = "posefleet, local fleet") -> Path:
        """Write the dashboard page over the workers' EMF lines and the queue samples."""
        from localfleet.dashboard import render_dashboard

        page = render_dashboard(
            [*sorted(self.logs.glob("worker-*.out")), self.logs / "queues.emf"],
            title=title,
            queue=DEFAULT_QUEUE_NAME,
            dlq=DEFAULT_DLQ_NAME,
            live_queue=DEFAULT_LIVE_QUEUE_NAME,
            live_dlq=DEFAULT_LIVE_DLQ_NAME,
            refresh_seconds=max(1, round(self.settings.sync_seconds)),
        )
        tmp = self.dashboard_path.with_name(self.dashboard_path.name + ".tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(self.dashboard_path)
        return self.dashboard_path

    def tick(self, *, sync: bool, render: bool) -> None:
        """One round of the fleet's chores; a chore that fails is said, not fatal."""
        if not self.workers and self.settings.workers and self.model_published():
            self.say("a model is published; starting the workers")
            self.start_workers()
        self._replace_dead_workers(time.monotonic())
        self.chores(sync=sync, render=render)

    def chores(self, *, sync: bool, render: bool) -> None:
        chores: list[tuple[str, Callable[[], object]]] = [
            ("sampling the queues", self.sample_queues)
        ]
        if sync and self.mirrors:
            chores.append(("copying the buckets", self.sync))
        if render:
            chores.append(("rendering the dashboard", self.render_dashboard))
        for what, chore in chores:
            try:
                chore()
            except Exception as e:  # the fleet keeps serving; the next round retries
                self.say(f"fleet: {what} failed: {type(e).__name__}: {e}")

    def serve(self, stop: threading.Event) -> None:
        """Sample, copy and render on the settings' periods until ``stop`` is set."""
        next_sync = time.monotonic() + self.settings.sync_seconds
        while not stop.is_set():
            now = time.monotonic()
            due = now >= next_sync
            if due:
                next_sync = now + self.settings.sync_seconds
            self.tick(sync=due, render=due)
            stop.wait(self.settings.sample_seconds)

    # -- stopping ---------------------------------------------------------------------------

    def stop_workers(self, *, hurry: threading.Event | None = None) -> None:
        """SIGTERM each worker, wait for them to drain (the drain grace plus a margin), then
        kill what is left; ``hurry`` (a second Ctrl-C) kills at once."""
        running = [w for w in self.workers if w.popen.poll() is None]
        for w in running:
            w.popen.send_signal(signal.SIGTERM)
        if running:
            self.say(f"stopping {len(running)} workers (they finish what they hold first)")
        deadline = time.monotonic() + self.settings.drain_seconds + 30
        for w in running:
            while w.popen.poll() is None and time.monotonic() < deadline:
                if hurry is not None and hurry.is_set():
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.popen.wait(timeout=0.2)
            if w.popen.poll() is None:
                w.popen.kill()
                w.popen.wait()

    def close(self, *, hurry: threading.Event | None = None) -> None:
        """Stop the workers, copy the buckets a last time, render, stop moto's server."""
        try:
            self.stop_workers(hurry=hurry)
            if self.aws is not None and self.aws.process is not None:
                self.chores(sync=True, render=True)
        finally:
            if self.aws is not None:
                self.aws.stop()
            record = self.state / "fleet.json"
            if record.exists():
                data = json.loads(record.read_text())
                data.update(pid=None, moto_pid=None, worker_pids=[])
                record.write_text(json.dumps(data, indent=2))


def folder_files(folder: Path) -> Iterator[Path]:
    """Every file under ``folder`` whose path has no hidden part (``.DS_Store``, ``.git/``, an
    editor's ``.photo.jpg.swp``), in sorted order: what the fleet uploads of a folder."""
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).parts
        if not any(part.startswith(".") for part in rel) and path.is_file():
            yield path
