"""``python -m benchmarks.faults`` (``make bench-faults``): a job through a misbehaving AWS.

moto's server, the fault proxy (``benchmarks/faults/proxy.py``) in front of it, the real
producer and ``--workers`` real worker processes, all talking to AWS through the proxy. Two
scenarios (docs/benchmarks.md, "AWS faults"), each from its flags:

    python -m benchmarks.faults --faults 0.5 --images 300 --invalid 40
        half of all calls faulted for the whole job, shared by errors, resets before and after
        forwarding and 1-4 s delays; 40 bodies that are no task put on the queue first
    python -m benchmarks.faults --outage 120 --images 900
        every call refused for two minutes, from when 30% of the tasks are written

It reports, never asserts: every image exactly once and ``ok``? (every line of every task
object of the job), the dead-letter queue and why (``posefleet-reason``), each worker's life
(still running? took work to the end? threads that died, from its JSON log lines), after an
outage the seconds until each worker labels again, the wall time and the proxy's counts; to
``bench-out/faults-<label>.json`` and a table on stdout. It gives up after ``--timeout``
seconds and says so, and stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore

from benchmarks.__main__ import OUT, model_file
from benchmarks.faults.job import (
    dead_letters,
    invalid_bodies,
    outcome,
    photos,
    queue_depth,
    task_objects,
    worker_activity,
)
from benchmarks.faults.proxy import PASSED, Decision, Fault, FaultPlan, FaultProxy
from posefleet.aws import client
from posefleet.local import LocalAWS, bootstrap, stop_with_parent
from posefleet.resources import QueueSpec

ROOT = Path(__file__).resolve().parents[2]
INPUT, RESULTS, PREFIX, JOB = "faults-input", "faults-results", "faults/", "faults"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__)
    p.add_argument("--faults", type=float, default=0.0, help="share of calls faulted (0-1)")
    p.add_argument("--outage", type=float, default=0.0, help="seconds of total outage")
    p.add_argument(
        "--outage-at", type=float, default=0.3, help="share of tasks written when it starts"
    )
    p.add_argument("--refusal", choices=("error", "reset"), default="error")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--invalid", type=int, default=0, help="invalid bodies put on the queue")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--task-size", type=int, default=5)
    p.add_argument("--large-every", type=int, default=25, help="every Nth image 12 MP; 0: none")
    p.add_argument("--visibility", type=int, default=QueueSpec().visibility_timeout)
    p.add_argument("--max-receive-count", type=int, default=QueueSpec().max_receive_count)
    p.add_argument("--spare-producer", action="store_true", help="fault only the workers")
    p.add_argument("--producer-attempts", type=int, default=5)
    p.add_argument("--worker-env", action="append", default=[], metavar="POSEFLEET_X=VALUE")
    p.add_argument("--seed", type=int, default=19)
    p.add_argument("--timeout", type=float, default=1200, help="give up after this many seconds")
    p.add_argument("--model", help="checkpoint (default: a seeded ResNet50 in bench-out/)")
    p.add_argument("--label", help="names the report: bench-out/faults-<label>.json")
    args = p.parse_args(argv)
    if not 0 <= args.faults <= 1 or not 0 <= args.outage_at <= 1:
        p.error("--faults and --outage-at are shares between 0 and 1")
    if args.images < 1 or args.workers < 1:
        p.error("--images and --workers must be at least 1")
    return args


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    stderr: Path


@dataclass
class Producer:
    """``python -m producer`` run again on failure (it resumes by job id), as an operator
    would; ``attempts`` lists each run's exit code and seconds."""

    args: list[str]
    env: dict[str, str]
    logs: Path
    tries: int
    attempts: list[dict[str, Any]] = field(default_factory=list)
    current: subprocess.Popen[bytes] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            for n in range(self.tries):
                if self.stop.is_set():
                    return
                started = time.monotonic()
                with (self.logs / f"producer-{n}.err").open("wb") as err:
                    self.current = subprocess.Popen(
                        [sys.executable, "-m", "producer", *self.args],
                        env=self.env,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        cwd=ROOT,
                        preexec_fn=stop_with_parent,
                    )
                    code = self.current.wait()
                tail = (self.logs / f"producer-{n}.err").read_text(errors="replace")[-300:]
                self.attempts.append(
                    {"exit": code, "seconds": round(time.monotonic() - started, 1), "tail": tail}
                )
                if code == 0:
                    return
        finally:
            self.done.set()

    @property
    def succeeded(self) -> bool:
        return bool(self.attempts) and self.attempts[-1]["exit"] == 0


def stop(popen: subprocess.Popen[bytes], grace: float = 30) -> int:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    return popen.returncode


