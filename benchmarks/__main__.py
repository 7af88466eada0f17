"""``python -m benchmarks`` (``make bench``): one run, one machine, every figure against a baseline
measured in the same run.

1. A corpus of photo-like JPEGs (4032x3024 and 3024x4032 phone photos, 1080p, smaller) goes into
   moto's server.
2. The baseline (``benchmarks/baseline.py``) classifies it the seed Lambda's way.
3. The real producer and one real worker process classify it, with JPEG draft decoding on (the
   default) and off (the before figure for that optimisation).
4. The model alone, on random input at the worker's batch size, gives the ceiling.

Prints the table and writes it into docs/benchmarks.md between the bench markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.baseline import run_baseline
from benchmarks.prices import (
    DDB_READ_PER_MILLION,
    DDB_WRITE_PER_MILLION,
    FARGATE_GB_HOUR,
    FARGATE_VCPU_HOUR,
    G5_XLARGE_HOUR,
    LAMBDA_GB_SECOND,
    LAMBDA_PER_MILLION,
    S3_GET_PER_1000,
    S3_PUT_PER_1000,
    SQS_PER_MILLION,
    cost_per_million,
    worker_requests,
)
from mappings import ClassMapping
from posefleet.aws import client
from posefleet.checkpoint import file_version, load_checkpoint, save_initialised
from posefleet.int8 import MIN_AGREEMENT, Int8Info, Int8Mismatch, read_int8
from posefleet.layout import ResultsLocation
from posefleet.local import LocalAWS, bootstrap
from posefleet.result import load_lines
from training.data import LabelledImage, scan_folder
from training.quantize import quantize_checkpoint
from training.synthetic import PHOTO_SIZES, encode, render_pose
from worker.cpus import available_cpus
from worker.model import Classifier

OUT = Path("bench-out")
DOC = Path("docs/benchmarks.md")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
WEIGHTS = (2, 2, 1.5, 1.5, 1, 1, 1)  # over PHOTO_SIZES: about 40% phone photos


def photo_like(image: Image.Image, rng: random.Random) -> Image.Image:
    """Sensor noise, so the JPEG carries what a phone photo does (2-5 MB at 12 MP, not 200 KB)."""
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 7, (image.height, image.width, 3))
    return Image.fromarray(
        np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    )


def corpus(
    count: int,
    seed: int,
    *,
    noisy: bool = True,
    sizes: tuple[tuple[int, int], ...] | None = None,
) -> dict[str, bytes]:
    """``count`` pose photos as ``{"bench/<name>": JPEG bytes}``, made once and kept in
    ``bench-out/``: sizes drawn from PHOTO_SIZES by WEIGHTS, or evenly from ``sizes``."""
    shape = "" if sizes is None else "-" + "_".join(f"{w}x{h}" for w, h in sizes)
    cache = OUT / f"corpus-{'v2' if noisy else 'flat'}{shape}-{count}-{seed}"
    if not cache.exists():
        rng = random.Random(seed)
        tmp = cache.with_suffix(".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        poses = list(ClassMapping.for_poses().classes)
        for i in range(count):
            size = rng.choices(PHOTO_SIZES, WEIGHTS)[0] if sizes is None else rng.choice(sizes)
            image = render_pose(poses[i % len(poses)], size, rng)
            image = photo_like(image, rng) if noisy else image
            (tmp / f"{i:05d}-{size[0]}x{size[1]}.jpg").write_bytes(encode(image, rng))
        tmp.rename(cache)
    return {f"bench/{p.name}": p.read_bytes() for p in sorted(cache.iterdir())}


def model_file(path: str | None) -> Path:
    if path:
        return Path(path)
    target = OUT / "resnet50-seed0.pt"
    if not target.exists():
        save_initialised(target)
    return target


def ceiling(
    checkpoint: Path,
    batch: int,
    *,
    channels_last: bool = True,
    rounds: int = 6,
    backend: str = "torch",
) -> float:
    clf = Classifier.from_file(checkpoint, device="cpu", threads=available_cpus(), backend=backend)
    if not channels_last:
        clf.model = clf.model.to(memory_format=torch.contiguous_format)
        clf.predict = _contiguous_predict(clf)
    images = [
        torch.randint(0, 256, (3, clf.spec.input_size, clf.spec.input_size), dtype=torch.uint8)
        for _ in range(batch)
    ]
    clf.predict(images)  # warm up
    started = time.perf_counter()
    for _ in range(rounds):
        clf.predict(images)
    return batch * rounds / (time.perf_counter() - started)


def _contiguous_predict(clf: Classifier) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """The "before" of channels_last: the same model in the default memory format."""
    from posefleet.preprocess import normalize

    @torch.inference_mode()
    def predict(images: list[torch.Tensor]) -> torch.Tensor:
        return torch.softmax(clf.model(normalize(torch.stack(images), clf.spec)), dim=1)

    return predict


STAGES = ("fetch", "decode", "infer", "write")
BACKEND_TITLES = {"torch": "PyTorch", "openvino": "OpenVINO", "openvino-int8": "OpenVINO int8"}


@dataclass(frozen=True, slots=True)
class Variant:
    """One worker run of the benchmark."""

    label: str
    draft: bool
    backend: str
    title: str


VARIANTS = (
    Variant("nodraft", False, "torch", "posefleet worker, JPEG draft off (before)"),
    Variant("draft", True, "torch", "posefleet worker, JPEG draft on (default)"),
    Variant("openvino", True, "openvino", "posefleet worker, draft on, OpenVINO backend"),
    Variant("int8", True, "openvino-int8", "posefleet worker, draft on, OpenVINO int8 backend"),
)
SERVED = {v.backend: v for v in VARIANTS if v.draft}  # each backend as the fleet runs it

try:
    import openvino  # noqa: F401

    HAVE_OPENVINO = True
except ImportError:
    HAVE_OPENVINO = False
try:
    import nncf  # noqa: F401

    HAVE_NNCF = True
except ImportError:
    HAVE_NNCF = False


def int8_for(checkpoint: Path, items: list[LabelledImage], *, control: bool) -> Int8Info | None:
    """The checkpoint's int8 model (``python -m training quantize``), made once and kept."""
    if not HAVE_NNCF:
        return None
    version = load_checkpoint(checkpoint).version
    try:
        return read_int8(checkpoint, version)[1]
    except Int8Mismatch:
        pass
    print(f"quantizing {checkpoint.name} to int8 (once; kept in {OUT})", file=sys.stderr)
    done = quantize_checkpoint(
        checkpoint,
        items,
        val_fraction=0.2,
        seed=0,
        accuracy_control=control,
        force=True,  # the bench measures agreement and reports the gate's verdict itself
        say=lambda line: print(line, file=sys.stderr),
    )
    return done.info


