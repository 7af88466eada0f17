"""``python -m training``: make data, train, evaluate, publish and predict pose models.

examples:
  python -m training synth --out data/synthetic --per-pose 100
  python -m training download --source s3://checkin-poses/ --labels db_labels.json --out data/poses
  python -m training cleanse --source s3://checkin-poses/ --labels db_labels.json
  python -m training train --data data/poses --out models/pose_classifier.pt
  python -m training evaluate --checkpoint models/pose_classifier.pt --data data/holdout
  python -m training quantize --checkpoint models/pose_classifier.pt --data data/poses
  python -m training publish --checkpoint models/pose_classifier.pt --models s3://posefleet-models
  python -m training predict --checkpoint models/pose_classifier.pt photo.jpg --out photo.png

Training settings come from POSEFLEET_TRAIN_* variables (posefleet/settings.py); flags override.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from posefleet.int8 import MIN_AGREEMENT
from posefleet.settings import TrainingSettings, explain

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _sources(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for v in values:
        if not v.startswith("s3://"):
            raise ValueError(f"--source must be s3://bucket/prefix, got {v!r}")
        bucket, _, prefix = v[5:].partition("/")
        out.append((bucket, prefix))
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="write synthetic pose photos into <out>/<pose id>/")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--per-pose", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--poses", help="comma-separated pose ids (default: all)")
    for name, helptext in (
        ("download", "download labelled images from S3"),
        ("cleanse", "find unlabeled objects"),
    ):
        d = sub.add_parser(name, help=helptext)
        d.add_argument(
            "--source", action="append", required=True, help="s3://bucket/prefix (repeatable)"
        )
        d.add_argument("--labels", type=Path, required=True, help='JSON: {"bucket/key": "pose id"}')
        if name == "download":
            d.add_argument("--out", type=Path, required=True)
        else:
            d.add_argument(
                "--delete", action="store_true", help="delete them, after a typed confirmation"
            )
    t = sub.add_parser("train", help="train and write a checkpoint with its card and charts")
    t.add_argument("--data", type=Path, required=True, help="folder of <pose id>/ subfolders")
    t.add_argument("--out", type=Path, required=True, help="checkpoint path (.pt)")
    t.add_argument("--arch")
    t.add_argument("--epochs", type=int)
    t.add_argument("--input-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--pretrained", help="local ImageNet weights file for the arch")
    e = sub.add_parser("evaluate", help="score a checkpoint on a labelled folder")
    e.add_argument("--checkpoint", type=Path, required=True)
    e.add_argument("--data", type=Path, required=True)
    q = sub.add_parser(
        "quantize",
        help="write an int8 OpenVINO model beside a checkpoint, if it agrees with fp32 PyTorch",
    )
    q.add_argument("--checkpoint", type=Path, required=True)
    q.add_argument(
        "--data", type=Path, required=True, help="the labelled folder the checkpoint was trained on"
    )
    q.add_argument("--calibration-images", type=int, default=300)
    q.add_argument(
        "--min-agreement",
        type=float,
        default=MIN_AGREEMENT,
        help=f"top-1 agreement bar (default {MIN_AGREEMENT})",
    )
    q.add_argument("--force", action="store_true", help="write it even below the bar")
    pub = sub.add_parser("publish", help="upload a checkpoint if it passes the quality gate")
    pub.add_argument("--checkpoint", type=Path, required=True)
    pub.add_argument("--models", required=True, help="s3://bucket[/prefix] of the models location")
    pub.add_argument(
        "--force", action="store_true", help="publish even if worse than the current model"
    )
    pr = sub.add_parser("predict", help="classify one image; print and draw its probabilities")
    pr.add_argument("--checkpoint", type=Path, required=True)
    pr.add_argument("image", type=Path)
    pr.add_argument("--out", type=Path, help="PNG: the image beside its probability bars")
    return p


def cmd_synth(args: argparse.Namespace) -> int:
    from training.synthetic import POSE_GEOMETRY, generate

    poses = tuple(args.poses.split(",")) if args.poses else tuple(POSE_GEOMETRY)
    sizes = ((640, 480), (480, 640), (800, 600), (600, 800))
    for i, photo in enumerate(
        generate(args.per_pose * len(poses), seed=args.seed, sizes=sizes, pose_ids=poses)
    ):
        target = args.out / photo.pose_id / f"synthetic-{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(photo.data)
    print(
        json.dumps(
            {"out": str(args.out), "images": args.per_pose * len(poses), "poses": list(poses)}
        )
    )
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    from posefleet.aws import client
    from training.data import download_labelled, load_labels

    _, summary = download_labelled(
        client("s3"),
        _sources(args.source),
        load_labels(args.labels),
        args.out,
        progress=sys.stderr.isatty(),
    )
    print(json.dumps(summary.as_dict(), indent=2))
    return EXIT_OK


def cmd_cleanse(args: argparse.Namespace) -> int:
    from posefleet.aws import client
    from training.cleanse import delete_unlabeled, find_unlabeled
    from training.data import load_labels

    s3 = client("s3")
    reports = find_unlabeled(s3, _sources(args.source), load_labels(args.labels))
    print(json.dumps([r.as_dict() for r in reports], indent=2))
    count = sum(len(r.unlabeled_keys) for r in reports)
    size = sum(r.unlabeled_bytes for r in reports)
    if not args.delete or count == 0:
        print(f"{count} unlabeled images, {size / 1e6:.1f} MB; nothing deleted", file=sys.stderr)
        return EXIT_OK
    phrase = f"delete {count}"
    print(
        f"This permanently deletes {count} unlabeled images ({size / 1e6:.1f} MB) from "
        f"{', '.join(r.bucket for r in reports)}. Type '{phrase}' to go on: ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    if sys.stdin.readline().strip() != phrase:
        print("not confirmed; nothing deleted", file=sys.stderr)
        return EXIT_FAILED
    deleted = delete_unlabeled(s3, reports)
    print(f"deleted {deleted} objects", file=sys.stderr)
    return EXIT_OK


def cmd_train(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from training.data import scan_folder
    from training.train import run_training

    result = run_training(scan_folder(args.data), settings, args.out, progress=sys.stderr.isatty())
    print(
        json.dumps(
            {
                "checkpoint": str(result.checkpoint),
                "model_version": result.card.model_version,
                "val_accuracy": result.card.evaluation.accuracy,
            },
            indent=2,
        )
    )
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.data import scan_folder
    from training.train import evaluate_checkpoint_on, write_report

    report = evaluate_checkpoint_on(args.checkpoint, scan_folder(args.data))
    out = args.checkpoint.with_name(args.checkpoint.stem + f".eval-{args.data.name}.pt")
    write_report(report, out)
    print(json.dumps({k: report[k] for k in ("accuracy", "weighted", "images")}, indent=2))
    return EXIT_OK


def cmd_quantize(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from training.data import scan_folder
    from training.quantize import QuantizeRefused, quantize_checkpoint

    try:
        done = quantize_checkpoint(
            args.checkpoint,
            scan_folder(args.data),
            val_fraction=settings.val_fraction,
            seed=settings.seed,
            calibration_images=args.calibration_images,
            min_agreement=args.min_agreement,
            force=args.force,
            say=lambda line: print(line, file=sys.stderr),
        )
    except QuantizeRefused as e:
        print(f"training: not quantized: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(
        json.dumps(
            {
                **done.info.as_dict(),
                "fp32_accuracy": done.fp32_accuracy,
                "int8_accuracy": done.int8_accuracy,
                "files": [str(p) for p in done.paths],
            },
            indent=2,
        )
    )
    return EXIT_OK


def cmd_publish(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from posefleet.aws import client
    from training.publish import PublishRefused, publish

    try:
        done = publish(
            client("s3"),
            args.checkpoint,
            args.models,
            min_accuracy=settings.min_accuracy,
            force=args.force,
        )
    except PublishRefused as e:
        print(f"training: not published: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(
        json.dumps(
            {
                "version": done.version,
                "checkpoint": done.checkpoint_uri,
                "current": done.pointer_uri,
                "previous_accuracy": done.previous_accuracy,
            },
            indent=2,
        )
    )
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from PIL import Image

    from posefleet.preprocess import decode_image
    from training.charts import prediction_png
    from worker.model import Classifier

    clf = Classifier.from_file(args.checkpoint, device="cpu")
    data = args.image.read_bytes()
    decoded = decode_image(data, input_size=clf.spec.input_size)
    (prediction,) = clf.postprocess(clf.predict([decoded.pixels]))
    print(
        f"Predicted pose: {prediction.predicted_class_name} (id {prediction.predicted_class_id}), "
        f"confidence {prediction.confidence:.1%}"
    )
    for name, p in sorted(prediction.all_probabilities.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<22} {p:6.1%}")
    if args.out:
        import io

        from PIL import ImageOps

        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        prediction_png(image, prediction.all_probabilities, args.out)
        print(f"wrote {args.out}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = {
        k: v
        for k, v in {
            "arch": getattr(args, "arch", None),
            "epochs": getattr(args, "epochs", None),
            "input_size": getattr(args, "input_size", None),
            "lr": getattr(args, "lr", None),
            "pretrained": getattr(args, "pretrained", None),
        }.items()
        if v is not None
    }
    try:
        settings = TrainingSettings(**overrides)
    except ValidationError as e:
        print(f"training: invalid settings: {explain(e)}", file=sys.stderr)
        return EXIT_USAGE
    commands = {
        "synth": lambda: cmd_synth(args),
        "download": lambda: cmd_download(args),
        "cleanse": lambda: cmd_cleanse(args),
        "train": lambda: cmd_train(args, settings),
        "evaluate": lambda: cmd_evaluate(args),
        "quantize": lambda: cmd_quantize(args, settings),
        "publish": lambda: cmd_publish(args, settings),
        "predict": lambda: cmd_predict(args),
    }
    try:
        return commands[args.command]()
    except (ValueError, FileNotFoundError) as e:
        print(f"training: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
