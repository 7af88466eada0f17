"""Reading a job's results back: progress, merged lines, summary, export to CSV, JSON Lines or
Parquet, at any job size.

**Progress.** A job's task ids sort by partition, then by index within the partition
(``posefleet.layout``), so the results listing ``tasks/`` is the plan's task space in order and
a position in it can be listed directly with ``StartAfter``. A job of at most
:data:`EXACT_TASKS` tasks is counted exactly (every result key, at most a few LIST calls). A
larger one is *sampled*: :data:`WINDOWS` windows of at most 1,000 consecutive tasks, one per
equal stratum of the task space at a random offset, are listed concurrently (one LIST each),
and the fraction of their tasks that have a result estimates the job's. That is a stratified
sample: unbiased, and within one stratum's share (1/WINDOWS of the job) of the truth however the
finished tasks cluster. :func:`count_done` gives the exact figure with a parallel listing over
key ranges (a thread pool, counts only, flat memory); ``status --exact`` and a live view that
says "done" use it.

**Export.** :func:`iter_results` streams: one lister thread feeds result keys through a bounded
queue to a bounded pool of GETs, read in order; at most ``threads * 4`` objects are in memory.
Only keys of the plan's tasks are read (a stale object of another plan is skipped), so each
image comes once without a set of every key. Parquet is written in row groups, and into several
part files under a directory (``--out DIR/``) that DuckDB, pandas or Athena read as one dataset.

IAM: ``s3:ListBucket`` and ``s3:GetObject`` on the results prefix.
"""

from __future__ import annotations

import bisect
import csv
import json
import queue
import random
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from posefleet.layout import Manifest, ResultsLocation
from posefleet.result import ResultLine, load_lines
from posefleet.task import split_task_id, task_id_position
from producer.listing import list_range
from producer.plan import read_partitions

__all__ = [
    "CSV_COLUMNS",
    "EXACT_TASKS",
    "WINDOWS",
    "JobNotFound",
    "JobProgress",
    "Segment",
    "Summary",
    "TaskSpace",
    "count_done",
    "export",
    "iter_results",
    "read_manifest",
    "read_progress",
    "summarize",
    "write_csv",
    "write_jsonl",
    "write_parquet",
]

EXACT_TASKS = 5000  # jobs of at most this many tasks are counted exactly (<= 5 LIST calls)
WINDOWS = 10  # sampled windows (one LIST call each) for the live view of a larger job
PAGE = 1000
READ_THREADS = 32  # result objects an export or a report reads at once
MIN_FAILURE_BASIS = 10  # images read before a failed count is extrapolated from them


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


# -- the plan's task space -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """One partition's tasks: ids from ``make_task_id(index, keys, partition)``, ``index`` in
    ``range(tasks)``; each holds ``task_size`` images but the last, which holds the rest."""

    partition: str | None  # None for ids made without a partition (version 1)
    tasks: int
    images: int
    task_size: int

    def start_after(self, index: int) -> str:
        """A listing position just before task ``index``'s result key (relative to tasks/)."""
        return task_id_position(index, self.partition)

    def images_of(self, index: int) -> int:
        return self.task_size if index < self.tasks - 1 else self.images - self.task_size * index


