"""``python -m benchmarks.heic``: what HEIC and AVIF photos cost the worker against JPEG, in one
run on one machine, every figure beside the JPEG one measured in the same run.

1. A corpus of phone photos (4032x3024 and 3024x4032, sensor noise as ``make bench`` adds,
   poses in rotation), each as a JPEG (encoded as ``make bench`` encodes its corpus) and as a
   HEIC laid out as an iPhone writes one: 512-px grid tiles and a 320-px thumbnail (x265
   through pillow-heif, quality 50: about 2 MB at 12 MP); the first few also as AVIF (Pillow's
   encoder). Cached in ``bench-out/``.
2. Decode cost per image (``posefleet.preprocess.decode_image``, one image at a time): JPEG at
   1/8 DCT scale (the worker's path), JPEG in full, HEIC in full (libheif on one thread and on
   its default four), HEIC from its thumbnail, AVIF through Pillow's plugin; and whether
   pillow-heif can decode AVIF at all.
3. The decode stage alone: one thread per CPU over the corpus, as the worker's decode pool.
4. Thumbnail against full decode on a trained model (the demo's, ``make demo`` trains it):
   top-1 agreement over every corpus photo, none of which the model was trained on.
5. The worker: the real producer and one ``python -m worker`` against moto's server, on the
   JPEGs, on the HEICs (thumbnails: the default) and on the HEICs decoded in full
   (``POSEFLEET_JPEG_DRAFT=false``); the median of ``--repeat`` interleaved runs.

Prints the section and writes it into docs/benchmarks.md between the heic markers.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pillow_heif
import torch
from PIL import Image

from benchmarks.__main__ import OUT, machine, model_file, photo_like, run_posefleet
from mappings import ClassMapping
from posefleet.aws import client
from posefleet.local import LocalAWS, bootstrap
from posefleet.preprocess import decode_image
from training.synthetic import encode, render_pose
from worker.cpus import available_cpus
from worker.model import Classifier

DOC = Path("docs/benchmarks.md")
START, END = "<!-- heic:start -->", "<!-- heic:end -->"
PHONE_SIZES = ((4032, 3024), (3024, 4032))
HEIC_QUALITY = 50  # x265 at 50: 1.9-2 MB for a noisy 12 MP photo, what phones write
HEIC_PARAMS = {
    "quality": HEIC_QUALITY,
    "tile_size": 512,  # Apple's grid
    "thumbnails": [320],
    # x265's fastest preset: the same size of file decodes within 2% of "superfast"'s
    "enc_params": {"preset": "ultrafast"},
}
AVIF_PARAMS = {"quality": 60, "speed": 8}
TRAINED = Path(".demo/trained.pt")


def _make_photo(args: tuple[int, int, Path, int]) -> None:
    i, seed, folder, avif = args
    rng = random.Random(seed * 100_003 + i)
    poses = list(ClassMapping.for_poses().classes)
    size = PHONE_SIZES[i % 2]
    pose = poses[i % len(poses)]
    image = photo_like(render_pose(pose, size, rng), rng)
    stem = folder / f"{i:05d}-{pose}-{size[0]}x{size[1]}"
    stem.with_suffix(".jpg").write_bytes(encode(image, rng))
    if i < avif:
        out = io.BytesIO()
        image.save(out, "AVIF", **AVIF_PARAMS)
        stem.with_suffix(".avif").write_bytes(out.getvalue())
    out = io.BytesIO()
    image.save(out, "HEIF", **HEIC_PARAMS)
    stem.with_suffix(".heic").write_bytes(out.getvalue())  # last: a photo with one is done


def corpus(count: int, seed: int, avif: int) -> Path:
    """Photos ``NNNNN-<pose>-WxH.{jpg,heic[,avif]}``, made once (in parallel) and kept: a
    larger ``count`` adds photos, the first ones stay the same."""
    folder = OUT / f"heic-v1-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    have = {p.name[:5] for p in folder.glob("*.heic")}
    have_avif = {p.name[:5] for p in folder.glob("*.avif")}
    todo = [
        (i, seed, folder, avif)
        for i in range(count)
        if f"{i:05d}" not in have or (i < avif and f"{i:05d}" not in have_avif)
    ]
    if todo:
        print(f"encoding {len(todo)} phone photos (once; kept in {folder})", file=sys.stderr)
        with ProcessPoolExecutor(available_cpus()) as pool:
            for _ in pool.map(_make_photo, todo):
                pass
    return folder


def files(folder: Path, suffix: str, count: int | None = None) -> list[Path]:
    return sorted(folder.glob(f"*{suffix}"))[:count]


def per_image(decode: Callable[[bytes], object], datas: Sequence[bytes]) -> tuple[float, float]:
    """Median CPU and wall milliseconds of decoding each image, one at a time."""
    cpu, wall = [], []
    for data in datas:
        c, w = time.process_time(), time.perf_counter()
        decode(data)
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    return statistics.median(cpu), statistics.median(wall)


def pooled(decode: Callable[[bytes], object], datas: Sequence[bytes]) -> float:
    """Images/s through one decode thread per CPU, as the worker's decode pool runs."""
    started = time.perf_counter()
    with ThreadPoolExecutor(available_cpus()) as pool:
        for _ in pool.map(decode, datas):
            pass
    return len(datas) / (time.perf_counter() - started)


