"""``make bench-scale``: the real producer CLI (submit, status, export) against the simulator.

Each run starts :mod:`benchmarks.scale.simulator` as its own process (its CPU is reported apart),
then ``python -m producer`` as a subprocess whose whole process tree's RSS is sampled every
50 ms. ``--code`` picks the tree the producer runs from (PYTHONPATH), so main's producer can be
measured as the baseline in the same run. Results go to ``bench-out/scale.json``; the tables in
docs/benchmarks.md are written from it by hand.

``--requests N`` submits N keys with each task-size profile and reports the requests per 1,000
images and their cost per million (benchmarks/prices.py): the producer's calls as the simulator
counted them, the workers' from the model in benchmarks/prices.py, for the tasks the submit
made. ``--baseline DIR`` adds DIR's producer with 20-image tasks and no job record (the
"before").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from benchmarks.prices import cost_per_million, worker_requests
from benchmarks.scale.simulator import ACCOUNT, INPUT_BUCKET, KEY_PREFIX, QUEUE, RESULTS
from posefleet.local import free_port

HERE = Path(__file__).resolve().parents[2]


class Sim:
    def __init__(self, keys: int, *, record_tasks: bool = False, code: Path = HERE) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "benchmarks.scale.simulator"]
        args += ["--keys", str(keys), "--port", str(self.port)]
        args += ["--record-tasks"] if record_tasks else []
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
        self.proc.stdout.readline()  # type: ignore[union-attr]
        self.code = code

    def call(self, path: str, method: str = "GET") -> dict[str, Any]:
        req = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("POSEFLEET_", "AWS_"))}
        return {
            **base,
            "PYTHONPATH": str(self.code),
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "sim",
            "AWS_SECRET_ACCESS_KEY": "sim",
            "AWS_DEFAULT_REGION": "us-east-1",
            "POSEFLEET_QUEUE_URL": f"{self.url}/{ACCOUNT}/{QUEUE}",
            "POSEFLEET_RESULTS": RESULTS.uri,
            "POSEFLEET_LOG_LEVEL": "warning",
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def measure(args: list[str], env: dict[str, str], *, timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m producer ARGS``; wall time, CPU of the tree, peak RSS of the tree."""
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer", *args],
        env=env,
        cwd=env["PYTHONPATH"],  # `-m` puts the working directory first on sys.path
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    root = psutil.Process(proc.pid)
    peak = 0
    cpu: dict[int, float] = {}
    out_chunks: list[str] = []
    import threading

    def drain(stream: Any, into: list[str]) -> None:
        into.append(stream.read())

    err_chunks: list[str] = []
    readers = [
        threading.Thread(target=drain, args=(proc.stdout, out_chunks), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr, err_chunks), daemon=True),
    ]
    for r in readers:
        r.start()
    while proc.poll() is None:
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                total += p.memory_info().rss
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, total)
        if time.time() - started > timeout:
            proc.kill()
        time.sleep(0.05)
    proc.wait()
    ended = time.time()
    for r in readers:
        r.join()
    out, err = "".join(out_chunks), "".join(err_chunks)
    try:
        parsed = json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        parsed = out[-2000:]
    return {
        "rc": proc.returncode,
        "started": started,
        "wall_s": round(ended - started, 3),
        "cpu_s": round(sum(cpu.values()), 2),
        "peak_rss_mib": round(peak / 2**20, 1),
        "stdout": parsed,
        "stderr": err[-1500:],
    }


def submit(keys: int, code: Path, *, task_size: int | None = 20) -> dict[str, Any]:
    """Submit ``keys`` keys with ``--task-size`` (None: the default sizes, 20 then 100)."""
    sim = Sim(keys, code=code)
    sizes = ["--task-size", str(task_size)] if task_size else []
    try:
        run = measure(
            ["--bucket", INPUT_BUCKET, "--prefix", KEY_PREFIX, "--job-id", "bench", *sizes],
            sim.env(),
        )
        stats = sim.call("/_sim/stats")
    finally:
        sim.stop()
    calls = sum(stats["calls"].values())
    first = stats["first_send"] - run["started"] if stats["first_send"] else None
    last = stats["last_send"] - run["started"] if stats["last_send"] else None
    return {
        "keys": keys,
        "code": str(code),
        "rc": run["rc"],
        "first_task_s": round(first, 2) if first is not None else None,
        "all_sent_s": round(last, 2) if last is not None else None,
        "wall_s": run["wall_s"],
        "keys_per_s": round(keys / last) if last else None,
        "producer_cpu_s": run["cpu_s"],
        "simulator_cpu_s": round(stats["cpu_s"], 2),
        "peak_rss_mib": run["peak_rss_mib"],
        "calls": stats["calls"],
        "calls_per_1000_images": round(1000 * calls / keys, 2),
        "tasks": stats["messages"],
        "exactly_once": stats["exactly_once"],
        "missing": stats["missing"],
        "duplicates": stats["duplicates"],
        "stderr": run["stderr"] if run["rc"] else "",
    }


