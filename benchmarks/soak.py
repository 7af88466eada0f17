"""``python -m benchmarks.soak --images 1000``: one worker over many images, many phone-sized,
sampling its RSS every second, to show memory stays flat (bounded by max_images_in_flight)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.__main__ import OUT, corpus, model_file
from posefleet.aws import client
from posefleet.layout import ResultsLocation
from posefleet.local import LocalAWS, bootstrap


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--model")
    args = p.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    files = corpus(args.images, seed=5, noisy=False)  # dimensions, not noise, drive memory
    model = model_file(args.model)
    with LocalAWS(log_file=OUT / "soak-moto.log") as aws:
        aws.apply_env()
        s3, sqs = client("s3"), client("sqs")
        queues = bootstrap(s3, sqs, buckets=("soak-input", "soak-results"))
        for key, data in files.items():
            s3.put_object(Bucket="soak-input", Key=key, Body=data)
        env = {
            **os.environ,
            **aws.env(),
            "POSEFLEET_QUEUE_URL": queues.queue_url,
            "POSEFLEET_RESULTS": "s3://soak-results/r",
            "POSEFLEET_MODEL": str(model),
            "POSEFLEET_WAIT_TIME_SECONDS": "1",
        }
        log = OUT / "soak-worker.err"
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker", "--exit-when-idle", "5"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "producer",
                "--bucket",
                "soak-input",
                "--prefix",
                "bench/",
                "--job-id",
                "soak",
                "--task-size",
                "20",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        location = ResultsLocation.parse("s3://soak-results/r")
        samples = []
        while worker.poll() is None:
            done = s3.list_objects_v2(
                Bucket="soak-results", Prefix=location.tasks_prefix("soak")
            ).get("KeyCount", 0)
            samples.append((time.monotonic(), done * 20, rss_mib(worker.pid)))
            time.sleep(1)
    stopped = next(json.loads(x) for x in log.read_text().splitlines() if '"worker_stopped"' in x)
    marks = {}
    for _, images, rss in samples:
        for mark in (100, 250, 500, 750, 1000, args.images):
            if images >= mark and mark not in marks:
                marks[mark] = rss
    print(
        json.dumps(
            {
                "images": stopped["images"],
                "peak_rss_mib": stopped["peak_rss_mib"],
                "rss_mib_after_images": {str(k): round(v) for k, v in sorted(marks.items())},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