def trained_agreement() -> dict[str, Any] | None:
    """int8 against fp32 on a trained model: the demo's (``make demo`` trains it), if present."""
    source, data = Path(".demo/trained.pt"), Path(".demo/train-data")
    if not (HAVE_NNCF and source.exists() and data.exists()):
        return None
    target = OUT / "demo-trained.pt"
    if not target.exists() or file_version(target) != file_version(source):
        shutil.copy(source, target)
    info = int8_for(target, scan_folder(data), control=True)
    if info is None:
        return None
    rates = {
        backend: ceiling(target, 32, backend=backend) for backend in ("torch", "openvino-int8")
    }
    ckpt = load_checkpoint(target)
    return {
        "arch": ckpt.arch,
        "input_size": ckpt.preprocess.input_size,
        "classes": len(ckpt.class_mapping.classes),
        "agreement": info.agreement,
        "heldout": info.heldout_images,
        "speedup": rates["openvino-int8"] / rates["torch"],
    }


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_posefleet(
    aws: LocalAWS,
    s3: Any,
    sqs: Any,
    keys: list[str],
    model: Path,
    *,
    label: str,
    batch: int,
    draft: bool,
    backend: str = "torch",
    prefix: str = "bench/",
) -> dict:
    suffix = f"{label}-{int(time.time())}"
    queues = bootstrap(
        s3, sqs, buckets=(), queue_name=f"bench-{suffix}", dlq_name=f"bench-dlq-{suffix}"
    )
    results = f"s3://bench-results/{suffix}"
    env = {
        **os.environ,
        **aws.env(),
        "POSEFLEET_QUEUE_URL": queues.queue_url,
        "POSEFLEET_RESULTS": results,
        "POSEFLEET_MODEL": str(model),
        "POSEFLEET_BATCH_SIZE": str(batch),
        "POSEFLEET_WAIT_TIME_SECONDS": "1",
        "POSEFLEET_JPEG_DRAFT": "true" if draft else "false",
        "POSEFLEET_BACKEND": backend,
    }
    tasks = -(-len(keys) // 10)
    # The whole job is enqueued first: the worker is measured on a full queue (a backfill),
    # from its first receive to its last result, as the baseline is measured over its loop.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "producer",
            "--bucket",
            "bench-input",
            "--prefix",
            prefix,
            "--job-id",
            "bench",
            "--task-size",
            "10",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    log, out = OUT / f"worker-{label}.err", OUT / f"worker-{label}.out"
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker"], env=env, stdout=out.open("wb"), stderr=log.open("wb")
    )
    try:
        while '"worker_started"' not in log.read_text():
            if worker.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.05)
        cpu_before, moto_before = (process_cpu_seconds(p) for p in (worker.pid, aws.process.pid))
        while log.read_text().count('"task_done"') < tasks:  # the log, not S3: no load on moto
            if worker.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.05)
        cpu_seconds = process_cpu_seconds(worker.pid) - cpu_before  # the job's window only
        moto_cpu_seconds = process_cpu_seconds(aws.process.pid) - moto_before
    finally:
        worker.terminate()
        worker.wait(timeout=120)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    stopped = next(e for e in events if e["event"] == "worker_stopped")
    stamps = {
        e["event"]: datetime.fromisoformat(e["timestamp"])
        for e in events
        if e["event"] in ("worker_started", "task_done")  # the last task_done wins
    }
    seconds = (stamps["task_done"] - stamps["worker_started"]).total_seconds()
    location = ResultsLocation.parse(results)
    stage_ms: dict[str, float] = {}
    for line in out.read_text().splitlines():
        doc = json.loads(line)
        if "StageTime" in doc:
            values = doc["StageTime"] if isinstance(doc["StageTime"], list) else [doc["StageTime"]]
            stage_ms[doc["Stage"]] = stage_ms.get(doc["Stage"], 0.0) + sum(values)
    predictions = {}
    for obj in s3.list_objects_v2(Bucket=location.bucket, Prefix=location.tasks_prefix("bench"))[
        "Contents"
    ]:
        for line in load_lines(
            s3.get_object(Bucket=location.bucket, Key=obj["Key"])["Body"].read()
        ):
            predictions[line.key] = line.predicted_class_index
    return {
        "seconds": seconds,
        "predictions": predictions,
        "stage_ms": stage_ms,
        "cpu_seconds": cpu_seconds,
        "moto_cpu_seconds": moto_cpu_seconds,
        "peak_rss_mib": stopped["peak_rss_mib"],
    }