# DynamoDB units of the producer's calls on the job record (items under 1 KB): the begin
# transaction puts the job item and 8 counter shards (2 units each), a settle reads 9 items.
PRODUCER_WRU = {"TransactWriteItems": 18, "UpdateItem": 1}
PRODUCER_RRU = {"GetItem": 0.5, "BatchGetItem": 9}


def requests_per_1000(run: dict[str, Any], *, record: bool) -> dict[str, float]:
    """Requests (and DynamoDB units) per 1,000 images: the submit's as measured, the workers'
    as modelled (benchmarks/prices.py) for the tasks it made."""
    k = run["keys"] / 1000
    calls = run["calls"]
    per = worker_requests(1000 * run["tasks"] / run["keys"], record=record)
    per["s3_put"] += calls.get("PutObject", 0) / k
    per["s3_get"] += calls.get("GetObject", 0) / k
    per["s3_list"] = calls.get("ListObjectsV2", 0) / k
    per["sqs"] += calls.get("SendMessageBatch", 0) / k
    if record:
        per["dynamodb_wru"] += sum(calls.get(op, 0) * u for op, u in PRODUCER_WRU.items()) / k
        per["dynamodb_rru"] += sum(calls.get(op, 0) * u for op, u in PRODUCER_RRU.items()) / k
    return {name: round(v, 3) for name, v in per.items()}


def request_costs(keys: int, code: Path, baseline: Path | None) -> dict[str, Any]:
    """Requests per 1,000 images and their cost per million, per task-size profile."""
    profiles: list[tuple[str, Path, int | None, bool]] = []
    if baseline is not None:
        profiles.append(("before: 20-image tasks, no job record", baseline, 20, False))
    profiles += [
        ("20-image tasks, job record", code, 20, True),
        ("default: 20, then 100-image tasks, job record", code, None, True),
    ]
    out: dict[str, Any] = {"keys": keys}
    for title, tree, size, record in profiles:
        run = submit(keys, tree, task_size=size)
        per = requests_per_1000(run, record=record)
        out[title] = {
            "rc": run["rc"],
            "all_sent_s": run["all_sent_s"],
            "peak_rss_mib": run["peak_rss_mib"],
            "tasks_per_1000_images": round(1000 * run["tasks"] / keys, 2),
            "requests_per_1000_images": per,
            "cost_per_million_images": cost_per_million(per),
        }
    return out


def status_and_export(
    tasks: int, code: Path, synthetic: bool = False, *, export_too: bool = True
) -> dict[str, Any]:
    """Two jobs over a bucket of ``tasks`` keys, both submitted by the producer under test: "st"
    in one-image tasks (``status`` on a job of ``tasks`` tasks), "ex" in tasks of 20 (``export``
    of ``tasks`` lines)."""
    sim = Sim(tasks, record_tasks=True, code=code)
    env = sim.env()
    out: dict[str, Any] = {"tasks": tasks, "code": str(code)}
    try:
        for job, size in (("st", 1), ("ex", 20)):
            if synthetic:  # written by the simulator as the producer would, not submitted
                out[f"job_{job}"] = sim.call(f"/_sim/job?job={job}&task_size={size}", "POST")
                continue
            sub = measure(
                [
                    "--bucket",
                    INPUT_BUCKET,
                    "--prefix",
                    KEY_PREFIX,
                    "--job-id",
                    job,
                    "--task-size",
                    str(size),
                ],
                env,
            )
            out[f"submit_{job}"] = {k: sub[k] for k in ("rc", "wall_s", "peak_rss_mib", "stderr")}
        out["startup_s"] = measure(["--help"], env)["wall_s"]  # interpreter and imports alone
        for label, fraction, extra in (
            ("half_done", 0.5, []),
            ("all_done", 1.0, []),
            ("exact", 1.0, ["--exact"]),
        ):
            sim.call(f"/_sim/complete?fraction={fraction}&seed=1", "POST")
            sim.call("/_sim/reset-calls", "POST")
            st = measure(["status", "st", *extra], env)
            calls = sim.call("/_sim/stats")["calls"]
            out[f"status_{label}"] = {
                "rc": st["rc"],
                "wall_s": st["wall_s"],
                "calls": sum(calls.values()),
                "by_op": calls,
                "peak_rss_mib": st["peak_rss_mib"],
                "view": st["stdout"],
                "stderr": st["stderr"][-500:],
            }
        if not export_too:
            return out
        with tempfile.TemporaryDirectory() as tmp:
            sim.call("/_sim/reset-calls", "POST")
            ex = measure(["export", "ex", "--out", f"{tmp}/ex.parquet"], env)
            out["export"] = {
                k: ex[k] for k in ("rc", "wall_s", "cpu_s", "peak_rss_mib", "stdout", "stderr")
            }
            out["export"]["calls"] = sim.call("/_sim/stats")["calls"]
    finally:
        sim.stop()
    return out


