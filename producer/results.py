"""Reading a job's results back: progress, merged lines, summary, export to CSV or JSON Lines.

IAM: ``s3:ListBucket`` and ``s3:GetObject`` on the results prefix.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from posefleet.layout import Manifest, ResultsLocation
from posefleet.result import ResultLine, load_lines
from producer.jobs import done_task_ids

__all__ = [
    "CSV_COLUMNS",
    "JobProgress",
    "Summary",
    "iter_results",
    "read_manifest",
    "read_progress",
    "summarize",
    "write_csv",
    "write_jsonl",
    "write_parquet",
]


class JobNotFound(LookupError):
    pass


def read_manifest(s3: Any, location: ResultsLocation, job_id: str) -> Manifest:
    try:
        body = s3.get_object(Bucket=location.bucket, Key=location.manifest_key(job_id))[
            "Body"
        ].read()
    except s3.exceptions.NoSuchKey:
        raise JobNotFound(f"no job {job_id!r} under {location.uri} (no manifest.json)") from None
    return Manifest.model_validate_json(body)


@dataclass(frozen=True, slots=True)
class JobProgress:
    job_id: str
    tasks_total: int
    tasks_done: int
    images_total: int
    images_done: int
    done_ids: frozenset[str] = frozenset()

    @property
    def tasks_remaining(self) -> int:
        return self.tasks_total - self.tasks_done

    @property
    def complete(self) -> bool:
        return self.tasks_done >= self.tasks_total


def read_progress(s3: Any, location: ResultsLocation, manifest: Manifest) -> JobProgress:
    done = done_task_ids(s3, location, manifest.job_id)
    sizes = [manifest.task_size] * manifest.tasks
    if sizes:
        sizes[-1] = manifest.images - manifest.task_size * (manifest.tasks - 1)
    images_done = sum(
        n for task_id, n in zip(manifest.task_ids, sizes, strict=True) if task_id in done
    )
    return JobProgress(
        job_id=manifest.job_id,
        tasks_total=manifest.tasks,
        tasks_done=len(done & set(manifest.task_ids)),
        images_total=manifest.images,
        images_done=images_done,
        done_ids=frozenset(done & set(manifest.task_ids)),
    )


def iter_results(
    s3: Any, location: ResultsLocation, job_id: str, *, threads: int = 16
) -> Iterator[ResultLine]:
    """Every result line of the job, each image once, in task order."""
    keys = [location.task_key(job_id, t) for t in sorted(done_task_ids(s3, location, job_id))]

    def read(key: str) -> list[ResultLine]:
        return load_lines(s3.get_object(Bucket=location.bucket, Key=key)["Body"].read())

    seen: set[tuple[str, str]] = set()
    with ThreadPoolExecutor(threads) as pool:
        for lines in pool.map(read, keys):
            for line in lines:
                if (line.bucket, line.key) not in seen:
                    seen.add((line.bucket, line.key))
                    yield line


@dataclass(slots=True)
class Summary:
    images: int = 0
    ok: int = 0
    per_pose: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    confidence_bins: list[int] = field(default_factory=lambda: [0] * 10)  # [0, 0.1), ... [0.9, 1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "ok": self.ok,
            "errors": sum(self.errors.values()),
            "per_pose": dict(self.per_pose.most_common()),
            "error_kinds": dict(self.errors.most_common()),
            "confidence_histogram": self.confidence_bins,
        }


def summarize(lines: Iterable[ResultLine]) -> Summary:
    s = Summary()
    for line in lines:
        s.images += 1
        if line.status == "ok":
            s.ok += 1
            s.per_pose[line.predicted_class_name or str(line.predicted_class_id)] += 1
            s.confidence_bins[min(9, int((line.confidence or 0) * 10))] += 1
        else:
            s.errors[str(line.error_kind)] += 1
    return s


# The result line's fields, with original_size split into width and height.
CSV_COLUMNS = tuple(
    c
    for f in ResultLine.model_fields
    for c in (("width", "height") if f == "original_size" else (f,))
)


def _row(line: ResultLine) -> dict[str, Any]:
    d = line.model_dump(mode="json", exclude_none=True)
    size = d.pop("original_size", None)
    if size:
        d["width"], d["height"] = size
    if "all_probabilities" in d:
        d["all_probabilities"] = json.dumps(d["all_probabilities"], separators=(",", ":"))
    return d


def write_csv(lines: Iterable[ResultLine], out: IO[str]) -> int:
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="raise")
    writer.writeheader()
    n = 0
    for line in lines:
        writer.writerow(_row(line))
        n += 1
    return n


def write_jsonl(lines: Iterable[ResultLine], out: IO[str]) -> int:
    n = 0
    for line in lines:
        out.write(line.to_json() + "\n")
        n += 1
    return n


def write_parquet(lines: Iterable[ResultLine], path: Path) -> int:
    """One row per image, the CSV's columns (probabilities as a JSON string). Needs pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ValueError("Parquet export needs pyarrow: pip install 'posefleet[parquet]'") from e
    rows = [_row(line) for line in lines]
    columns = {c: [r.get(c) for r in rows] for c in CSV_COLUMNS}
    pq.write_table(pa.table(columns), path)
    return len(rows)


def export(lines: Iterable[ResultLine], path: Path, fmt: str) -> int:
    """Write ``lines`` as csv, jsonl or parquet; S3 destinations are uploaded by the caller."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        return write_parquet(lines, path)
    writers = {"csv": write_csv, "jsonl": write_jsonl}
    if fmt not in writers:
        raise ValueError(f"format must be one of csv, jsonl or parquet, got {fmt!r}")
    with path.open("w", newline="") as out:
        return writers[fmt](lines, out)
