"""``python -m benchmarks.cancel`` (``make bench-cancel``): cancelling a job on the local fleet.

The local fleet as ``python -m localfleet`` runs it (moto's server, ``--workers`` real worker
processes, the job records in DynamoDB on moto's server), serving the same ResNet50 as
``make bench-live``. A job of ``--images`` photos is submitted with ``python -m producer``; once
``--cancel-after`` of its tasks have results, ``python -m producer cancel`` is run, and this
measures, from the workers' own ``task_done`` log lines and the job record:

* how long the fleet goes on labelling the cancelled job (the last ``task_done`` of it after the
  cancel), and each worker's batches with its images that ended after the cancel, and of those
  how many began after it (the workers run at debug level, which logs each ``batch_done``);
* how long until the record reads ``cancelled`` (every task counted, done or cancelled);
* that a job submitted after the cancel completes with every image exactly once;
* what ``python -m producer jobs`` lists.

It reports, never asserts: a table on stdout, everything in ``bench-out/cancel.json``. It stops
everything it started.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.__main__ import OUT, corpus, model_file
from benchmarks.live import SIZES, Job, load, run_record, say, wait_for_workers
from localfleet.fleet import RESULTS, Fleet
from posefleet.job_table import JobTable
from posefleet.layout import ResultsLocation
from posefleet.resources import DEFAULT_INPUT_BUCKET
from posefleet.result import load_lines
from posefleet.settings import FleetSettings

BIG, AFTER = "big", "after"


def producer(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer", *args],
        env={**os.environ, **fleet.env().variables},
        capture_output=True,
        text=True,
        timeout=120,
    )


def task_done_lines(fleet: Fleet, job: str) -> list[dict[str, Any]]:
    """Every ``task_done`` of ``job`` in the workers' logs, with its worker and wall time."""
    found = []
    for log in sorted(fleet.logs.glob("worker-*.log")):
        for line in log.read_text().splitlines():
            if '"task_done"' not in line or f'"job": "{job}"' not in line:
                continue
            event = json.loads(line)
            when = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            found.append({"worker": log.stem, "at": when.timestamp(), "images": event["images"]})
    return found


def batches_after(fleet: Fleet, job: str, at: float) -> dict[str, dict[str, int]]:
    """Per worker, its batches with images of ``job`` that ended after ``at`` (the workers log
    ``batch_done`` at debug level): how many, how many of them began after ``at`` (the in-flight
    batch a cancel cannot stop is not one of those), and their images."""
    found: dict[str, dict[str, int]] = {}
    for log in sorted(fleet.logs.glob("worker-*.log")):
        mine = found.setdefault(log.stem, {"batches": 0, "begun_after": 0, "images": 0})
        for line in log.read_text().splitlines():
            if '"batch_done"' not in line:
                continue
            event = json.loads(line)
            ended = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            if job not in event["jobs"] or ended <= at:
                continue
            mine["batches"] += 1
            mine["begun_after"] += ended - event["seconds"] > at
            mine["images"] += event["images"]
    return found


def every_image_once(fleet: Fleet, job: str, keys: list[str]) -> dict[str, int]:
    location = ResultsLocation.parse(RESULTS)
    seen: Counter[str] = Counter()
    for page in fleet.s3.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket, Prefix=location.tasks_prefix(job)
    ):
        for obj in page.get("Contents", []):
            body = fleet.s3.get_object(Bucket=location.bucket, Key=obj["Key"])["Body"].read()
            seen.update(line.key for line in load_lines(body))
    return {
        "images": len(keys),
        "lines": sum(seen.values()),
        "missing": len(set(keys) - set(seen)),
        "duplicated": sum(n - 1 for n in seen.values() if n > 1),
    }