def moto_flow(images: int, code: Path) -> dict[str, Any]:
    """The same flow on moto's server, for correctness: submit ``images`` keys, receive every
    task (as a worker would) and write its results, then ``status --wait`` and ``export``."""
    from posefleet.aws import client
    from posefleet.local import LocalAWS, bootstrap
    from posefleet.result import ResultLine, dump_lines
    from posefleet.task import TaskMessage

    with tempfile.TemporaryDirectory() as tmp, LocalAWS(log_file=Path(tmp) / "moto.log") as aws:
        saved = dict(os.environ)
        os.environ.update(aws.env())
        try:
            s3, sqs = client("s3"), client("sqs")
            queues = bootstrap(
                s3, sqs, buckets=("moto-input", "moto-results"), dynamodb=client("dynamodb")
            )
            expected = {f"photos/u{i // 100:03d}/img{i:06d}.jpg" for i in range(images)}
            for key in sorted(expected):
                s3.put_object(Bucket="moto-input", Key=key, Body=b"x")
            env = {
                **{k: v for k, v in saved.items() if not k.startswith(("POSEFLEET_", "AWS_"))},
                **aws.env(),
                "PYTHONPATH": str(code),
                "POSEFLEET_QUEUE_URL": queues.queue_url,
                "POSEFLEET_RESULTS": "s3://moto-results/results",
            }
            sub = measure(["--bucket", "moto-input", "--prefix", "photos/", "--job-id", "m"], env)
            seen: list[str] = []
            while True:
                got = sqs.receive_message(
                    QueueUrl=queues.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
                ).get("Messages", [])
                if not got:
                    break
                for msg in got:
                    task = TaskMessage.model_validate_json(msg["Body"])
                    seen.extend(task.keys)
                    lines = [
                        ResultLine(
                            bucket=task.bucket,
                            key=k,
                            status="error",
                            error_kind="truncated",
                            error_message="simulated",
                        )
                        for k in task.keys
                    ]
                    s3.put_object(
                        Bucket="moto-results", Key=task.result_key, Body=dump_lines(lines)
                    )
                    sqs.delete_message(
                        QueueUrl=queues.queue_url, ReceiptHandle=msg["ReceiptHandle"]
                    )
            st = measure(["status", "m", "--wait", "--timeout", "60"], env)
            ex = measure(["export", "m", "--out", f"{tmp}/m.csv"], env)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return {
        "images": images,
        "code": str(code),
        "submit_rc": sub["rc"],
        "exactly_once": sorted(seen) == sorted(expected),
        "status_wait_rc": st["rc"],
        "status_tail": st["stderr"].strip().splitlines()[-1:] if st["stderr"] else [],
        "export_rc": ex["rc"],
        "exported": (ex["stdout"] or {}).get("written") if isinstance(ex["stdout"], dict) else None,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    p.add_argument("--keys", default="20000,1000000", help="comma-separated submit sizes")
    p.add_argument("--code", type=Path, default=HERE, help="tree whose producer runs")
    p.add_argument("--label", default="after")
    p.add_argument("--status-tasks", type=int, default=0, help="status on a job of this many")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="status/export jobs written by the simulator as the producer would, not submitted",
    )
    p.add_argument("--no-export", action="store_true", help="status only")
    p.add_argument("--moto", type=int, default=0, help="the same flow on moto, this many keys")
    p.add_argument(
        "--requests", type=int, default=0, help="requests and their cost, this many keys"
    )
    p.add_argument(
        "--baseline", type=Path, help="with --requests: the tree of the 'before' producer"
    )
    p.add_argument("--out", type=Path, default=HERE / "bench-out" / "scale.json")
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for n in [int(k) for k in args.keys.split(",") if k]:
        got = submit(n, args.code)
        print(json.dumps({args.label: got}), flush=True)
        results.setdefault(args.label, {})[f"submit_{n}"] = got
        args.out.write_text(json.dumps(results, indent=2))
    if args.moto:
        got = moto_flow(args.moto, args.code)
        print(json.dumps({args.label: got}), flush=True)
        results.setdefault(args.label, {})[f"moto_{args.moto}"] = got
        args.out.write_text(json.dumps(results, indent=2))
    if args.requests:
        got = request_costs(args.requests, args.code, args.baseline)
        print(json.dumps({args.label: got}), flush=True)
        results.setdefault(args.label, {})[f"requests_{args.requests}"] = got
        args.out.write_text(json.dumps(results, indent=2))
    if args.status_tasks:
        got = status_and_export(
            args.status_tasks, args.code, args.synthetic, export_too=not args.no_export
        )
        print(json.dumps({args.label: got}), flush=True)
        results.setdefault(args.label, {})[f"status_{args.status_tasks}"] = got
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
