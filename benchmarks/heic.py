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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pillow_heif
import torch
from PIL import Image

from benchmarks.__main__ import (
    OUT,
    machine,
    model_file,
    photo_like,
    run_posefleet,
    write_between,
)
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
LIBHEIF_THREADS = 4  # pillow-heif's default decode_threads; posefleet.preprocess sets 1


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


def pillow_heif_reads_avif(data: bytes) -> str:
    try:
        pillow_heif.open_heif(io.BytesIO(data))[0].load()
    except Exception as e:
        return f"no: {e}"
    return "yes"


@dataclass(frozen=True, slots=True)
class Way:
    """One way of decoding the corpus: which files, to what input size, how."""

    title: str
    suffix: str
    size: int
    draft: bool
    libheif_threads: int = 1  # as posefleet.preprocess registers pillow-heif

    def decode(self, data: bytes) -> object:
        return decode_image(data, input_size=self.size, draft=self.draft)


def ways(size: int, small: int) -> list[Way]:
    """``size``: the served model's input (224 as ``make bench``); ``small``: an input that a
    320x240 thumbnail serves (at most 120 px: the thumbnail must be twice the input)."""
    return [
        Way(f"JPEG at 1/8 scale, to {size} px (the worker's path)", ".jpg", size, True),
        Way(f"JPEG in full, to {size} px", ".jpg", size, False),
        Way(
            f"HEIC in full, to {size} px (libheif on 1 thread, as posefleet sets it)",
            ".heic",
            size,
            False,
        ),
        Way(
            f"HEIC in full, to {size} px, libheif on {LIBHEIF_THREADS} threads (its default)",
            ".heic",
            size,
            False,
            LIBHEIF_THREADS,
        ),
        Way(f"HEIC from its 320-px thumbnail, to {small} px", ".heic", small, True),
        Way(f"JPEG at 1/8 scale, to {small} px", ".jpg", small, True),
        Way(f"AVIF (Pillow's plugin: libavif, dav1d), to {size} px", ".avif", size, True),
    ]


def measure(folder: Path, way: Way, count: int, *, pool: bool) -> tuple[float, ...]:
    """Per image, one at a time: (median CPU ms, median wall ms); ``pool``: (images/s,)."""
    datas = [p.read_bytes() for p in files(folder, way.suffix, count)]
    default = pillow_heif.options.DECODE_THREADS
    pillow_heif.options.DECODE_THREADS = way.libheif_threads
    try:
        way.decode(datas[0])  # warm up
        return (pooled(way.decode, datas),) if pool else per_image(way.decode, datas)
    finally:
        pillow_heif.options.DECODE_THREADS = default


def top1(clf: Classifier, images: list[torch.Tensor]) -> list[int]:
    out: list[int] = []
    for i in range(0, len(images), 32):
        out += clf.predict(images[i : i + 32]).argmax(dim=1).tolist()
    return out


GAP_SIZES = (96, 120, 224)
GAP_PHOTOS = 48


def input_gaps(data: bytes) -> dict[int, float]:
    """Mean absolute difference, in 8-bit levels, between a model input made from the HEIC's
    thumbnail and one made from its full decode, at each of ``GAP_SIZES`` (decode_image's
    resize, whether or not it would use the thumbnail at that size)."""
    full, thumb = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(data))
    thumb.draft("RGB", (1, 1))  # the smallest thumbnail that is a scaled copy
    full, thumb = full.convert("RGB"), thumb.convert("RGB")

    def resized(im: Image.Image, side: int) -> np.ndarray:
        return np.asarray(im.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)

    return {s: float(np.abs(resized(thumb, s) - resized(full, s)).mean()) for s in GAP_SIZES}