def libheif_threads(n: int) -> None:
    pillow_heif.options.DECODE_THREADS = n


def pillow_heif_reads_avif(data: bytes) -> str:
    try:
        pillow_heif.open_heif(io.BytesIO(data))[0].load()
    except Exception as e:
        return f"no: {e}"
    return "yes"


def decode_costs(folder: Path, size: int, sample: int, avif: int) -> dict[str, tuple[float, float]]:
    jpgs = [p.read_bytes() for p in files(folder, ".jpg", sample)]
    heics = [p.read_bytes() for p in files(folder, ".heic", sample)]
    avifs = [p.read_bytes() for p in files(folder, ".avif", avif)]
    default_threads = pillow_heif.options.DECODE_THREADS
    runs: dict[str, tuple[Callable[[bytes], object], list[bytes], int]] = {
        "JPEG at 1/8 scale (the worker's path)": (
            lambda d: decode_image(d, input_size=size),
            jpgs,
            default_threads,
        ),
        "JPEG in full": (lambda d: decode_image(d, input_size=size, draft=False), jpgs, 1),
        "HEIC in full, libheif on 1 thread": (
            lambda d: decode_image(d, input_size=size, draft=False),
            heics,
            1,
        ),
        f"HEIC in full, libheif on {default_threads} threads (its default)": (
            lambda d: decode_image(d, input_size=size, draft=False),
            heics,
            default_threads,
        ),
        "HEIC from its 320-px thumbnail": (lambda d: decode_image(d, input_size=size), heics, 1),
        "AVIF, Pillow's plugin (libavif, dav1d)": (
            lambda d: decode_image(d, input_size=size),
            avifs,
            1,
        ),
    }
    out = {}
    try:
        for name, (decode, datas, threads) in runs.items():
            libheif_threads(threads)
            decode(datas[0])  # warm up
            out[name] = per_image(decode, datas)
    finally:
        libheif_threads(default_threads)
    return out


def decode_pool(folder: Path, size: int, sample: int) -> dict[str, float]:
    jpgs = [p.read_bytes() for p in files(folder, ".jpg", sample)]
    heics = [p.read_bytes() for p in files(folder, ".heic", sample)]
    default_threads = pillow_heif.options.DECODE_THREADS
    out = {}
    try:
        for name, decode, datas, threads in (
            ("JPEG at 1/8", lambda d: decode_image(d, input_size=size), jpgs, default_threads),
            ("HEIC thumbnail", lambda d: decode_image(d, input_size=size), heics, default_threads),
            (
                "HEIC in full, libheif 1 thread",
                lambda d: decode_image(d, input_size=size, draft=False),
                heics,
                1,
            ),
            (
                f"HEIC in full, libheif {default_threads} threads",
                lambda d: decode_image(d, input_size=size, draft=False),
                heics,
                default_threads,
            ),
        ):
            libheif_threads(threads)
            out[name] = pooled(decode, datas)
    finally:
        libheif_threads(default_threads)
    return out


def top1(clf: Classifier, images: list[torch.Tensor]) -> list[int]:
    out: list[int] = []
    for i in range(0, len(images), 32):
        out += clf.predict(images[i : i + 32]).argmax(dim=1).tolist()
    return out


