"""Where the model file comes from: a local path, or S3 cached on local disk. No torch here.

``settings.model`` may be

* a local file (a posefleet checkpoint, or the seed's ``.pth`` with ``class_mapping.json``
  beside it);
* ``s3://bucket/key.pt``: downloaded once into the cache directory (re-downloaded when its
  ETag changes), with a ``class_mapping.json`` beside it if one exists in S3. The deployment's
  settings name this file, so they are trusted as they are; pin its hash with
  ``POSEFLEET_MODEL_SHA256``;
* ``s3://bucket/.../current.json``: the pointer ``python -m training publish`` writes
  (posefleet/model_pointer.py, which says what a pointer may name). The worker resolves it when
  it starts, so a new model is picked up by the next worker that starts. Every file it fetches
  is one the pointer hashes, checked before use (a cached copy too, so the cache is keyed by
  content, not by ETag); where ``expected_sha256`` is given (``POSEFLEET_MODEL_SHA256``), a
  pointer that names another checkpoint is refused before anything is fetched.

With ``with_int8``, the int8 model beside the checkpoint (``model.int8.xml`` and ``.bin``,
``posefleet/int8.py``) is fetched too, and must exist (and, from a pointer, be hashed in it).

Refusals raise :class:`posefleet.model_pointer.ModelRefused`: the worker exits non-zero with
the reason rather than serve a model it cannot vouch for.

IAM: ``s3:GetObject`` on the models prefix (``s3:ListBucket`` so a missing key answers 404).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from posefleet.aws import is_not_found
from posefleet.checkpoint import SEED_MAPPING_FILE
from posefleet.int8 import int8_paths
from posefleet.model_pointer import ModelPointer, ModelRefused, check_pin, split_s3_uri

__all__ = ["ModelRefused", "ResolvedModel", "resolve_model"]

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    path: Path
    sha256: str | None  # the checkpoint's, from the pointer (or the pin), if any
    verified: tuple[str, ...] = field(default=())  # the files checked against the pointer


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download_beside(s3: Any, bucket: str, key: str, target: Path) -> Path:
    """``key`` downloaded to a file of this call's own beside ``target`` (the caller checks it
    and moves it into place): workers that share a cache directory, as the local fleet's do,
    each download their own copy, and the last rename wins with the same bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f"{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        s3.download_file(bucket, key, str(tmp))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _download(s3: Any, uri: str, cache_dir: Path, *, required: bool = True) -> Path | None:
    """A file the settings name directly, cached by ETag."""
    bucket, key = split_s3_uri(uri)
    target = cache_dir / bucket / key
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if not required and is_not_found(e):
            return None
        raise
    etag_file = target.with_name(target.name + ".etag")
    if target.exists() and etag_file.exists() and etag_file.read_text() == head["ETag"]:
        return target
    _download_beside(s3, bucket, key, target).replace(target)
    etag_file.write_text(head["ETag"])
    return target


def _fetch_verified(s3: Any, uri: str, sha256: str, cache_dir: Path) -> Path:
    """A file a pointer hashes: the cached copy if its bytes match, else downloaded and checked
    before it takes the cached copy's place."""
    bucket, key = split_s3_uri(uri)
    target = cache_dir / bucket / key
    if target.is_file() and _sha256(target) == sha256:
        return target
    tmp = _download_beside(s3, bucket, key, target)
    actual = _sha256(tmp)
    if actual != sha256:
        tmp.unlink()
        raise ModelRefused(
            f"{uri} has SHA-256 {actual}, but its pointer says {sha256}: it was changed after "
            "it was published"
        )
    tmp.replace(target)
    return target


def _from_pointer(
    location: str,
    *,
    s3: Any,
    cache_dir: Path,
    with_int8: bool,
    expected_sha256: str | None,
) -> ResolvedModel:
    bucket, key = split_s3_uri(location)
    pointer = ModelPointer.parse(
        s3.get_object(Bucket=bucket, Key=key)["Body"].read(), pointer_uri=location
    )
    check_pin(pointer.checkpoint_sha256, expected_sha256, where=location)
    wanted = [pointer.checkpoint]
    if SEED_MAPPING_FILE in pointer.files:  # the seed's format keeps its classes beside it
        wanted.append(SEED_MAPPING_FILE)
    if with_int8:
        names = [p.name for p in int8_paths(Path(pointer.checkpoint))]
        missing = [n for n in names if n not in pointer.files]
        if missing:
            raise ModelRefused(
                f"{location} hashes no int8 model ({', '.join(missing)}): quantize the "
                "checkpoint and publish it again (python -m training quantize, publish)"
            )
        wanted += names
    paths = {
        name: _fetch_verified(s3, pointer.uri(name), pointer.files[name], cache_dir)
        for name in wanted
    }
    return ResolvedModel(
        path=paths[pointer.checkpoint], sha256=pointer.checkpoint_sha256, verified=tuple(wanted)
    )


def resolve_model(
    location: str,
    *,
    s3: Any,
    cache_dir: Path,
    with_int8: bool = False,
    expected_sha256: str | None = None,
) -> ResolvedModel:
    """The local path of the model ``location`` names; ``expected_sha256`` is the deployment's
    pin (``POSEFLEET_MODEL_SHA256``), checked against a pointer before anything is fetched and
    against the checkpoint's bytes when it loads."""
    if "://" not in location:
        path = Path(location)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        return ResolvedModel(path=path, sha256=expected_sha256)
    if location.endswith(".json"):
        pin = expected_sha256
        return _from_pointer(
            location, s3=s3, cache_dir=cache_dir, with_int8=with_int8, expected_sha256=pin
        )
    path = _download(s3, location, cache_dir)
    assert path is not None
    bucket, key = split_s3_uri(location)
    folder = key.rpartition("/")[0]
    sidecar = f"{folder}/{SEED_MAPPING_FILE}" if folder else SEED_MAPPING_FILE
    _download(s3, f"s3://{bucket}/{sidecar}", cache_dir, required=False)  # the seed's format
    if with_int8:
        for companion in int8_paths(Path(key)):
            _download(s3, f"s3://{bucket}/{companion.as_posix()}", cache_dir)
    return ResolvedModel(path=path, sha256=expected_sha256)