class TaskSpace:
    """The tasks of a planned job in result-key order: partitions (segments) by id, tasks by
    index. Built from the manifest and ``plan/partitions.jsonl.gz`` (version 2) or from the
    manifest's task ids (version 1); holds one small record per partition, never per task."""

    def __init__(self, segments: Iterable[Segment], *, v1_ids: frozenset[str] | None = None):
        self.segments = sorted(
            (s for s in segments if s.tasks > 0), key=lambda s: s.partition or ""
        )
        self.by_partition = {s.partition: s for s in self.segments}
        self.starts: list[int] = []
        total = 0
        for s in self.segments:
            self.starts.append(total)
            total += s.tasks
        self.tasks = total
        self.offsets = {
            s.partition: start for s, start in zip(self.segments, self.starts, strict=True)
        }
        self.images = sum(s.images for s in self.segments)
        self.v1_ids = v1_ids

    @classmethod
    def of(cls, s3: Any, location: ResultsLocation, manifest: Manifest) -> TaskSpace:
        if manifest.task_ids is not None:  # version 1: the ids are in the manifest
            ids = manifest.task_ids
            seg = Segment(
                partition=None, tasks=len(ids), images=manifest.images, task_size=manifest.task_size
            )
            return cls([seg], v1_ids=frozenset(ids))
        if not manifest.complete:
            raise ValueError(
                f"job {manifest.job_id} is still being submitted (its plan is not complete)"
            )
        return cls(
            Segment(p.partition or None, p.tasks, p.images, manifest.task_size)
            for p in read_partitions(s3, location, manifest.job_id)
        )

    def locate(self, position: int) -> tuple[Segment, int]:
        """The segment and index of the task at ``position`` in ``range(self.tasks)``."""
        i = bisect.bisect_right(self.starts, position) - 1
        return self.segments[i], position - self.starts[i]

    def position(self, seg: Segment, index: int) -> int:
        return self.offsets[seg.partition] + index

    def images_at(self, position: int) -> int:
        seg, index = self.locate(position)
        return seg.images_of(index)

    def task_of(self, task_id: str) -> tuple[Segment, int] | None:
        """``(segment, index)`` of one of the plan's task ids; None for any other id."""
        if self.v1_ids is not None and task_id not in self.v1_ids:
            return None
        try:
            partition, index = split_task_id(task_id)
        except ValueError:
            return None
        seg = self.by_partition.get(partition)
        return (seg, index) if seg is not None and index < seg.tasks else None

    def boundaries(self, parts: int) -> list[str]:
        """``parts + 1`` listing positions (relative to tasks/) cutting the space into ranges of
        about equal task counts; the last is None-like (the end), given as ``"\\U0010ffff"``."""
        cuts = sorted({self.tasks * i // parts for i in range(parts)})
        out = []
        for c in cuts:
            seg, index = self.locate(c)
            out.append(seg.start_after(index))
        return [*out, "\U0010ffff"]


# -- progress ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobProgress:
    job_id: str
    tasks_total: int
    tasks_done: int
    images_total: int
    images_done: int
    done_ids: frozenset[str] = frozenset()  # exact small jobs only
    exact: bool = True
    sampled_tasks: int = 0  # tasks looked at by the sample (estimates only)
    done_keys: tuple[str, ...] = ()  # result keys seen in the sample, for failure sampling
    calls: int = 0  # S3 calls this reading took (manifest and plan index not counted)

    @property
    def tasks_remaining(self) -> int:
        return self.tasks_total - self.tasks_done

    @property
    def complete(self) -> bool:
        """Every task has a result, by an exact count (an estimate never completes a job)."""
        return self.exact and self.tasks_done >= self.tasks_total

    @property
    def looks_done(self) -> bool:
        return self.tasks_done >= self.tasks_total


def _result_keys(
    s3: Any, location: ResultsLocation, job_id: str, *, after: str | None, until: str | None
) -> Iterator[list[str]]:
    head = location.tasks_prefix(job_id)
    for keys, _ in list_range(
        s3,
        location.bucket,
        head,
        after=head + after if after else None,
        until=head + until if until else None,
    ):
        yield keys


def count_done(
    s3: Any, location: ResultsLocation, job_id: str, space: TaskSpace, *, threads: int = 32
) -> tuple[int, int, int]:
    """Exact ``(tasks_done, images_done, calls)``: the results listed in parallel over key
    ranges of about equal task counts, counted as they stream (memory flat)."""
    parts = max(1, min(threads * 4, -(-space.tasks // (PAGE * 8))))
    cuts = space.boundaries(parts)

    def one(i: int) -> tuple[int, int, int]:
        tasks = images = calls = 0
        until = None if i + 1 == len(cuts) - 1 else cuts[i + 1]
        for keys in _result_keys(s3, location, job_id, after=cuts[i], until=until):
            calls += 1
            for key in keys:
                found = space.task_of(location.task_id_of(job_id, key) or "")
                if found:
                    tasks += 1
                    images += found[0].images_of(found[1])
        return tasks, images, calls

    with ThreadPoolExecutor(min(threads, len(cuts) - 1)) as pool:
        counted = list(pool.map(one, range(len(cuts) - 1)))
    return tuple(sum(c[i] for c in counted) for i in range(3))  # type: ignore[return-value]


def _exact_small(
    s3: Any, location: ResultsLocation, manifest: Manifest, space: TaskSpace
) -> JobProgress:
    done: set[str] = set()
    images = calls = 0
    for keys in _result_keys(s3, location, manifest.job_id, after=None, until=None):
        calls += 1
        for key in keys:
            task_id = location.task_id_of(manifest.job_id, key)
            found = space.task_of(task_id or "")
            if found and task_id not in done:
                done.add(task_id)  # type: ignore[arg-type]
                images += found[0].images_of(found[1])
    return JobProgress(
        job_id=manifest.job_id,
        tasks_total=space.tasks,
        tasks_done=len(done),
        images_total=space.images,
        images_done=images,
        done_ids=frozenset(done),
        calls=calls,
    )


def _sampled(
    s3: Any,
    location: ResultsLocation,
    manifest: Manifest,
    space: TaskSpace,
    *,
    windows: int,
    rng: random.Random,
) -> JobProgress:
    head = location.tasks_prefix(manifest.job_id)
    stratum = space.tasks / windows

    def window(j: int) -> tuple[int, int, int, int, list[str]]:
        # positions [start, start + width) of the task space, across partitions if need be:
        # at most `width` results lie there, so one page of `width` keys holds them all
        width = min(PAGE, max(1, int(stratum)))
        start = min(int((j + rng.random()) * stratum), space.tasks - width)
        seg, index = space.locate(start)
        page = s3.list_objects_v2(
            Bucket=location.bucket,
            Prefix=head,
            StartAfter=head + seg.start_after(index),
            MaxKeys=width,
        )
        in_window = sum(space.images_at(p) for p in range(start, start + width))
        done = done_images = 0
        keys = []
        for obj in page.get("Contents", ()):
            found = space.task_of(location.task_id_of(manifest.job_id, obj["Key"]) or "")
            if found and start <= space.position(*found) < start + width:
                done += 1
                done_images += found[0].images_of(found[1])
                keys.append(obj["Key"])
        return width, done, in_window, done_images, keys

    with ThreadPoolExecutor(windows) as pool:
        got = list(pool.map(window, range(windows)))
    looked = sum(g[0] for g in got)
    done = sum(g[1] for g in got)
    images_looked = sum(g[2] for g in got) or 1
    images_done = sum(g[3] for g in got)
    tasks_done = round(space.tasks * done / looked) if looked else 0
    if done < looked:  # a task seen missing: the estimate must not say "all done"
        tasks_done = min(tasks_done, space.tasks - 1)
    return JobProgress(
        job_id=manifest.job_id,
        tasks_total=space.tasks,
        tasks_done=tasks_done,
        images_total=space.images,
        images_done=min(space.images, round(space.images * images_done / images_looked)),
        exact=False,
        sampled_tasks=looked,
        done_keys=tuple(k for g in got for k in g[4]),
        calls=windows,
    )


def read_progress(
    s3: Any,
    location: ResultsLocation,
    manifest: Manifest,
    *,
    space: TaskSpace | None = None,
    exact: bool = False,
    windows: int = WINDOWS,
    rng: random.Random | None = None,
) -> JobProgress:
    """The job's progress: exact for a job of at most :data:`EXACT_TASKS` tasks or when
    ``exact``, else estimated from ``windows`` sampled LIST calls (see the module doc)."""
    space = space or TaskSpace.of(s3, location, manifest)
    if space.tasks <= EXACT_TASKS:
        return _exact_small(s3, location, manifest, space)
    if exact:
        tasks, images, calls = count_done(s3, location, manifest.job_id, space)
        return JobProgress(
            job_id=manifest.job_id,
            tasks_total=space.tasks,
            tasks_done=tasks,
            images_total=space.images,
            images_done=images,
            calls=calls,
        )
    return _sampled(s3, location, manifest, space, windows=windows, rng=rng or random.Random())


class FailureSample:
    """Failed images among the finished tasks, from their result objects.

    Exact while every finished task can be read once (small jobs: :meth:`exact_count`);
    otherwise a few finished tasks' objects are read per poll (:meth:`sample`), accumulated
    across polls, and :meth:`estimate` is their error rate times the images done."""

    def __init__(
        self, s3: Any, location: ResultsLocation, job_id: str, *, per_poll: int = 4
    ) -> None:
        self.s3, self.location, self.job_id, self.per_poll = s3, location, job_id, per_poll
        self.read: dict[str, tuple[int, int]] = {}  # result key -> (images, errors)

    def _read(self, key: str) -> None:
        body = self.s3.get_object(Bucket=self.location.bucket, Key=key)["Body"].read()
        lines = load_lines(body)
        self.read[key] = (len(lines), sum(1 for line in lines if line.status == "error"))

    def exact_count(self, done_ids: Iterable[str]) -> int:
        """Failed images of these finished tasks, each task's object read once ever."""
        keys = [self.location.task_key(self.job_id, t) for t in done_ids]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self._read, [k for k in keys if k not in self.read]))
        return sum(self.read[k][1] for k in keys)

    def sample(self, done_keys: Iterable[str], rng: random.Random | None = None) -> None:
        """Read up to ``per_poll`` finished tasks' objects not read before."""
        unseen = sorted(set(done_keys) - self.read.keys())
        chosen = (rng or random.Random()).sample(unseen, min(self.per_poll, len(unseen)))
        if chosen:
            with ThreadPoolExecutor(len(chosen)) as pool:
                list(pool.map(self._read, chosen))

    def estimate(self, images_done: int) -> int | None:
        """None until :data:`MIN_FAILURE_BASIS` images have been read: a rate from a handful
        of images (one-image tasks) would say more than it knows."""
        images = self.sampled_images
        if images < MIN_FAILURE_BASIS:
            return None
        errors = sum(e for _, e in self.read.values())
        return round(images_done * errors / images)

    @property
    def sampled_images(self) -> int:
        return sum(n for n, _ in self.read.values())


# -- reading every line ---------------------------------------------------------------------------


def iter_results(
    s3: Any,
    location: ResultsLocation,
    job_id: str,
    *,
    manifest: Manifest | None = None,
    threads: int = READ_THREADS,
) -> Iterator[ResultLine]:
    """Every result line of the job's finished tasks, in task order, streamed.

    One thread lists (into a bounded queue), ``threads`` GETs run at once, at most
    ``threads * 4`` objects are held; each image once, since only the plan's tasks are read."""
    manifest = manifest or read_manifest(s3, location, job_id)
    space = TaskSpace.of(s3, location, manifest)
    keys: queue.Queue[str | None] = queue.Queue(maxsize=threads * 8)
    stop = threading.Event()
    failure: list[BaseException] = []

    def lister() -> None:
        try:
            for page in _result_keys(s3, location, job_id, after=None, until=None):
                for key in page:
                    if space.task_of(location.task_id_of(job_id, key) or ""):
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
        return load_lines(s3.get_object(Bucket=location.bucket, Key=key)["Body"].read())

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
