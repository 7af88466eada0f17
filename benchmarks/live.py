"""``python -m benchmarks.live`` (``make bench-live``): the live lane's upload -> label latency on
the local fleet, idle and behind a backfill, and the backfill's throughput with and without
live traffic.

The local fleet as ``python -m localfleet`` runs it (:class:`localfleet.fleet.Fleet`: moto's
server, ``--workers`` real worker processes, the default backend and settings), serving a
freshly initialised posefleet ResNet50 checkpoint (``bench-out/resnet50-seed0.pt``, the same
compute as the seed's ResNet50; ``--model`` serves another). The backfill photos are put into
the input bucket before its uploads are routed to the live lane, as the fleet does with
``--photos``; every live photo after is a real upload, announced by S3 (moto) to the live queue.

1. Warm-up: a small backfill job, then a few live uploads one at a time (every worker has run
   the model at both batch shapes before anything is measured).
2. Idle: ``--idle-uploads`` live uploads ``--idle-gap`` seconds apart, nothing else running.
3. Backfill alone: a job over ``--backfill`` photos (``python -m producer``, task size
   ``--task-size``); its throughput is its images over the time from the submit to its last
   result object.
4. Backfill with live traffic: the same job again (another job id), with one live upload every
   ``--live-gap`` seconds from the submit until the job's last result.

A live photo's latency is measured from the start of its upload (the PutObject call) to the
arrival of its ``image.labelled`` event on the fleet's events queue, read by this process alone;
each is cross-checked with the event's own ``labelled_at - uploaded_at`` (S3's event time to
the result written: what the worker's EndToEndLatency records). Percentiles are nearest rank,
as the dashboard computes them. It reports, never asserts: a table on stdout and everything
measured in ``bench-out/live.json``. It stops everything it started, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from benchmarks.__main__ import OUT, corpus, machine, model_file
from localfleet.dashboard import statistic
from localfleet.fleet import RESULTS, Fleet
from posefleet.events import ImageLabelled, parse_event
from posefleet.layout import ResultsLocation
from posefleet.resources import DEFAULT_INPUT_BUCKET
from posefleet.settings import FleetSettings

# Photos as a coaching app uploads them (resized by the phone, about 1 MP): the model, not
# JPEG decoding, sets the pace, as in the measurement.
SIZES = ((1280, 960), (960, 1280), (800, 1000), (640, 480))
WARMUP_IMAGES = 64
WARMUP_LIVE = 4
EVENT_TIMEOUT = 120.0  # seconds a live upload's event may take before it counts as missing


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Upload:
    key: str
    phase: str
    started: float  # time.monotonic() at the PutObject call
    put_seconds: float = 0.0
    arrived: float | None = None  # time.monotonic() when its event was read
    event_seconds: float | None = None  # the event's labelled_at - uploaded_at
    queue_seconds: float | None = None  # the event's received_at - uploaded_at
    status: str | None = None

    @property
    def latency(self) -> float | None:
        return None if self.arrived is None else self.arrived - self.started


@dataclass
class Events:
    """Reads the fleet's events queue in a thread; matches each ``image.labelled`` event to
    its upload by key (the first event of each counts: delivery is at least once)."""

    sqs: Any
    url: str
    uploads: dict[str, Upload] = field(default_factory=dict)
    duplicates: int = 0
    unmatched: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)

    def expect(self, upload: Upload) -> None:
        with self.lock:
            self.uploads[upload.key] = upload

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self._receive()
            except Exception as e:  # a slow or failing call this round: the next one tries again
                self.failures += 1
                say(f"events: {type(e).__name__}: {e}")
                time.sleep(0.5)

    def _receive(self) -> None:
        got = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        now = time.monotonic()
        for message in got:
            try:
                event = parse_event(message["Body"])
            except ValidationError:
                event = None
            if isinstance(event, ImageLabelled):
                self._match(event, now)
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def _match(self, event: ImageLabelled, now: float) -> None:
        with self.lock:
            upload = self.uploads.get(event.key)
            if upload is None:
                self.unmatched += 1
                return
            if upload.arrived is not None:
                self.duplicates += 1
                return
            upload.arrived = now
            upload.status = event.result.status
            if event.uploaded_at is not None:
                upload.event_seconds = (event.labelled_at - event.uploaded_at).total_seconds()
                upload.queue_seconds = (event.received_at - event.uploaded_at).total_seconds()

    def wait(self, uploads: list[Upload], timeout: float = EVENT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while any(u.arrived is None for u in uploads) and time.monotonic() < deadline:
            time.sleep(0.05)


def upload_live(fleet: Fleet, events: Events, key: str, body: bytes, phase: str) -> Upload:
    upload = Upload(key=key, phase=phase, started=time.monotonic())
    events.expect(upload)
    fleet.s3.put_object(Bucket=DEFAULT_INPUT_BUCKET, Key=key, Body=body)
    upload.put_seconds = time.monotonic() - upload.started
    return upload


def summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    return {
        "n": len(values),
        "p50": round(statistic("p50", values), 3),
        "p95": round(statistic("p95", values), 3),
        "max": round(max(values), 3),
    }


def latencies(uploads: list[Upload]) -> dict[str, Any]:
    return {
        "uploads": len(uploads),
        "labelled": sum(u.arrived is not None for u in uploads),
        "errors": sum(u.status == "error" for u in uploads),
        "upload_to_event_s": summary([u.latency for u in uploads if u.latency is not None]),
        "event_uploaded_to_labelled_s": summary(
            [u.event_seconds for u in uploads if u.event_seconds is not None]
        ),
        "event_uploaded_to_received_s": summary(
            [u.queue_seconds for u in uploads if u.queue_seconds is not None]
        ),
        "samples": [asdict(u) | {"latency": u.latency} for u in uploads],
    }


class Job:
    """One backfill job through ``python -m producer``, as a user submits it; done when every
    task has its result object."""

    def __init__(self, fleet: Fleet, job_id: str, prefix: str, images: int, task_size: int):
        self.fleet = fleet
        self.job_id = job_id
        self.images = images
        self.tasks = math.ceil(images / task_size)
        self.location = ResultsLocation.parse(RESULTS)
        env = {**os.environ, **fleet.env().variables}
        self.started = time.monotonic()
        self.producer = subprocess.Popen(
            [
                *(sys.executable, "-m", "producer", "--bucket", DEFAULT_INPUT_BUCKET),
                *("--prefix", prefix, "--job-id", job_id, "--task-size", str(task_size)),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(OUT / f"live-producer-{job_id}.err").open("wb"),
        )
        self.finished: float | None = None

    def written(self) -> int:
        listed = self.fleet.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=self.location.tasks_prefix(self.job_id)
        )
        return sum(page.get("KeyCount", 0) for page in listed)

    def poll(self) -> bool:
        if self.finished is None and self.written() >= self.tasks:
            self.finished = time.monotonic()
        return self.finished is not None

    def wait(self, timeout: float, interval: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not self.poll():
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {self.job_id} not done within {timeout:.0f} s")
            if self.producer.poll() not in (None, 0):
                raise RuntimeError(
                    f"the producer failed for {self.job_id}: see {OUT}/live-producer-*.err"
                )
            time.sleep(interval)

    def stop(self) -> None:
        """Wait for the producer (it has sent everything once the job is done), or kill it."""
        try:
            self.producer.wait(timeout=30 if self.finished is not None else 0)
        except subprocess.TimeoutExpired:
            self.producer.kill()
            self.producer.wait()

    def report(self) -> dict[str, Any]:
        assert self.finished is not None
        seconds = self.finished - self.started
        return {
            "job": self.job_id,
            "images": self.images,
            "tasks": self.tasks,
            "seconds": round(seconds, 2),
            "images_per_s": round(self.images / seconds, 2),
        }


def wait_for_workers(fleet: Fleet, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    logs = [fleet.logs / f"worker-{w.n}.log" for w in fleet.workers]
    while not all(p.exists() and "worker_started" in p.read_text() for p in logs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not start within {timeout:.0f} s (see {logs})")
        if any(w.popen.poll() is not None for w in fleet.workers):
            raise RuntimeError(f"a worker exited at start (see {logs})")
        time.sleep(0.5)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_record(args: argparse.Namespace, started_at: datetime, load_before: list[float]) -> dict:
    """What a fleet benchmark's JSON opens with: when, the machine, its load before and after,
    and the run's arguments."""
    return {
        "when": started_at.isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }


