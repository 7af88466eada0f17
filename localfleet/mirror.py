"""The local fleet's buckets kept on disk, so that a restart finds what the last run left.

moto's server keeps everything in memory and has no persistence of its own (``moto_server``
has no such option), so the fleet copies its buckets into the state folder as they change and
puts them back when it starts::

    <state>/s3/<bucket>/<key>          one file per object, browsable
    <state>/s3/<bucket>.index.json     {key: {"file": ..., "etag": ..., "size": ...}}

A key that is not a safe relative path (``a//b``, ``..``, a trailing ``/``) is kept under
``_escaped/`` with its name percent-encoded; the index maps every key to its file exactly.
Queues are not kept: tasks still queued when the fleet stops are gone after a restart, and
``python -m producer ... --job-id <job> --skip-done`` sends what has no result yet.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["BucketMirror"]


def _relative_file(key: str) -> str:
    parts = key.split("/")
    if key.endswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == "_escaped":
        return "_escaped/" + urllib.parse.quote(key, safe="")
    return str(PurePosixPath(*parts))


class BucketMirror:
    """One bucket's copy in ``root``: :meth:`restore` uploads it, :meth:`sync` catches up with
    the bucket (new, changed and deleted objects), :meth:`record` notes an object the fleet
    put itself from a local file (hard-linked into the copy where the filesystem allows)."""

    def __init__(self, *, s3: Any, bucket: str, root: Path) -> None:
        if not bucket:
            raise ValueError("bucket must be a bucket name")
        self.s3 = s3
        self.bucket = bucket
        self.dir = Path(root) / bucket
        self.index_file = Path(root) / f"{bucket}.index.json"
        self.index: dict[str, dict[str, Any]] = (
            json.loads(self.index_file.read_text()) if self.index_file.exists() else {}
        )

    def _save_index(self) -> None:
        self.index_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.index_file.with_name(self.index_file.name + ".tmp")
        tmp.write_text(json.dumps(self.index, sort_keys=True))
        tmp.replace(self.index_file)

    def restore(self) -> int:
        """Upload every kept object whose file is still there; returns how many."""
        restored = 0
        for key, entry in list(self.index.items()):
            path = self.dir / entry["file"]
            if not path.is_file():
                del self.index[key]
                continue
            etag = self.s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())["ETag"]
            entry["etag"] = etag
            restored += 1
        self._save_index()
        return restored

    def record(self, key: str, source: Path, etag: str) -> None:
        """Keep ``source``, just put at ``key`` with ``etag``, without downloading it again."""
        target = self.dir / _relative_file(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        self.index[key] = {"file": _relative_file(key), "etag": etag, "size": source.stat().st_size}

    def flush(self) -> None:
        self._save_index()

    def sync(self) -> tuple[int, int]:
        """Download new and changed objects, forget deleted ones; returns (fetched, removed)."""
        seen: set[str] = set()
        fetched = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                key, etag = obj["Key"], obj["ETag"]
                seen.add(key)
                if self.index.get(key, {}).get("etag") == etag:
                    continue
                name = _relative_file(key)
                target = self.dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".part")
                self.s3.download_file(self.bucket, key, str(tmp))
                target.unlink(missing_ok=True)  # a hard link to a user's photo stays intact
                tmp.replace(target)
                self.index[key] = {"file": name, "etag": etag, "size": obj["Size"]}
                fetched += 1
        removed = 0
        for key in set(self.index) - seen:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / self.index.pop(key)["file"]).unlink()
            removed += 1
        if fetched or removed:
            self._save_index()
        return fetched, removed