def agreement(folder: Path, count: int, checkpoint: Path) -> dict:
    """Top-1 of the thumbnail path against the full decode, and JPEG 1/8 against full."""
    clf = Classifier.from_file(checkpoint, device="cpu", threads=available_cpus())
    size = clf.spec.input_size
    index = {c: i for i, c in enumerate(clf.checkpoint.class_mapping.classes)}
    heics = files(folder, ".heic", count)
    labels = [index.get(p.name.split("-")[1], -1) for p in heics]
    used = 0
    thumb, full, jpeg_draft, jpeg_full = [], [], [], []
    for path in heics:
        data = path.read_bytes()
        probe = Image.open(io.BytesIO(data))
        used += probe.draft("RGB", (size, size)) is not None
        thumb.append(decode_image(data, input_size=size).pixels)
        full.append(decode_image(data, input_size=size, draft=False).pixels)
        jdata = path.with_suffix(".jpg").read_bytes()
        jpeg_draft.append(decode_image(jdata, input_size=size).pixels)
        jpeg_full.append(decode_image(jdata, input_size=size, draft=False).pixels)
    t, f, jd, jf = (top1(clf, x) for x in (thumb, full, jpeg_draft, jpeg_full))
    n = len(heics)

    def accuracy(pred: list[int]) -> float:
        return sum(p == y for p, y in zip(pred, labels, strict=True)) / n

    return {
        "photos": n,
        "thumbnail_used": used,
        "arch": clf.checkpoint.arch,
        "input_size": size,
        "classes": len(index),
        "heic": sum(a == b for a, b in zip(t, f, strict=True)) / n,
        "jpeg": sum(a == b for a, b in zip(jd, jf, strict=True)) / n,
        "accuracy": {
            "HEIC thumbnail": accuracy(t),
            "HEIC full": accuracy(f),
            "JPEG 1/8": accuracy(jd),
            "JPEG full": accuracy(jf),
        },
    }


WORKER_RUNS = (  # label, suffix, draft, title
    ("jpeg", ".jpg", True, "JPEG, draft on (the default)"),
    ("heic", ".heic", True, "HEIC, thumbnails (the default)"),
    ("heic-full", ".heic", False, "HEIC decoded in full (`POSEFLEET_JPEG_DRAFT=false`)"),
)