def run(
    args: argparse.Namespace, fleet: Fleet, events: Events, stop: threading.Event
) -> dict[str, Any]:
    say(f"making the corpus: {args.backfill} backfill photos, live photos (cached in {OUT})")
    backfill = corpus(args.backfill, seed=args.seed, noisy=False, sizes=SIZES)
    live_photos = list(corpus(200, seed=args.seed + 1, noisy=False, sizes=SIZES).values())
    warm = dict(list(backfill.items())[:WARMUP_IMAGES])
    with ThreadPoolExecutor(8) as pool:  # the back catalogue, before uploads are routed
        puts = [
            *((f"backfill/{k[6:]}", v) for k, v in backfill.items()),
            *((f"warmup/{k[6:]}", v) for k, v in warm.items()),
        ]
        list(
            pool.map(
                lambda kv: fleet.s3.put_object(Bucket=DEFAULT_INPUT_BUCKET, Key=kv[0], Body=kv[1]),
                puts,
            )
        )
    fleet.route_uploads()
    checkpoint = model_file(args.model)
    say(f"serving {checkpoint} (model {fleet.publish(checkpoint)}) on {args.workers} workers")
    fleet.start_workers()
    # the fleet's chores from now on (queue samples, dead workers replaced, the page)
    threading.Thread(target=fleet.serve, args=(stop,), daemon=True).start()
    wait_for_workers(fleet)
    photo = itertools.cycle(live_photos)

    say(f"warm-up: {len(warm)} backfill photos, then {WARMUP_LIVE} live uploads")
    warmup = Job(fleet, "warmup", "warmup/", len(warm), args.task_size)
    try:
        warmup.wait(timeout=600)
    finally:
        warmup.stop()
    for i in range(WARMUP_LIVE):
        events.wait([upload_live(fleet, events, f"live/warmup-{i:03d}.jpg", next(photo), "warm")])

    say(f"idle: {args.idle_uploads} live uploads {args.idle_gap:g} s apart")
    idle = []
    start = time.monotonic()
    for i in range(args.idle_uploads):
        time.sleep(max(0.0, start + i * args.idle_gap - time.monotonic()))
        idle.append(upload_live(fleet, events, f"live/idle-{i:03d}.jpg", next(photo), "idle"))
    events.wait(idle)

    say(f"backfill alone: {args.backfill} photos")
    alone = Job(fleet, "backfill-alone", "backfill/", args.backfill, args.task_size)
    try:
        alone.wait(timeout=args.timeout)
    finally:
        alone.stop()

    say(f"backfill with a live upload every {args.live_gap:g} s")
    busy = []
    with_live = Job(fleet, "backfill-live", "backfill/", args.backfill, args.task_size)
    try:
        i = 0
        deadline = time.monotonic() + args.timeout
        while not with_live.poll():
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {with_live.job_id} not done within {args.timeout:.0f} s")
            busy.append(upload_live(fleet, events, f"live/busy-{i:03d}.jpg", next(photo), "busy"))
            i += 1
            next_at = busy[-1].started + args.live_gap
            while time.monotonic() < next_at and not with_live.poll():
                time.sleep(0.1)
    finally:
        with_live.stop()
    events.wait(busy)

    throughput = {"alone": alone.report(), "with_live": with_live.report()}
    throughput["ratio_with_live"] = round(
        throughput["with_live"]["images_per_s"] / throughput["alone"]["images_per_s"], 3
    )
    return {
        "idle": latencies(idle),
        "during_backfill": latencies(busy),
        "backfill": throughput,
        "events": {
            "duplicates": events.duplicates,
            "unmatched": events.unmatched,
            "read_failures": events.failures,
        },
    }