def request_cost(tasks_per_1000: float, *, record: bool) -> float:
    """Requests per million images: benchmarks/prices.py's model of the worker's, plus the
    producer's SendMessageBatch (one per ten tasks), listing (one LIST per 1,000 keys) and plan
    (two PUTs per 100 tasks)."""
    per_1000 = worker_requests(tasks_per_1000, record=record)
    per_1000["sqs"] += tasks_per_1000 / 10
    per_1000["s3_put"] += 2 * tasks_per_1000 / 100
    per_1000["s3_list"] = 1.0
    return cost_per_million(per_1000)["total"]


# Tasks per 1,000 images: 20-image tasks (before issue 20), and the default sizes (20, then
# 100) on a large prefix (about 100 partitions; docs/benchmarks.md, "Requests per million").
TASKS_BEFORE, TASKS_AFTER = 50.0, 10.08


def cost_lines(rates: dict[str, float], baseline_seconds_per_image: float) -> list[str]:
    """Cost of one million images, from the measured rates (2 vCPUs, like a 2 vCPU / 4 GB task),
    with the requests of 20-image tasks (before) and of the default task sizes with the job
    record (after)."""
    task_hour = 2 * FARGATE_VCPU_HOUR + 4 * FARGATE_GB_HOUR
    before = request_cost(TASKS_BEFORE, record=False)
    after = request_cost(TASKS_AFTER, record=True)
    gets = 1e6 * S3_GET_PER_1000 / 1000
    lam = 1e6 * baseline_seconds_per_image * (3008 / 1024) * LAMBDA_GB_SECOND + LAMBDA_PER_MILLION
    rows = []
    for title, rate in rates.items():
        fargate = 1e6 / rate / 3600 * task_hour
        on_demand = f"{title} on Fargate, 2 vCPU / 4 GB, {rate:.2f} img/s a task"
        spot = "the same on Fargate Spot (about 70% off compute, varies)"
        for label, compute in ((on_demand, fargate), (spot, fargate * 0.3)):
            rows.append(
                f"| {label} | ${compute:.2f} | ${before:.2f} | ${after:.2f} | "
                f"${compute + before:.2f} | ${compute + after:.2f} |"
            )
    return [
        "",
        "### Cost of one million images",
        "",
        "From the throughput above, at on-demand prices (us-east-1, as published in 2025: Fargate "
        f"${FARGATE_VCPU_HOUR}/vCPU-hour and ${FARGATE_GB_HOUR}/GB-hour; "
        f"Lambda ${LAMBDA_GB_SECOND}/GB-s "
        f"and ${LAMBDA_PER_MILLION}/million requests; S3 ${S3_GET_PER_1000}/1,000 GET and "
        f"${S3_PUT_PER_1000}/1,000 PUT; SQS ${SQS_PER_MILLION}/million requests; DynamoDB "
        f"${DDB_WRITE_PER_MILLION}/million write and ${DDB_READ_PER_MILLION}/million read "
        f"request units; g5.xlarge ${G5_XLARGE_HOUR}/hour). Requests before: 20-image tasks; "
        "after: the default task sizes (20, then 100) and the job record (benchmarks/prices.py):",
        "",
        "| | compute | requests before | requests after | total before | total after |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        f"| seed Lambda, 3008 MB, {baseline_seconds_per_image:.2f} s an image "
        "(the baseline's time) | "
        f"${lam:.2f} | ${gets:.2f} | ${gets:.2f} | ${lam + gets:.2f} | ${lam + gets:.2f} |",
        "",
        "A GPU worker was not measured in this run (no GPU here). On a g5.xlarge at "
        f"${G5_XLARGE_HOUR}/hour, one million images cost ${G5_XLARGE_HOUR:.3f} x 1e6 / (3600 x R) "
        "for a measured R images/s; at R = 500 that is "
        f"${G5_XLARGE_HOUR * 1e6 / 3600 / 500:.2f} plus the same requests.",
    ]