def worker_runs(
    folder: Path, count: int, model: Path, repeat: int, batch: int
) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    with LocalAWS(log_file=OUT / "moto-heic.log") as aws:
        aws.apply_env()
        s3, sqs = client("s3"), client("sqs")
        bootstrap(s3, sqs, buckets=("bench-input", "bench-results"))
        keys: dict[str, list[str]] = {}
        for label, suffix, _, _ in WORKER_RUNS:
            keys[label] = []
            for path in files(folder, suffix, count):
                key = f"heic-bench/{label}/{path.name}"
                s3.put_object(Bucket="bench-input", Key=key, Body=path.read_bytes())
                keys[label].append(key)
        for rep in range(repeat):
            for label, _, draft, _ in WORKER_RUNS:
                run = run_posefleet(
                    aws,
                    s3,
                    sqs,
                    keys[label],
                    model,
                    label=f"heic-{label}",
                    batch=batch,
                    draft=draft,
                    prefix=f"heic-bench/{label}/",
                )
                runs.setdefault(label, []).append(run)
                rate = len(keys[label]) / run["seconds"]
                print(f"[{rep + 1}/{repeat}] {label}: {rate:.2f} img/s", file=sys.stderr)
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.heic", description=__doc__.split("\n")[0]
    )
    p.add_argument("--photos", type=int, default=300, help="corpus size (the agreement's photos)")
    p.add_argument("--images", type=int, default=48, help="photos each worker run classifies")
    p.add_argument("--avif", type=int, default=6, help="photos also encoded as AVIF")
    p.add_argument("--sample", type=int, default=24, help="photos timed one at a time")
    p.add_argument("--seed", type=int, default=23)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--model", help="checkpoint the worker serves (default: as make bench)")
    p.add_argument("--trained", default=str(TRAINED), help="a trained checkpoint (agreement)")
    p.add_argument("--skip", default="", help="comma list of: decode, pool, agreement, worker")
    p.add_argument("--no-doc", action="store_true", help="print only")
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    OUT.mkdir(exist_ok=True)
    folder = corpus(args.photos, args.seed, args.avif)
    model = model_file(args.model)
    size = Classifier.from_file(model, device="cpu").spec.input_size
    heic_mb = statistics.median(p.stat().st_size for p in files(folder, ".heic", args.photos))
    jpeg_mb = statistics.median(p.stat().st_size for p in files(folder, ".jpg", args.photos))
    torch.set_num_threads(available_cpus())

    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; libheif "
        f"{pillow_heif.libheif_version()} (pillow-heif {pillow_heif.__version__}), Pillow "
        f"{Image.__version__}. Corpus: {args.photos} phone photos at 12 MP (4032x3024 and "
        f"3024x4032), each a JPEG (median {jpeg_mb / 1e6:.1f} MB) and a HEIC with 512-px grid "
        f"tiles and a 320-px thumbnail (median {heic_mb / 1e6:.1f} MB); {args.avif} also as AVIF.",
        "",
    ]
    if "decode" not in skip:
        costs = decode_costs(folder, size, args.sample, args.avif)
        base_cpu = next(iter(costs.values()))[0]
        lines += [
            f"Decode cost per image, one at a time, to {size} px (median of {args.sample} photos;"
            " CPU time counts every thread):",
            "",
            "| decode | CPU ms | vs JPEG at 1/8 | wall ms |",
            "| --- | ---: | ---: | ---: |",
            *(
                f"| {name} | {c:.0f} | {c / base_cpu:.1f}x | {w:.0f} |"
                for name, (c, w) in costs.items()
            ),
            "",
            "pillow-heif reading AVIF: "
            + pillow_heif_reads_avif(files(folder, ".avif")[0].read_bytes())
            + ".",
            "",
        ]
    if "pool" not in skip:
        rates = decode_pool(folder, size, args.images)
        lines += [
            f"The decode stage alone, {available_cpus()} threads (one per CPU) over "
            f"{args.images} photos, images/s: "
            + "; ".join(f"{name} **{r:.1f}**" for name, r in rates.items())
            + ".",
            "",
        ]
    if "agreement" not in skip:
        if Path(args.trained).exists():
            a = agreement(folder, args.photos, Path(args.trained))
            lines += [
                f"Thumbnail against full decode on a trained model ({a['arch']}, "
                f"{a['input_size']} px, {a['classes']} poses; {a['photos']} photos it never saw, "
                f"the thumbnail used for {a['thumbnail_used']}): top-1 agreement "
                f"**{a['heic']:.2%}** (JPEG at 1/8 against full: {a['jpeg']:.2%}). Accuracy "
                "against the generator's labels: "
                + ", ".join(f"{k} {v:.1%}" for k, v in a["accuracy"].items())
                + ".",
                "",
            ]
        else:
            lines += [f"Agreement: not measured ({args.trained} missing: run `make demo`).", ""]
    if "worker" not in skip:
        runs = worker_runs(folder, args.images, model, args.repeat, args.batch_size)
        rows = []
        count = args.images
        for label, _, _, title in WORKER_RUNS:
            all_runs = runs[label]
            times = sorted(r["seconds"] for r in all_runs)
            median = sorted(all_runs, key=lambda r: r["seconds"])[len(all_runs) // 2]
            decode_ms = median["stage_ms"].get("decode", 0) / count
            rows.append(
                f"| {title} | {count / median['seconds']:.2f} | "
                f"{count / times[-1]:.2f}-{count / times[0]:.2f} | {decode_ms:.0f} | "
                f"{median['peak_rss_mib']} MiB |"
            )
        lines += [
            f"One worker (`python -m worker`, batch {args.batch_size}, model as `make bench`: "
            f"{'a seeded, untrained ResNet50' if not args.model else model.name}, {size} px) on "
            f"{args.images} of these photos, median of {args.repeat} interleaved runs:",
            "",
            "| photos | images/s | range | decode ms per image (summed over threads) | peak RSS |",
            "| --- | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    section = "\n".join(lines).rstrip()
    print(section)
    if not args.no_doc and DOC.exists():
        text = DOC.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            DOC.write_text(head + START + "\n" + section + "\n" + END + rest.split(END, 1)[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