def table(result: dict[str, Any]) -> str:
    def row(name: str, part: dict[str, Any]) -> str:
        m, e = part["upload_to_event_s"], part["event_uploaded_to_labelled_s"]

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        return (
            f"| {name} | {part['labelled']}/{part['uploads']} | {f(m['p50'])} | {f(m['p95'])} "
            f"| {f(m['max'])} | {f(e['p50'])} / {f(e['p95'])} / {f(e['max'])} |"
        )

    b = result["backfill"]
    n = b["alone"]["images"]
    return "\n".join(
        [
            "| upload -> label (s) | labelled | p50 | p95 | max | event's own p50 / p95 / max |",
            "| --- | --- | --- | --- | --- | --- |",
            row("fleet idle", result["idle"]),
            row(f"during a {n:,}-image backfill", result["during_backfill"]),
            "",
            f"| backfill of {n:,} images | seconds | images/s |",
            "| --- | --- | --- |",
            f"| alone | {b['alone']['seconds']:.1f} | {b['alone']['images_per_s']:.2f} |",
            f"| with live uploads | {b['with_live']['seconds']:.1f} "
            f"| {b['with_live']['images_per_s']:.2f} ({b['ratio_with_live']:.3f}x) |",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.live", description=__doc__.split("\n")[0]
    )
    p.add_argument("--backfill", type=int, default=3000, help="images in each backfill job")
    p.add_argument("--idle-uploads", type=int, default=8, help="live uploads on the idle fleet")
    p.add_argument("--idle-gap", type=float, default=3.0, help="seconds between idle uploads")
    p.add_argument(
        "--live-gap", type=float, default=2.5, help="seconds between uploads during the backfill"
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--task-size", type=int, default=20, help="keys per backfill task")
    p.add_argument("--model", help="checkpoint (default: a freshly initialised ResNet50)")
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--timeout", type=float, default=1800, help="seconds a backfill job may take")
    p.add_argument("--out", type=Path, default=OUT / "live.json")
    args = p.parse_args(argv)
    if args.backfill < 1 or args.idle_uploads < 1 or args.workers < 1:
        p.error("--backfill, --idle-uploads and --workers must be at least 1")
    if args.idle_gap < 0 or args.live_gap <= 0:
        p.error("--idle-gap must be 0 or more and --live-gap more than 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    OUT.mkdir(exist_ok=True)
    state = OUT / "live-fleet"
    shutil.rmtree(state, ignore_errors=True)
    settings = FleetSettings(workers=args.workers, state_dir=str(state), drain_seconds=10)
    fleet = Fleet(settings=settings, persist=False, say=say)
    stop = threading.Event()
    started_at, load_before = datetime.now(UTC), load()
    events: Events | None = None
    try:
        fleet.open()
        assert fleet.queues is not None and fleet.queues.events_queue_url
        events = Events(sqs=fleet.sqs, url=fleet.queues.events_queue_url)
        threading.Thread(target=events.run, daemon=True).start()
        measured = run(args, fleet, events, stop)
    except KeyboardInterrupt:
        say("interrupted: stopping the fleet")
        return 130
    finally:
        stop.set()
        if events is not None:
            events.done.set()
        time.sleep(1.5)  # the events reader's long poll ends; the chores' round ends
        fleet.close()
    result = run_record(args, started_at, load_before)
    result["settings"] |= {"photo_sizes": SIZES, "model": str(model_file(args.model))}
    result |= {"dashboard": str(fleet.dashboard_path), **measured}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    say(f"wrote {args.out}; the fleet's dashboard of the run: {fleet.dashboard_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
