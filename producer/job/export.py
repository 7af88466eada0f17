"""Reading a job's results back, at any job size: every line streamed, counted, and written
to CSV, JSON Lines or Parquet.

:func:`iter_results` streams: one lister thread feeds result keys through a bounded queue to a
bounded pool of GETs, read in order; at most ``threads * 4`` objects are in memory. Only keys
of the plan's tasks are read (a stale object of another plan is skipped; ``taskspace.py``), so
each image comes once without a set of every key. Parquet is written in row groups, and into
several part files under a directory (``--out DIR/``) that DuckDB, pandas or Athena read as one
dataset.

IAM: ``s3:ListBucket`` and ``s3:GetObject`` on the results prefix.
"""

from __future__ import annotations

import csv
import json
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from posefleet.result import ResultLine, load_lines

if TYPE_CHECKING:
    from producer.job import Job

__all__ = [
    "PART_ROWS",
    "READ_THREADS",
    "Summary",
    "counted",
    "export",
    "iter_results",
    "summarize",
    "write_parquet_parts",
]

READ_THREADS = 32  # result objects an export or a report reads at once


def iter_results(job: Job, *, threads: int = READ_THREADS) -> Iterator[ResultLine]:
    """Every result line of the job's finished tasks, in task order, streamed.

    One thread lists (into a bounded queue), ``threads`` GETs run at once, at most
    ``threads * 4`` objects are held; each image once, since only the plan's tasks are read."""
    space, location = job.space, job.location
    keys: queue.Queue[str | None] = queue.Queue(maxsize=threads * 8)
    stop = threading.Event()
    failure: list[BaseException] = []

    def lister() -> None:
        try:
            for page in job.result_keys():
                for key in page:
                    if space.task_of(location.task_id_of(job.job_id, key) or ""):
                        while not stop.is_set():
                            try:
                                keys.put(key, timeout=0.5)
                                break
                            except queue.Full:
                                continue
                        if stop.is_set():
                            return
        except BaseException as e:  # handed to the consumer, raised there
            failure.append(e)
        finally:
            while not stop.is_set():  # the end mark, unless the consumer has gone
                try:
                    keys.put(None, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def read(key: str) -> list[ResultLine]:
        return load_lines(job.s3.get_object(Bucket=location.bucket, Key=key)["Body"].read())

    listing = threading.Thread(target=lister, name="results-lister", daemon=True)
    listing.start()
    pending: deque[Future[list[ResultLine]]] = deque()
    try:
        with ThreadPoolExecutor(threads) as pool:
            ended = False
            while not ended or pending:
                while not ended and len(pending) < threads * 4:
                    key = keys.get()
                    if key is None:
                        ended = True
                        break
                    pending.append(pool.submit(read, key))
                if pending:
                    yield from pending.popleft().result()
    finally:
        stop.set()
        for f in pending:
            f.cancel()
    if failure:
        raise failure[0]


@dataclass(slots=True)
class Summary:
    images: int = 0
    ok: int = 0
    per_pose: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    confidence_bins: list[int] = field(default_factory=lambda: [0] * 10)  # [0, 0.1), ... [0.9, 1]

    def add(self, line: ResultLine) -> None:
        self.images += 1
        if line.status == "ok":
            self.ok += 1
            self.per_pose[line.predicted_class_name or str(line.predicted_class_id)] += 1
            self.confidence_bins[min(9, int((line.confidence or 0) * 10))] += 1
        else:
            self.errors[str(line.error_kind)] += 1

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
    """Counts only: the lines stream through, none is kept."""
    s = Summary()
    for line in lines:
        s.add(line)
    return s


def counted(lines: Iterable[ResultLine], summary: Summary) -> Iterator[ResultLine]:
    """``lines`` unchanged, each added to ``summary`` as it passes (one pass for both)."""
    for line in lines:
        summary.add(line)
        yield line


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


ROW_GROUP = 50_000  # rows buffered before a Parquet row group is written
PART_ROWS = 1_000_000  # rows per part file when exporting to a directory


def _arrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ValueError("Parquet export needs pyarrow: pip install 'posefleet[parquet]'") from e
    return pa, pq


def _schema(pa: Any) -> Any:
    ints = {"predicted_class_index", "width", "height"}
    return pa.schema(
        [
            (
                c,
                pa.int64() if c in ints else pa.float64() if c == "confidence" else pa.string(),
            )
            for c in CSV_COLUMNS
        ]
    )


def _row_groups(lines: Iterable[ResultLine], pa: Any, schema: Any) -> Iterator[Any]:
    rows: list[dict[str, Any]] = []
    for line in lines:
        rows.append(_row(line))
        if len(rows) == ROW_GROUP:
            yield pa.Table.from_pylist(rows, schema=schema)
            rows = []
    if rows:
        yield pa.Table.from_pylist(rows, schema=schema)


def write_parquet(lines: Iterable[ResultLine], path: Path) -> int:
    """One Parquet file, one row per image, the CSV's columns (probabilities as a JSON
    string), written in row groups of :data:`ROW_GROUP` rows (memory flat). Needs pyarrow."""
    pa, pq = _arrow()
    schema = _schema(pa)
    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        for table in _row_groups(lines, pa, schema):
            writer.write_table(table)
            n += table.num_rows
    return n


def write_parquet_parts(
    lines: Iterable[ResultLine],
    directory: Path,
    *,
    part_rows: int = PART_ROWS,
    on_part: Callable[[Path], None] | None = None,
) -> int:
    """``part-00000.parquet``, ``part-00001.parquet``... of at most ``part_rows`` rows each in
    ``directory``: one dataset for DuckDB (``'DIR/*.parquet'``), pandas or Athena.
    ``on_part(path)`` is called as each part is closed (to upload it, for example)."""
    pa, pq = _arrow()
    schema = _schema(pa)
    directory.mkdir(parents=True, exist_ok=True)
    n = part = in_part = 0
    writer = None
    path = directory / "part-00000.parquet"
    try:
        for table in _row_groups(lines, pa, schema):
            while table.num_rows:
                if writer is None:
                    path = directory / f"part-{part:05d}.parquet"
                    writer = pq.ParquetWriter(path, schema)
                take = min(table.num_rows, part_rows - in_part)
                writer.write_table(table.slice(0, take))
                table = table.slice(take)
                n += take
                in_part += take
                if in_part == part_rows:
                    writer.close()
                    writer = None
                    if on_part:
                        on_part(path)
                    part, in_part = part + 1, 0
        if writer is None and n == 0:
            writer = pq.ParquetWriter(path, schema)
    finally:
        if writer is not None:
            writer.close()
            if on_part:
                on_part(path)
    return n


def export(lines: Iterable[ResultLine], path: Path, fmt: str) -> int:
    """Write ``lines`` as csv, jsonl or parquet (one file); S3 destinations are uploaded by the
    caller. For parquet in parts, see :func:`write_parquet_parts`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        return write_parquet(lines, path)
    writers = {"csv": write_csv, "jsonl": write_jsonl}
    if fmt not in writers:
        raise ValueError(f"format must be one of csv, jsonl or parquet, got {fmt!r}")
    with path.open("w", newline="") as out:
        return writers[fmt](lines, out)