def scenario_label(args: argparse.Namespace) -> str:
    parts = []
    if args.faults:
        parts.append(f"f{round(args.faults * 100)}")
    if args.outage:
        parts.append(f"outage{round(args.outage)}")
    return args.label or "-".join(parts or ["clean"]) + f"-{args.images}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    label = scenario_label(args)
    logs = OUT / f"faults-{label}"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    model = model_file(args.model).resolve()
    files = photos(args.images, prefix=PREFIX, seed=args.seed, large_every=args.large_every)
    invalid = invalid_bodies(args.invalid)
    tasks_expected = math.ceil(args.images / args.task_size)
    load_before = os.getloadavg()[0]

    with (
        LocalAWS(log_file=logs / "moto.log", own_session=True) as aws,
        FaultProxy(aws.url, refusal=args.refusal) as proxy,
    ):
        aws.apply_env()  # this process observes moto directly, never through the proxy
        s3, sqs = client("s3", max_pool=16), client("sqs")
        spec = QueueSpec(
            visibility_timeout=args.visibility, max_receive_count=args.max_receive_count
        )
        queues = bootstrap(s3, sqs, buckets=(INPUT, RESULTS), spec=spec)
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda kv: s3.put_object(Bucket=INPUT, Key=kv[0], Body=kv[1]), files.items()
                )
            )
        for start in range(0, len(invalid), 10):
            sqs.send_message_batch(
                QueueUrl=queues.queue_url,
                Entries=[
                    {"Id": str(i), "MessageBody": body}
                    for i, body in enumerate(invalid[start : start + 10])
                ],
            )
        proxy.set_plan(
            FaultPlan.spread(
                args.faults,
                seed=args.seed,
                spare_clients=frozenset({"producer"} if args.spare_producer else ()),
            )
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith(("POSEFLEET_", "AWS_"))}
        env = {
            **base,
            **aws.env(),
            "AWS_ENDPOINT_URL": proxy.url,
            "PYTHONPATH": str(ROOT),
            "POSEFLEET_QUEUE_URL": queues.queue_url,
            "POSEFLEET_RESULTS": f"s3://{RESULTS}/results",
            "POSEFLEET_MODEL": str(model),
        }
        worker_env = {
            **env,
            "POSEFLEET_TORCH_THREADS": "1",
            "POSEFLEET_DECODE_THREADS": "1",
            "POSEFLEET_VISIBILITY_TIMEOUT": str(args.visibility),
            **dict(kv.split("=", 1) for kv in args.worker_env),
        }
        workers = [
            Proc(
                f"worker-{i}",
                subprocess.Popen(
                    [sys.executable, "-m", "worker"],
                    env={**worker_env, "AWS_SDK_UA_APP_ID": f"worker-{i}"},
                    stdout=(logs / f"worker-{i}.out").open("wb"),
                    stderr=(logs / f"worker-{i}.err").open("wb"),
                    cwd=ROOT,
                    preexec_fn=stop_with_parent,
                ),
                logs / f"worker-{i}.err",
            )
            for i in range(args.workers)
        ]
        submit = ["--bucket", INPUT, "--prefix", PREFIX, "--job-id", JOB]
        producer = Producer(
            args=[*submit, "--task-size", str(args.task_size)],
            env={**env, "AWS_SDK_UA_APP_ID": "producer"},
            logs=logs,
            tries=args.producer_attempts,
        )
        deadline = time.monotonic() + args.timeout
        # The job's clock starts once each worker has its model loaded (or has exited).
        while time.monotonic() < deadline and not all(
            w.popen.poll() is not None or '"worker_started"' in w.stderr.read_text(errors="replace")
            for w in workers
        ):
            time.sleep(0.5)
        started = time.time()
        threading.Thread(target=producer.run, name="producer", daemon=True).start()
        print(
            f"faults={args.faults} outage={args.outage}s images={args.images} "
            f"invalid={args.invalid} workers={args.workers}: running (logs in {logs})",
            file=sys.stderr,
        )

        outage: dict[str, float] = {}
        samples: list[dict[str, float]] = []
        gave_up = False
        while True:
            written = len(task_objects(s3, f"s3://{RESULTS}/results", JOB))
            visible, held = queue_depth(sqs, queues.queue_url)
            depth = visible + held
            dead = sum(queue_depth(sqs, queues.dlq_url))
            now = time.time()
            if not samples or now - samples[-1]["t"] - started >= 5:
                samples.append(
                    {"t": round(now - started, 1), "task_objects": written}
                    | {"visible": visible, "in_flight": held, "dead_letters": dead}
                )
            if args.outage and not outage and written >= args.outage_at * tasks_expected:
                proxy.outage(args.outage)
                outage = {"start": now, "end": now + args.outage}
                print(f"outage of {args.outage}s from {now - started:.0f}s", file=sys.stderr)
            outage_over = not args.outage or (outage and now >= outage["end"])
            if producer.done.is_set() and depth == 0 and outage_over:
                break
            if time.monotonic() > deadline:
                gave_up = True
                break
            time.sleep(1)
        ended, left = time.time(), depth
        running = {w.name: w.popen.poll() is None for w in workers}
        exit_codes = {w.name: w.popen.poll() for w in workers}
        producer.stop.set()
        if producer.current is not None:
            stop(producer.current, grace=10)
        for w in workers:
            stop(w.popen, grace=60)
        proxy.end_outage()
        counts, history = proxy.counts(), proxy.history()
        result = outcome(s3, f"s3://{RESULTS}/results", JOB, files)
        letters = dead_letters(sqs, queues.dlq_url)

    report: dict[str, Any] = {
        "scenario": {
            "label": label,
            "faults": args.faults,
            "fault_kinds": ["error", "reset_before", "reset_after", "delay"],
            "outage_seconds": args.outage,
            "outage_refusal": args.refusal,
            "images": args.images,
            "large_every": args.large_every,
            "invalid_bodies": args.invalid,
            "workers": args.workers,
            "task_size": args.task_size,
            "visibility_timeout": args.visibility,
            "max_receive_count": args.max_receive_count,
            "producer_faulted": not args.spare_producer,
            "worker_env": args.worker_env,
            "seed": args.seed,
            "botocore": botocore.__version__,
            "machine": f"{os.cpu_count()} CPUs, shared; load {load_before:.1f} at start, "
            f"{os.getloadavg()[0]:.1f} at end",
        },
        "wall_s": round(ended - started, 1),
        "gave_up": gave_up,
        "gave_up_after_s": args.timeout if gave_up else None,
        "messages_left_in_queue": left,
        "outcome": result.summary(),
        "dead_letters": letters.summary(invalid),
        "producer": producer.attempts,
        "outage": {
            "started_s": round(outage["start"] - started, 1),
            "ended_s": round(outage["end"] - started, 1),
        }
        if outage
        else None,
        "workers": [],
        "proxy": counts.as_dict(),
        "samples": samples,
    }
    for w in workers:
        activity = worker_activity(w.stderr)
        entry = {
            "name": w.name,
            "running_at_end": running[w.name],
            "exit_code_before_end": exit_codes[w.name],
            **activity.summary(started=started, ended=ended),
            "receive_calls": counts.total(client=w.name, operation="ReceiveMessage"),
            "last_receive_call_s": seconds(
                last_call(history, w.name, "ReceiveMessage"), since=started
            ),
        }
        if outage:
            end = outage["end"]
            entry["labelled_again_after_outage_s"] = seconds(activity.first_done_after(end), end)
            entry["fetching_again_after_outage_s"] = seconds(
                first_fetch_after(history, w.name, end), end
            )
        report["workers"].append(entry)

    path = OUT / f"faults-{label}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"report: {path}")
    return 0