def run(args: argparse.Namespace, fleet: Fleet, stop: threading.Event) -> dict[str, Any]:
    say(f"making the corpus: {args.images} + {args.after} photos (cached in {OUT})")
    big = {f"{BIG}/{k[6:]}": v for k, v in corpus(args.images, seed=31, sizes=SIZES).items()}
    after = {f"{AFTER}/{k[6:]}": v for k, v in corpus(args.after, seed=32, sizes=SIZES).items()}
    for key, body in [*big.items(), *after.items()]:
        fleet.s3.put_object(Bucket=DEFAULT_INPUT_BUCKET, Key=key, Body=body)
    checkpoint = model_file(args.model)
    say(f"serving {checkpoint} (model {fleet.publish(checkpoint)}) on {args.workers} workers")
    fleet.start_workers()
    threading.Thread(target=fleet.serve, args=(stop,), daemon=True).start()
    wait_for_workers(fleet)
    assert fleet.queues is not None and fleet.queues.jobs_table
    table = JobTable(dynamodb=fleet.dynamodb, table=fleet.queues.jobs_table)

    say(f"job {BIG}: {args.images} photos; cancelled once {args.cancel_after} tasks are done")
    job = Job(fleet, BIG, f"{BIG}/", args.images, args.task_size)
    try:
        while job.written() < args.cancel_after:
            time.sleep(0.2)
        cancelled_at = time.time()
        cancelled_mono = time.monotonic()
        answer = producer(fleet, "cancel", BIG)
        cancel_seconds = time.monotonic() - cancelled_mono
        reads_cancelled = None
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            record = table.read(BIG, consistent=True)
            if record is not None and record.state == "cancelled":
                reads_cancelled = time.monotonic() - cancelled_mono
                break
            time.sleep(0.25)
        record = table.read(BIG, consistent=True)
    finally:
        job.stop()
    done = task_done_lines(fleet, BIG)
    late = [d for d in done if d["at"] > cancelled_at]
    per_worker = Counter()
    for d in late:
        per_worker[d["worker"]] += d["images"]
    batches = batches_after(fleet, BIG, cancelled_at)

    say(f"job {AFTER}: {args.after} photos, submitted after the cancel")
    second = Job(fleet, AFTER, f"{AFTER}/", args.after, args.task_size)
    try:
        second.wait(timeout=args.timeout)
    finally:
        second.stop()
    listed = producer(fleet, "jobs", "--json")
    jobs = [json.loads(line) for line in listed.stdout.splitlines() if line.startswith("{")]
    batch = max(
        json.loads(line).get("batch_size", 0)
        for log in fleet.logs.glob("worker-*.log")
        for line in log.read_text().splitlines()
        if '"worker_started"' in line
    )
    last = max((d["at"] for d in late), default=cancelled_at) - cancelled_at
    return {
        "cancel": {
            "command_exit": answer.returncode,
            "command_answer": answer.stdout.strip(),
            "command_seconds": round(cancel_seconds, 2),
            "tasks_done_at_cancel": args.cancel_after,
            "tasks": math.ceil(args.images / args.task_size),
            "last_task_done_after_cancel_s": round(last, 2),
            "images_of_tasks_done_after_cancel_by_worker": dict(per_worker),
            "batches_after_cancel_by_worker": batches,
            "batch_size": batch,
            "reads_cancelled_after_s": None
            if reads_cancelled is None
            else round(reads_cancelled, 2),
            "record": None
            if record is None
            else {
                "state": record.state,
                "tasks_total": record.tasks_total,
                "tasks_done": record.counts.tasks_done,
                "tasks_cancelled": record.counts.tasks_cancelled,
            },
        },
        "after": {**second.report(), **every_image_once(fleet, AFTER, sorted(after))},
        "jobs_listed": [{k: j.get(k) for k in ("job_id", "state")} for j in jobs],
    }


def table_of(result: dict[str, Any]) -> str:
    c, a = result["cancel"], result["after"]
    rows = [
        ("cancel command", f"exit {c['command_exit']} in {c['command_seconds']} s"),
        ("last task of the job done", f"{c['last_task_done_after_cancel_s']} s after the cancel"),
        (
            "batches of it ending after the cancel",
            ", ".join(
                f"{w}: {b['batches']} ({b['begun_after']} begun after, {b['images']} images)"
                for w, b in c["batches_after_cancel_by_worker"].items()
            )
            + f" (a batch is at most {c['batch_size']})",
        ),
        (
            "tasks of it done after the cancel",
            f"{c['images_of_tasks_done_after_cancel_by_worker']} images by worker",
        ),
        ("record reads cancelled", f"{c['reads_cancelled_after_s']} s after the cancel"),
        ("record", json.dumps(c["record"])),
        (
            "job submitted after",
            f"{a['images']} images in {a['seconds']} s; {a['lines']} lines, "
            f"{a['missing']} missing, {a['duplicated']} duplicated",
        ),
        ("jobs lists", json.dumps(result["jobs_listed"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cancel", description=__doc__.split("\n")[0]
    )
    p.add_argument("--images", type=int, default=2000, help="photos of the job cancelled")
    p.add_argument("--after", type=int, default=100, help="photos of the job submitted after")
    p.add_argument("--cancel-after", type=int, default=10, help="tasks done before the cancel")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--task-size", type=int, default=20)
    p.add_argument("--model", help="checkpoint (default: a freshly initialised ResNet50)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--out", type=Path, default=OUT / "cancel.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    OUT.mkdir(exist_ok=True)
    state = OUT / "cancel-fleet"
    shutil.rmtree(state, ignore_errors=True)
    settings = FleetSettings(workers=args.workers, state_dir=str(state), drain_seconds=10)
    # debug: each worker logs its batches (batch_done), which the cancel's figures are read from
    debug = {"POSEFLEET_LOG_LEVEL": "debug"}
    fleet = Fleet(settings=settings, persist=False, say=say, worker_env=debug)
    stop = threading.Event()
    started_at, load_before = datetime.now(UTC), load()
    try:
        fleet.open()
        measured = run(args, fleet, stop)
    except KeyboardInterrupt:
        say("interrupted: stopping the fleet")
        return 130
    finally:
        stop.set()
        time.sleep(1.0)
        fleet.close()
    result = run_record(args, started_at, load_before) | measured
    args.out.write_text(json.dumps(result, indent=2))
    print(table_of(result))
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