def write_between(doc: Path, start: str, end: str, section: str) -> None:
    """Put ``section`` between the ``start`` and ``end`` markers of ``doc``, if it has them."""
    text = doc.read_text() if doc.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        doc.write_text(head + start + "\n" + section + "\n" + end + rest.split(end, 1)[1])


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {available_cpus()} CPUs available, {system}, torch {torch.__version__}"


def median_run(runs: list[dict]) -> dict:
    """The run with the median time (this machine's speed varies by 10% from run to run)."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[len(ordered) // 2], "all_seconds": [r["seconds"] for r in runs]}


def corpus_items(files: dict[str, bytes], count: int, seed: int) -> list[LabelledImage]:
    """The corpus as labelled photos (file ``i`` shows pose ``i mod poses``), for calibration."""
    poses = list(ClassMapping.for_poses().classes)
    cache = OUT / f"corpus-v2-{count}-{seed}"
    return [
        LabelledImage(cache / key.removeprefix("bench/"), poses[i % len(poses)])
        for i, key in enumerate(sorted(files))
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=240)
    p.add_argument("--model", help="checkpoint to serve (default: a seeded, untrained ResNet50)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument(
        "--repeat", type=int, default=3, help="runs of each, interleaved; the median is reported"
    )
    p.add_argument(
        "--no-doc", action="store_true", help="print only; do not rewrite docs/benchmarks.md"
    )
    p.add_argument(
        "--runs",
        default=",".join(v.label for v in VARIANTS),
        help="worker runs to make (default: all); fewer ones need --no-doc",
    )
    args = p.parse_args(argv)
    wanted = set(args.runs.split(","))
    OUT.mkdir(exist_ok=True)
    model = model_file(args.model)
    files = corpus(args.images, args.seed)
    keys = sorted(files)
    phone = sum(1 for k in keys if "4032" in k)
    backends = ["torch"]
    if HAVE_OPENVINO:
        backends.append("openvino")
        if int8_for(model, corpus_items(files, args.images, args.seed), control=False):
            backends.append("openvino-int8")
    with LocalAWS(log_file=OUT / "moto.log") as aws:
        aws.apply_env()
        s3, sqs = client("s3"), client("sqs")
        bootstrap(s3, sqs, buckets=("bench-input", "bench-results"))
        for key, data in files.items():
            s3.put_object(Bucket="bench-input", Key=key, Body=data)
        print(
            f"corpus: {len(keys)} JPEGs ({phone} phone photos at 12 MP), "
            f"{sum(map(len, files.values())) / 1e6:.0f} MB",
            file=sys.stderr,
        )
        torch.set_num_threads(available_cpus())
        base_times: list[float] = []
        all_runs: dict[str, list[dict]] = {}
        all_ceilings: dict[str, list[float]] = {}
        for rep in range(args.repeat):  # interleaved, so a slow spell of the machine hits all
            seconds, base_pred = run_baseline(s3, "bench-input", keys, load_checkpoint(model))
            base_times.append(seconds)
            print(
                f"[{rep + 1}/{args.repeat}] baseline: {len(keys) / seconds:.2f} img/s",
                file=sys.stderr,
            )
            for v in VARIANTS:
                if v.backend not in backends or v.label not in wanted:
                    continue
                run = run_posefleet(
                    aws,
                    s3,
                    sqs,
                    keys,
                    model,
                    label=v.label,
                    batch=args.batch_size,
                    draft=v.draft,
                    backend=v.backend,
                )
                all_runs.setdefault(v.label, []).append(run)
                print(
                    f"[{rep + 1}/{args.repeat}] posefleet {v.label}: "
                    f"{len(keys) / run['seconds']:.2f} img/s",
                    file=sys.stderr,
                )
            for backend in backends:  # the ceilings too, interleaved with the runs
                all_ceilings.setdefault(backend, []).append(
                    ceiling(model, args.batch_size, backend=backend)
                )
            all_ceilings.setdefault("torch-contiguous", []).append(
                ceiling(model, args.batch_size, channels_last=False)
            )
    base_s = statistics.median(base_times)
    runs = {label: median_run(r) for label, r in all_runs.items()}
    ceilings = {name: statistics.median(rates) for name, rates in all_ceilings.items()}
    trained = trained_agreement()
    n = len(keys)
    cpus = available_cpus()
    base_rate = n / base_s
    agree = {
        label: sum(base_pred[k] == r["predictions"].get(k) for k in keys) / n
        for label, r in runs.items()
    }
    ckpt = load_checkpoint(model)

    def worker_row(title: str, r: dict) -> tuple[str, float, float, str, str]:
        rate = n / r["seconds"]
        use = r["cpu_seconds"] / r["seconds"] / cpus
        moto = r["moto_cpu_seconds"] / r["seconds"] / cpus
        return (
            title,
            rate,
            rate / base_rate,
            f"{use:.0%} (moto {moto:.0%})",
            f"{r['peak_rss_mib']} MiB",
        )

    def model_row(title: str, rate: float) -> tuple[str, float, float, str, str]:
        return (title, rate, rate / base_rate, "-", "-")

    b = args.batch_size
    rows = [
        model_row("seed-style baseline (download, full decode, batch of 1)", base_rate),
        *(worker_row(v.title, runs[v.label]) for v in VARIANTS if v.label in runs),
        model_row(f"model alone, batch {b}, channels_last off", ceilings["torch-contiguous"]),
        *(
            model_row(f"model alone, batch {b}, {BACKEND_TITLES[be]} (ceiling)", ceilings[be])
            for be in backends
        ),
    ]
    stages = "; ".join(
        f"{label}: " + " | ".join(f"{s} {r['stage_ms'].get(s, 0) / n:.0f}" for s in STAGES)
        for label, r in runs.items()
    )
    efficiency = {
        be: n / runs[v.label]["seconds"] / ceilings[be]
        for be, v in SERVED.items()
        if v.label in runs
    }
    trained_line = (
        [
            f"- int8 on a trained model (the demo's {trained['arch']}, {trained['input_size']} px, "
            f"{trained['classes']} poses; `python -m training quantize` with accuracy control): "
            f"top-1 agreement with fp32 PyTorch **{trained['agreement']:.2%}** on "
            f"{trained['heldout']} held-out photos"
            + (
                ""
                if trained["agreement"] >= MIN_AGREEMENT
                else f" (below the {MIN_AGREEMENT:.0%} bar: `quantize` refuses it without --force)"
            )
            + f"; model alone {trained['speedup']:.2f}x fp32 "
            "PyTorch. (On this run's untrained ResNet50 agreement means little: its outputs are "
            "near-ties.)"
        ]
        if trained
        else ["- int8 on a trained model: not measured (run `make demo` first to train one)."]
    )
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
        f"Corpus: {n} synthetic photo JPEGs, {phone} of them 12 MP phone photos; model {ckpt.arch} "
        f"({ckpt.version}, {'untrained, seeded' if not args.model else model.name}), "
        f"input {ckpt.preprocess.input_size} px.",
        "",
        "| run | images/s | vs baseline | worker CPU use | worker peak RSS |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f}x | {r[3]} | {r[4]} |" for r in rows),
        "",
        f"- End to end / ceiling (same backend, batch {b}): "
        + ", ".join(f"**{v:.0%}** with {BACKEND_TITLES[be]}" for be, v in efficiency.items())
        + ".",
        "- Top-1 agreement with the baseline: "
        + ", ".join(f"{label} {value:.1%}" for label, value in agree.items())
        + ".",
        *trained_line,
        f"- Worker time per image by stage, ms (summed over threads, so stages overlap): {stages}.",
        f"- Baseline: {base_s / n * 1000:.0f} ms per image.",
        f"- Each figure is the median of {args.repeat} interleaved runs; their range, images/s: "
        + "; ".join(
            f"{label} {n / max(times):.2f}-{n / min(times):.2f}"
            for label, times in {
                "baseline": base_times,
                **{label: r["all_seconds"] for label, r in runs.items()},
            }.items()
        )
        + "; model alone: "
        + "; ".join(f"{name} {min(r):.2f}-{max(r):.2f}" for name, r in all_ceilings.items())
        + ".",
        *cost_lines(
            {
                f"posefleet ({BACKEND_TITLES[be]})": n / runs[v.label]["seconds"]
                for be, v in SERVED.items()
                if v.label in runs
            },
            base_s / n,
        ),
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_doc:
        write_between(DOC, START, END, table)
    (OUT / "last.json").write_text(
        json.dumps(
            {
                "baseline": base_rate,
                "runs": {label: n / r["seconds"] for label, r in runs.items()},
                "efficiency": efficiency,
                "agreement": agree,
                "ceilings": ceilings,
                "trained_int8": trained,
                "images": n,
                "peak_rss_mib": {label: r["peak_rss_mib"] for label, r in runs.items()},
                "cpu_use": {
                    label: r["cpu_seconds"] / r["seconds"] / cpus for label, r in runs.items()
                },
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
