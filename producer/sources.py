"""Where a job's keys come from, cut into partitions that listers read concurrently.

Three sources, one shape: :meth:`Source.roots` gives the first partitions, :meth:`Source.read`
streams one partition's image keys in a stable order, and a listing partition may hand the
rest of its range to children (:meth:`Source.children`).

* :class:`PrefixSource`, a prefix listed in parallel. A partition is a key range ``(lo, hi]``
  under the prefix (the root: the whole prefix). A lister reads a range's first page; if the
  page is full (the range holds more) and the range is shallower than ``split_depth``, the
  range stops at that page's last key ``L`` (its ``split_at``) and ``(L, hi]`` is cut into
  children at the first character position after the prefix where ``L`` can still grow: with
  ``L[j]`` a digit the cuts are ``L[:j] + "1"``... ``"9"`` and ``":"`` (past the digits), for a
  letter the rest of its case's alphabet, otherwise the next code point (:func:`split_points`).
  Before cutting, one probe (``StartAfter`` the first cut, ``MaxKeys=1``) asks whether any key
  lies past the first cut; while none does, the bound shrinks to that cut (``split_hi``) and
  the cut moves one character right, so a split is not wasted on keys that share a long
  prefix (``photos/u000000/...``): ``(L, split_hi]`` is cut, and ``(split_hi, hi]`` becomes
  one more child, listed too so that nothing is missed. The cuts and probes depend on the keys
  alone, so two runs over the same keys cut the same partitions whatever the timing; together
  the children cover ``(L, hi]`` exactly, so every key is listed once. A partition at
  ``split_depth`` (default 2: about a hundred partitions) is listed to its end, page after
  page; the bounds of each split are recorded in the plan, so a resumed submit cuts the same
  children without probing again.
* :class:`InventorySource`, an S3 Inventory report (``manifest.json``): one partition per data
  file (CSV, gzipped, keys URL-encoded; or Parquet, with pyarrow), filtered by prefix and
  extension; delete markers and non-current versions are left out.
* :class:`KeysSource`, a list of keys in a local file or an S3 object: one key a line, or the
  ``bucket,key[,version]`` CSV that S3 Batch Operations takes (keys URL-encoded), chosen by the
  file name (``.csv``) unless said otherwise. One partition.

IAM: ``s3:ListBucket`` on the input bucket (prefix); ``s3:GetObject`` on the inventory report
or the keys object.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote_plus

from posefleet.task import partition_id
from producer.listing import PAGE, image_extensions, is_image_key, list_range

__all__ = [
    "Partition",
    "Position",
    "PrefixSource",
    "Source",
    "SourceError",
    "make_source",
    "split_points",
]

BATCH = 1000  # keys handed to the planner at a time by file sources


class SourceError(ValueError):
    """A source that cannot be read as asked (bad manifest, mixed buckets, ...)."""


@dataclass(frozen=True, slots=True)
class Partition:
    """One unit of enumeration; ``id`` derives from its bounds (posefleet.task.partition_id)."""

    id: str
    lo: str | None = None
    hi: str | None = None
    depth: int = 0
    source: str | None = None


@dataclass(slots=True)
class Position:
    """Where reading a partition starts: after ``after_key`` (ranges) or after skipping
    ``skip_images`` image keys (files); ``split_at`` fixed by an earlier run, if any."""

    after_key: str | None = None
    skip_images: int = 0
    split_at: str | None = None
    split_hi: str | None = None
    resumed: bool = False


class Source(Protocol):
    bucket: str
    prefix: str
    description: str
    concurrency: int

    def roots(self) -> list[Partition]: ...

    def children(self, part: Partition, split_at: str, split_hi: str | None) -> list[Partition]: ...

    def read(
        self, part: Partition, at: Position, on_split: Callable[[str, str | None], None]
    ) -> Iterator[list[str]]: ...


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise SourceError(f"expected s3://bucket/key, got {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise SourceError(f"{uri!r} names no object; expected s3://bucket/key")
    return bucket, key


_CLASSES = ("0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def split_points(prefix: str, last: str, hi: str | None) -> list[str]:
    """Cut points for the range ``(last, hi]`` (see the module doc); empty if none exist."""
    for j in range(len(prefix), len(last)):
        base, c = last[:j], last[j]
        cls = next((chars for chars in _CLASSES if c in chars), None)
        if cls is not None:
            candidates = [base + x for x in cls if x > c] + [base + chr(ord(cls[-1]) + 1)]
        elif ord(c) < 0x10FFFF:
            following = ord(c) + 1
            candidates = [base + chr(0xE000 if 0xD800 <= following <= 0xDFFF else following)]
        else:
            continue
        points = [p for p in candidates if hi is None or p < hi]
        if points:
            return points
    return []


class PrefixSource:
    def __init__(
        self,
        s3: Any,
        *,
        bucket: str,
        prefix: str,
        extensions: Iterable[str],
        split_depth: int = 2,
        concurrency: int = 16,
        page_size: int = PAGE,
    ) -> None:
        if split_depth < 0:
            raise ValueError("split_depth must be 0 or more")
        self.page_size = page_size
        self.s3, self.bucket, self.prefix = s3, bucket, prefix
        self.extensions = image_extensions(extensions)
        self.split_depth, self.concurrency = split_depth, concurrency
        self.description = f"s3://{bucket}/{prefix}"

    def _partition(self, lo: str | None, hi: str | None, depth: int) -> Partition:
        return Partition(id=partition_id(lo, hi), lo=lo, hi=hi, depth=depth)

    def roots(self) -> list[Partition]:
        return [self._partition(None, None, 0)]

    def children(self, part: Partition, split_at: str, split_hi: str | None) -> list[Partition]:
        bounds = [split_at, *split_points(self.prefix, split_at, split_hi), split_hi]
        kids = [self._partition(lo, hi, part.depth + 1) for lo, hi in itertools.pairwise(bounds)]
        if split_hi != part.hi:  # found empty when split; listed anyway, so nothing is missed
            kids.append(self._partition(split_hi, part.hi, part.depth + 1))
        return kids

    def _first_after(self, key: str) -> str | None:
        page = self.s3.list_objects_v2(
            Bucket=self.bucket, Prefix=self.prefix, StartAfter=key, MaxKeys=1
        )
        contents = page.get("Contents")
        return contents[0]["Key"] if contents else None

    def _narrow(self, last: str, hi: str | None) -> str | None:
        """The upper bound to cut ``(last, hi]`` under: while nothing lies past the first cut
        point (one probe, MaxKeys=1), the range shrinks to it and the cut moves a character
        right, so every split has keys in more than one child."""
        while points := split_points(self.prefix, last, hi):
            beyond = self._first_after(points[0])
            if beyond is not None and (hi is None or beyond <= hi):
                return hi
            hi = points[0]
        return hi

    def read(
        self, part: Partition, at: Position, on_split: Callable[[str, str | None], None]
    ) -> Iterator[list[str]]:
        until = at.split_at if at.split_at is not None else part.hi
        first = not at.resumed
        for keys, more in list_range(
            self.s3,
            self.bucket,
            self.prefix,
            after=at.after_key or part.lo,
            until=until,
            page_size=self.page_size,
        ):
            splits = first and more and keys and part.depth < self.split_depth
            if splits and split_points(self.prefix, keys[-1], part.hi):
                on_split(keys[-1], self._narrow(keys[-1], part.hi))
                more = False
            first = False
            yield [k for k in keys if is_image_key(k, self.extensions)]
            if not more:
                return


def _image_filter(prefix: str, extensions: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda key: key.startswith(prefix) and is_image_key(key, extensions)


def _batched(keys: Iterator[str], skip: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in keys:
        if skip:
            skip -= 1
            continue
        batch.append(key)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() == "true"


class InventorySource:
    """S3 Inventory: ``manifest.json`` names its data files (``files[].key``), their format
    (``fileFormat``: CSV or Parquet; ORC is refused) and, for CSV, the columns
    (``fileSchema``, e.g. ``"Bucket, Key, Size, LastModifiedDate"``)."""

    def __init__(
        self,
        s3: Any,
        *,
        manifest_uri: str,
        prefix: str,
        extensions: Iterable[str],
        concurrency: int = 4,
    ) -> None:
        self.s3, self.prefix, self.concurrency = s3, prefix, concurrency
        self.report_bucket, key = parse_s3_uri(manifest_uri)
        self.description = f"inventory:{manifest_uri}"
        self._keep = _image_filter(prefix, image_extensions(extensions))
        raw = s3.get_object(Bucket=self.report_bucket, Key=key)["Body"].read()
        try:
            manifest = json.loads(raw)
            self.bucket = manifest["sourceBucket"]
            self.format = manifest["fileFormat"].upper()
            self.files = [f["key"] for f in manifest["files"]]
            self.schema = manifest.get("fileSchema", "")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SourceError(
                f"{manifest_uri} is not an S3 Inventory manifest.json (needs sourceBucket, "
                f"fileFormat, files[].key): {e}"
            ) from e
        if self.format not in ("CSV", "PARQUET"):
            raise SourceError(
                f"inventory format {self.format} is not supported; configure the inventory "
                "as CSV or Parquet"
            )
        if self.format == "CSV":
            self.columns = [c.strip() for c in self.schema.split(",")]
            if "Key" not in self.columns:
                raise SourceError(f"inventory fileSchema {self.schema!r} has no Key column")

    def roots(self) -> list[Partition]:
        return [Partition(id=partition_id(f), source=f) for f in self.files]

    def children(self, part: Partition, split_at: str, split_hi: str | None) -> list[Partition]:
        return []

    def _csv_keys(self, body: Any) -> Iterator[str]:
        col = self.columns.index
        key_at = col("Key")
        latest_at = col("IsLatest") if "IsLatest" in self.columns else None
        marker_at = col("IsDeleteMarker") if "IsDeleteMarker" in self.columns else None
        text = io.TextIOWrapper(gzip.GzipFile(fileobj=body), encoding="utf-8", newline="")
        for row in csv.reader(text):
            if len(row) <= key_at:
                continue
            if latest_at is not None and not _truthy(row[latest_at]):
                continue
            if marker_at is not None and _truthy(row[marker_at]):
                continue
            yield unquote_plus(row[key_at])

    def _parquet_keys(self, body: Any) -> Iterator[str]:
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise SourceError(
                "a Parquet inventory needs pyarrow: pip install 'posefleet[parquet]'"
            ) from e
        with tempfile.TemporaryFile() as tmp:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                tmp.write(chunk)
            tmp.seek(0)
            pf = pq.ParquetFile(tmp)
            names = set(pf.schema_arrow.names)
            if "key" not in names:
                raise SourceError(f"Parquet inventory file has no 'key' column: {sorted(names)}")
            columns = [c for c in ("key", "is_latest", "is_delete_marker") if c in names]
            for batch in pf.iter_batches(batch_size=BATCH, columns=columns):
                data = batch.to_pydict()
                latest = data.get("is_latest") or [True] * batch.num_rows
                marker = data.get("is_delete_marker") or [False] * batch.num_rows
                for key, is_latest, is_marker in zip(data["key"], latest, marker, strict=True):
                    if is_latest is not False and not is_marker:
                        yield key

    def read(
        self, part: Partition, at: Position, on_split: Callable[[str, str | None], None]
    ) -> Iterator[list[str]]:
        body = self.s3.get_object(Bucket=self.report_bucket, Key=part.source)["Body"]
        rows = self._csv_keys(body) if self.format == "CSV" else self._parquet_keys(body)
        yield from _batched((k for k in rows if self._keep(k)), at.skip_images)


class KeysSource:
    """A list of keys: a local path or ``s3://bucket/key``; ``csv`` (``bucket,key[,...]``,
    keys URL-encoded, as S3 Batch Operations takes) or ``lines`` (one raw key a line)."""

    def __init__(
        self,
        s3: Any,
        *,
        uri: str,
        bucket: str | None,
        prefix: str,
        extensions: Iterable[str],
        fmt: str | None = None,
    ) -> None:
        self.s3, self.uri, self.prefix, self.concurrency = s3, uri, prefix, 1
        self.format = fmt or ("csv" if uri.lower().endswith(".csv") else "lines")
        if self.format not in ("csv", "lines"):
            raise SourceError(f"keys format must be csv or lines, got {self.format!r}")
        self._keep = _image_filter(prefix, image_extensions(extensions))
        if not uri.startswith("s3://") and not Path(uri).is_file():
            raise SourceError(f"keys file {uri} does not exist")
        self.description = f"keys:{uri}"
        self.bucket = bucket or self._first_bucket()

    def _first_bucket(self) -> str:
        if self.format != "csv":
            raise SourceError("a keys file of one key a line needs --bucket")
        for bucket, _ in self._rows():
            return bucket
        raise SourceError(f"keys file {self.uri} is empty")

    def _lines(self) -> Iterator[str]:
        if self.uri.startswith("s3://"):
            bucket, key = parse_s3_uri(self.uri)
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
            with io.TextIOWrapper(io.BufferedReader(body), encoding="utf-8-sig", newline="") as t:
                yield from t
        else:
            with Path(self.uri).open(encoding="utf-8-sig", newline="") as t:
                yield from t

    def _rows(self) -> Iterator[tuple[str, str]]:
        if self.format == "lines":
            for line in self._lines():
                key = line.rstrip("\r\n")
                if key:
                    yield "", key
            return
        for n, row in enumerate(csv.reader(self._lines()), start=1):
            if not row or not any(row):
                continue
            if len(row) < 2:
                raise SourceError(f"{self.uri} line {n}: expected bucket,key, got {row!r}")
            yield row[0], unquote_plus(row[1])

    def _keys(self) -> Iterator[str]:
        for bucket, key in self._rows():
            if bucket and bucket != self.bucket:
                raise SourceError(
                    f"{self.uri} names bucket {bucket!r} besides {self.bucket!r}; "
                    "a job reads one bucket: split the file by bucket"
                )
            if self._keep(key):
                yield key

    def roots(self) -> list[Partition]:
        return [Partition(id=partition_id("keys"), source=self.uri)]

    def children(self, part: Partition, split_at: str, split_hi: str | None) -> list[Partition]:
        return []

    def read(
        self, part: Partition, at: Position, on_split: Callable[[str, str | None], None]
    ) -> Iterator[list[str]]:
        yield from _batched(self._keys(), at.skip_images)


def make_source(
    s3: Any,
    *,
    bucket: str | None,
    prefix: str,
    inventory: str | None,
    keys: str | None,
    keys_format: str | None,
    extensions: Iterable[str],
    list_concurrency: int,
    split_depth: int,
    page_size: int = PAGE,
) -> Source:
    """The source the submit flags name: ``--inventory``, ``--keys``, or the prefix."""
    if inventory and keys:
        raise SourceError("give --inventory or --keys, not both")
    if inventory:
        source: Source = InventorySource(
            s3, manifest_uri=inventory, prefix=prefix, extensions=extensions
        )
        if bucket and bucket != source.bucket:
            raise SourceError(
                f"the inventory lists bucket {source.bucket!r}, not --bucket {bucket!r}"
            )
        return source
    if keys:
        return KeysSource(
            s3, uri=keys, bucket=bucket, prefix=prefix, extensions=extensions, fmt=keys_format
        )
    if not bucket:
        raise SourceError("say what to enqueue: --bucket (and --prefix), --inventory or --keys")
    return PrefixSource(
        s3,
        bucket=bucket,
        prefix=prefix,
        extensions=extensions,
        split_depth=split_depth,
        concurrency=list_concurrency,
        page_size=page_size,
    )