def seconds(moment: float | None, since: float) -> float | None:
    return None if moment is None else round(moment - since, 1)


def last_call(history: list[Decision], client: str, operation: str) -> float | None:
    calls = (d for d in history if d.call.client == client and d.call.operation == operation)
    return max((d.at for d in calls), default=None)


def first_fetch_after(history: list[Decision], client: str, moment: float) -> float | None:
    """When ``client`` next had an S3 GET answered by moto: it took work again."""
    return min(
        (
            d.at
            for d in history
            if d.at >= moment
            and d.call.client == client
            and d.call.operation == "GetObject"
            and d.outcome in (PASSED, Fault.DELAY)
        ),
        default=None,
    )


def print_table(report: dict[str, Any]) -> None:
    s, o, d = report["scenario"], report["outcome"], report["dead_letters"]
    rows = [
        ("scenario", s["label"]),
        (
            "wall time",
            f"{report['wall_s']} s" + (" (GAVE UP: timeout)" if report["gave_up"] else ""),
        ),
        (
            "every image once, ok",
            f"{'yes' if o['every_image_once_ok'] else 'NO'}: {o['result_lines']} lines for "
            f"{o['images']} images, {o['missing']} missing, {o['duplicated']} duplicated, "
            f"{o['not_ok']} not ok",
        ),
        (
            "dead-letter queue",
            f"{d['messages']} messages: {d['invalid_bodies']} invalid bodies "
            f"({d['invalid_bodies_distinct']}/{s['invalid_bodies']} distinct), "
            f"{d['other_messages']} tasks ({d['images_in_other_messages']} images)",
        ),
        ("  reasons", json.dumps(d["reasons"])),
        ("left in the queue", str(report["messages_left_in_queue"])),
        (
            "producer",
            ", ".join(f"exit {a['exit']} in {a['seconds']} s" for a in report["producer"]),
        ),
        ("proxy", json.dumps(report["proxy"]["outcomes"])),
    ]
    if report["outage"]:
        rows.append(("outage", f"{report['outage']['started_s']}-{report['outage']['ended_s']} s"))
    for w in report["workers"]:
        state = "running" if w["running_at_end"] else f"EXITED {w['exit_code_before_end']}"
        again = (
            f", after the outage fetching again in {w['fetching_again_after_outage_s']} s, "
            f"labelling in {w['labelled_again_after_outage_s']} s"
            if "labelled_again_after_outage_s" in w
            else ""
        )
        died = f", DEAD THREADS {w['thread_deaths']}" if w["thread_deaths"] else ""
        rows.append(
            (
                w["name"],
                f"{state}, {w['tasks_done']} tasks, last at {w['last_task_s']} s, "
                f"{w['tasks_in_last_quarter']} in the last quarter, last ReceiveMessage at "
                f"{w['last_receive_call_s']} s{again}{died}",
            )
        )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
