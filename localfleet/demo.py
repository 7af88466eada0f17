"""``make demo``: the whole flow on this machine, against moto's server, with real processes.

Starts moto's server on a free loopback port, creates the queues and buckets as infra/ would,
uploads generated pose photos (phone-sized JPEGs among them, plus two broken files), publishes
a checkpoint to the models bucket, starts two worker processes, runs the producer, follows the
job to completion and prints a summary. It stops everything it started, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from posefleet.aws import client
from posefleet.layout import ResultsLocation
from posefleet.local import LocalAWS, bootstrap
from posefleet.resources import DEFAULT_INPUT_BUCKET, DEFAULT_MODELS_BUCKET, DEFAULT_RESULTS_BUCKET

WORK = Path(".demo")
PREFIX = "checkins/"
SIZE_WEIGHTS = (1, 1, 2, 2, 4, 4, 4)  # over training.synthetic.PHOTO_SIZES: 2 in 18 at 12 MP


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def upload_photos(s3: object, count: int, seed: int) -> dict[str, str]:
    """Generate and upload ``count`` photos plus two broken files; returns key -> pose id."""
    from training.synthetic import PHOTO_SIZES, POSE_GEOMETRY, encode, render_pose

    rng = random.Random(seed)
    ids = list(POSE_GEOMETRY)
    labels: dict[str, str] = {}
    for i in range(count):
        pose_id = ids[i % len(ids)]
        size = rng.choices(PHOTO_SIZES, SIZE_WEIGHTS)[0]
        key = f"{PREFIX}athlete-{i % 37:03d}/checkin-{i:05d}.jpg"
        s3.put_object(
            Bucket=DEFAULT_INPUT_BUCKET, Key=key, Body=encode(render_pose(pose_id, size, rng), rng)
        )  # type: ignore[attr-defined]
        labels[key] = pose_id
        if (i + 1) % 50 == 0:
            say(f"  uploaded {i + 1}/{count} photos")
    good = s3.get_object(Bucket=DEFAULT_INPUT_BUCKET, Key=next(iter(labels)))["Body"].read()  # type: ignore[attr-defined]
    s3.put_object(
        Bucket=DEFAULT_INPUT_BUCKET,
        Key=f"{PREFIX}broken/truncated.jpg",
        Body=good[: len(good) // 3],
    )  # type: ignore[attr-defined]
    s3.put_object(
        Bucket=DEFAULT_INPUT_BUCKET, Key=f"{PREFIX}broken/notes.JPG", Body=b"not a photo\n"
    )  # type: ignore[attr-defined]
    s3.put_object(
        Bucket=DEFAULT_INPUT_BUCKET, Key=f"{PREFIX}README.txt", Body=b"skipped: not an image name"
    )  # type: ignore[attr-defined]
    return labels


def train_demo_model(target: Path) -> None:
    """ResNet18 on 2,200 synthetic photos at 96 px: a few minutes on two cores, once."""
    from posefleet.settings import TrainingSettings
    from training.data import LabelledImage
    from training.synthetic import generate
    from training.train import run_training

    data = WORK / "train-data"
    items = []
    sizes = ((160, 120), (120, 160), (200, 150))
    for i, photo in enumerate(generate(11 * 200, seed=1001, sizes=sizes)):
        path = data / photo.pose_id / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo.data)
        items.append(LabelledImage(path, photo.pose_id))
    settings = TrainingSettings(
        arch="resnet18", input_size=96, lr=1e-3, lr_schedule="cosine", epochs=10, patience=4, seed=0
    )
    run_training(items, settings, target, say=say, progress=sys.stderr.isatty())


def make_checkpoint(path: Path, kind: str) -> tuple[str, bool]:
    """A model trained on synthetic photos (trained once, cached in .demo/), or an untrained one."""
    if kind == "trained":
        trained = WORK / "trained.pt"
        if not trained.exists():
            say("training a ResNet18 on 2,200 synthetic photos (once; cached in .demo/trained.pt)")
            train_demo_model(trained)
        path.write_bytes(trained.read_bytes())
        return "a ResNet18 trained on synthetic photos (.demo/trained.pt)", True
    from posefleet.checkpoint import save_initialised

    save_initialised(path)
    return "a FRESHLY INITIALISED ResNet50 (untrained: predictions are arbitrary)", False


def publish(s3: object, path: Path) -> str:
    from posefleet.checkpoint import file_version

    version = file_version(path)
    key = f"pose_classifier/{version}/model.pt"
    s3.upload_file(str(path), DEFAULT_MODELS_BUCKET, key)  # type: ignore[attr-defined]
    pointer = {"checkpoint": f"s3://{DEFAULT_MODELS_BUCKET}/{key}", "version": version}
    s3.put_object(
        Bucket=DEFAULT_MODELS_BUCKET,
        Key="pose_classifier/current.json",
        Body=json.dumps(pointer).encode(),
    )  # type: ignore[attr-defined]
    return f"s3://{DEFAULT_MODELS_BUCKET}/pose_classifier/current.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m posefleet.demo", description=__doc__.splitlines()[0]
    )
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--model",
        choices=("trained", "untrained"),
        default="trained",
        help="trained: a model trained on synthetic photos (cached); untrained: a fresh ResNet50",
    )
    args = p.parse_args(argv)

    WORK.mkdir(exist_ok=True)
    aws = LocalAWS(log_file=WORK / "moto.log")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        say(f"starting moto's server on {aws.url}")
        aws.start()
        aws.apply_env()
        s3, sqs = client("s3"), client("sqs")
        queues = bootstrap(
            s3, sqs, buckets=(DEFAULT_INPUT_BUCKET, DEFAULT_RESULTS_BUCKET, DEFAULT_MODELS_BUCKET)
        )
        say(f"created queue, dead-letter queue and buckets; generating {args.images} pose photos")
        labels = upload_photos(s3, args.images, args.seed)

        checkpoint = WORK / "model.pt"
        described, trained = make_checkpoint(checkpoint, args.model)
        model_uri = publish(s3, checkpoint)
        say(f"model: {described}, published as {model_uri}")

        env = {
            **os.environ,
            **aws.env(),
            "POSEFLEET_QUEUE_URL": queues.queue_url,
            "POSEFLEET_MODEL": model_uri,
            "POSEFLEET_MODEL_CACHE_DIR": str(WORK / "model-cache"),
            "POSEFLEET_TORCH_THREADS": "1",
            "POSEFLEET_DECODE_THREADS": "1",
            "POSEFLEET_WAIT_TIME_SECONDS": "2",
            "POSEFLEET_BATCH_SIZE": "16",
        }
        for n in range(args.workers):
            log = (WORK / f"worker-{n}.log").open("wb")
            workers.append(
                subprocess.Popen([sys.executable, "-m", "worker"], env=env, stdout=log, stderr=log)
            )
        say(f"started {args.workers} workers (logs in {WORK}/worker-*.log)")

        job_id = f"demo-{int(time.time())}"
        started = time.monotonic()
        rc = subprocess.run(
            [
                sys.executable,
                "-m",
                "producer",
                "--bucket",
                DEFAULT_INPUT_BUCKET,
                "--prefix",
                PREFIX,
                "--job-id",
                job_id,
                "--task-size",
                "10",
            ],
            env=env,
            check=False,
        ).returncode
        if rc != 0:
            say(f"producer failed with exit code {rc}")
            return rc

        from producer.follow import follow
        from producer.results import iter_results, read_manifest, summarize

        location = ResultsLocation.parse(
            env.get("POSEFLEET_RESULTS", f"s3://{DEFAULT_RESULTS_BUCKET}/results")
        )
        manifest = read_manifest(s3, location, job_id)
        follow(s3, sqs, location, manifest, interval=1.0, timeout=900)
        seconds = time.monotonic() - started
        lines = list(iter_results(s3, location, job_id))
        summary = summarize(lines)
        accounted = {line.key for line in lines}
        expected = set(labels) | {f"{PREFIX}broken/truncated.jpg", f"{PREFIX}broken/notes.JPG"}
        correct = sum(
            1
            for line in lines
            if line.status == "ok" and labels.get(line.key) == line.predicted_class_id
        )
        errors = Counter(
            f"{line.key}: {line.error_kind}" for line in lines if line.status == "error"
        )

        print("\nposefleet demo summary")
        print(f"  images listed      {manifest.images} in {manifest.tasks} tasks (job {job_id})")
        print(
            f"  result lines       {len(lines)} ({summary.ok} ok, {len(lines) - summary.ok} errors)"
        )
        once = accounted == expected and len(lines) == len(expected)
        print(f"  every image once   {'yes' if once else 'NO'}")
        print(
            f"  throughput         {len(lines) / seconds:.1f} images/s over {seconds:.1f}s "
            f"with {args.workers} workers (model load included)"
        )
        print(f"  model              {described}")
        print(
            f"  accuracy           {correct}/{len(labels)} = {correct / len(labels):.1%}"
            " against the generator's labels"
            + ("" if trained else " (untrained model: chance is about 9%)")
        )
        print("  per pose:")
        for name, count in summary.per_pose.most_common():
            print(f"    {name:<22} {count}")
        print("  errors:")
        for text in sorted(errors):
            print(f"    {text}")
        print(
            f"  results            {location.uri}/{job_id}/tasks/*.jsonl"
            " (on the local server, now stopped)"
        )
        return 0 if once else 1
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        for w in workers:
            try:
                w.wait(timeout=120)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        aws.stop()


if __name__ == "__main__":
    sys.exit(main())