def agreement(folder: Path, count: int, checkpoint: Path) -> dict:
    """Top-1 of the thumbnail path against the full decode (and JPEG 1/8 against full), over
    every photo and over those of the model's own poses; and how far an input made from the
    thumbnail is from the full decode's at a few input sizes (``GAP_SIZES``)."""
    clf = Classifier.from_file(checkpoint, device="cpu", threads=available_cpus())
    size = clf.spec.input_size
    index = {c: i for i, c in enumerate(clf.checkpoint.class_mapping.classes)}
    heics = files(folder, ".heic", count)
    labels = [index.get(p.name.split("-")[1], -1) for p in heics]
    used = 0
    inputs: dict[str, list[torch.Tensor]] = {"thumb": [], "full": [], "jd": [], "jf": []}
    gaps = [input_gaps(p.read_bytes()) for p in heics[:GAP_PHOTOS]]
    for path in heics:
        data, jdata = path.read_bytes(), path.with_suffix(".jpg").read_bytes()
        probe = Image.open(io.BytesIO(data))
        used += probe.draft("RGB", (size, size)) is not None
        inputs["thumb"].append(decode_image(data, input_size=size).pixels)
        inputs["full"].append(decode_image(data, input_size=size, draft=False).pixels)
        inputs["jd"].append(decode_image(jdata, input_size=size).pixels)
        inputs["jf"].append(decode_image(jdata, input_size=size, draft=False).pixels)
    top = {k: top1(clf, v) for k, v in inputs.items()}
    own = [i for i, y in enumerate(labels) if y >= 0]

    def agree(a: str, b: str, which: list[int]) -> float:
        return sum(top[a][i] == top[b][i] for i in which) / len(which)

    every = list(range(len(heics)))
    return {
        "photos": len(heics),
        "own": len(own),
        "thumbnail_used": used,
        "arch": clf.checkpoint.arch,
        "input_size": size,
        "classes": len(index),
        "heic": agree("thumb", "full", every),
        "heic_own": agree("thumb", "full", own),
        "jpeg": agree("jd", "jf", every),
        "differ": [heics[i].name for i in every if top["thumb"][i] != top["full"][i]],
        "accuracy": {
            name: sum(top[k][i] == labels[i] for i in own) / len(own)
            for name, k in (
                ("HEIC thumbnail", "thumb"),
                ("HEIC full", "full"),
                ("JPEG 1/8", "jd"),
                ("JPEG full", "jf"),
            )
        },
        "gap": {side: statistics.mean(g[side] for g in gaps) for side in GAP_SIZES},
        "gap_photos": len(gaps),
    }


@dataclass(frozen=True, slots=True)
class WorkerRun:
    label: str
    model: str  # "bench": as make bench serves (ResNet50, 224 px); "trained": --trained
    suffix: str
    draft: bool
    title: str


DEFAULT = "the default"
WORKER_RUNS = (
    WorkerRun("jpeg", "bench", ".jpg", True, f"JPEG ({DEFAULT}: at 1/8 scale)"),
    WorkerRun("heic", "bench", ".heic", True, f"HEIC ({DEFAULT}: in full, thumbnail too small)"),
    WorkerRun("jpeg-small", "trained", ".jpg", True, f"JPEG ({DEFAULT}: at 1/8 scale)"),
    WorkerRun("heic-small", "trained", ".heic", True, f"HEIC ({DEFAULT}: from the thumbnail)"),
    WorkerRun("heic-small-full", "trained", ".heic", False, "HEIC in full (draft off)"),
)


