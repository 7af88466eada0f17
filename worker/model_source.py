"""Where the model file comes from: a local path, or S3 cached on local disk. No torch here.

``settings.model`` may be

* a local file (a posefleet checkpoint, or the seed's ``.pth`` with ``class_mapping.json``
  beside it);
* ``s3://bucket/key.pt``: downloaded once into the cache directory (re-downloaded when its
  ETag changes), with a ``class_mapping.json`` beside it if one exists in S3;
* ``s3://bucket/.../current.json``: a pointer written by ``python -m training publish``,
  ``{"checkpoint": "s3://...", "sha256": "...", "version": "..."}``; the worker resolves it
  on start, so a new model is picked up by the next worker that starts.

With ``with_int8``, the int8 model beside the checkpoint (``model.int8.xml`` and ``.bin``,
``posefleet/int8.py``) is downloaded too, and must exist.

IAM: ``s3:GetObject`` on the models prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from posefleet.int8 import int8_paths

__all__ = ["ResolvedModel", "resolve_model"]


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    path: Path
    sha256: str | None  # from the pointer, if any


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise ValueError(f"model URI must look like s3://bucket/key, got {uri!r}")
    return bucket, key


def _download(s3: Any, uri: str, cache_dir: Path, *, required: bool = True) -> Path | None:
    bucket, key = _split(uri)
    target = cache_dir / bucket / key
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if not required and e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    etag_file = target.with_name(target.name + ".etag")
    if target.exists() and etag_file.exists() and etag_file.read_text() == head["ETag"]:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    s3.download_file(bucket, key, str(tmp))
    tmp.replace(target)
    etag_file.write_text(head["ETag"])
    return target


def resolve_model(
    location: str, *, s3: Any, cache_dir: Path, with_int8: bool = False
) -> ResolvedModel:
    if not location.startswith("s3://"):
        path = Path(location)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        return ResolvedModel(path=path, sha256=None)
    sha256 = None
    if location.endswith(".json"):
        bucket, key = _split(location)
        pointer = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        location, sha256 = pointer["checkpoint"], pointer.get("sha256")
    path = _download(s3, location, cache_dir)
    assert path is not None
    bucket, key = _split(location)
    folder = key.rpartition("/")[0]
    sidecar = f"{folder}/class_mapping.json" if folder else "class_mapping.json"
    _download(s3, f"s3://{bucket}/{sidecar}", cache_dir, required=False)  # the seed's format
    if with_int8:
        for companion in int8_paths(Path(key)):
            _download(s3, f"s3://{bucket}/{companion.as_posix()}", cache_dir)
    return ResolvedModel(path=path, sha256=sha256)