def worker_runs(
    folder: Path, count: int, models: dict[str, Path], repeat: int, batch: int
) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    with LocalAWS(log_file=OUT / "moto-heic.log") as aws:
        aws.apply_env()
        s3, sqs = client("s3"), client("sqs")
        bootstrap(s3, sqs, buckets=("bench-input", "bench-results"))
        keys: dict[str, list[str]] = {}
        for suffix in {r.suffix for r in WORKER_RUNS}:
            keys[suffix] = []
            for path in files(folder, suffix, count):
                key = f"heic-bench/{suffix[1:]}/{path.name}"
                s3.put_object(Bucket="bench-input", Key=key, Body=path.read_bytes())
                keys[suffix].append(key)
        for rep in range(repeat):
            for r in WORKER_RUNS:
                if r.model not in models:
                    continue
                run = run_posefleet(
                    aws,
                    s3,
                    sqs,
                    keys[r.suffix],
                    models[r.model],
                    label=f"heic-{r.label}",
                    batch=batch,
                    draft=r.draft,
                    prefix=f"heic-bench/{r.suffix[1:]}/",
                )
                runs.setdefault(r.label, []).append(run)
                rate = len(keys[r.suffix]) / run["seconds"]
                print(f"[{rep + 1}/{repeat}] {r.label}: {rate:.2f} img/s", file=sys.stderr)
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
    trained = Path(args.trained) if Path(args.trained).exists() else None
    small = min(120, Classifier.from_file(trained, device="cpu").spec.input_size if trained else 96)
    if "decode" not in skip:
        costs = {w.title: measure(folder, w, args.sample, pool=False) for w in ways(size, small)}
        base_cpu = next(iter(costs.values()))[0]
        lines += [
            f"Decode cost per image, one at a time (`decode_image`, median of {args.sample} "
            f"photos, {args.avif} for AVIF; CPU time counts every thread):",
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
        rates = {
            w.title: measure(folder, w, args.images, pool=True)[0]
            for w in ways(size, small)
            if w.suffix != ".avif"
        }
        lines += [
            f"The decode stage alone, {available_cpus()} threads (one per CPU, as the worker's "
            f"decode pool) over {args.images} photos:",
            "",
            "| decode | images/s |",
            "| --- | ---: |",
            *(f"| {name} | {r:.1f} |" for name, r in rates.items()),
            "",
        ]
    if "agreement" not in skip:
        if trained:
            a = agreement(folder, args.photos, trained)
            lines += [
                f"Thumbnail against full decode on a trained model ({a['arch']}, "
                f"{a['input_size']} px, {a['classes']} poses; {a['photos']} phone photos it never "
                f"saw, {a['own']} of them of its own poses; the thumbnail used for "
                f"{a['thumbnail_used']}): top-1 agreement **{a['heic']:.2%}** over all, "
                f"**{a['heic_own']:.2%}** over its own poses (JPEG at 1/8 against full: "
                f"{a['jpeg']:.2%} over all)"
                + (f"; differ: {', '.join(a['differ'])}" if a["differ"] else "")
                + ". Accuracy on its own poses: "
                + ", ".join(f"{k} {v:.1%}" for k, v in a["accuracy"].items())
                + ". Mean absolute difference between the input made from the thumbnail and "
                f"the full decode's, in 8-bit levels, over {a['gap_photos']} photos, by input "
                "size: " + ", ".join(f"{k} px {v:.2f}" for k, v in a["gap"].items()) + ".",
                "",
            ]
        else:
            lines += [f"Agreement: not measured ({args.trained} missing: run `make demo`).", ""]
    if "worker" not in skip:
        models = {"bench": model} | ({"trained": trained} if trained else {})
        runs = worker_runs(folder, args.images, models, args.repeat, args.batch_size)
        rows = []
        count = args.images
        names = {
            "bench": f"{'ResNet50, untrained' if not args.model else model.name}, {size} px",
            "trained": f"{trained.name if trained else '-'}, {small} px",
        }
        for r in WORKER_RUNS:
            if r.label not in runs:
                continue
            times = sorted(x["seconds"] for x in runs[r.label])
            median = sorted(runs[r.label], key=lambda x: x["seconds"])[len(times) // 2]
            decode_ms = median["stage_ms"].get("decode", 0) / count
            rows.append(
                f"| {names[r.model]} | {r.title} | {count / median['seconds']:.2f} | "
                f"{count / times[-1]:.2f}-{count / times[0]:.2f} | {decode_ms:.0f} | "
                f"{median['peak_rss_mib']} MiB |"
            )
        lines += [
            f"One worker (`python -m worker`, batch {args.batch_size}) on {count} of these "
            f"photos, the whole job queued first (as `make bench`), median of {args.repeat} "
            "interleaved runs:",
            "",
            "| model | photos | images/s | range | decode ms per image (summed over threads) "
            "| peak RSS |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    section = "\n".join(lines).rstrip()
    print(section)
    if not args.no_doc:
        write_between(DOC, START, END, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
