"""The model pointer: the one definition of ``current.json`` and of what a worker may trust in it.

``python -m training publish`` (training/publish.py) writes it beside the versions it publishes;
the worker (worker/model_source.py) reads it when it starts::

    s3://<models>/pose_classifier/current.json
    {"format": 2,
     "checkpoint": "s3://<models>/pose_classifier/<version>/model.pt",
     "sha256": "<SHA-256 of model.pt>", "version": "<version>", "accuracy": 0.97,
     "files": {"model.pt": "<sha256>", "class_mapping.json": "<sha256>",
               "model.int8.xml": "<sha256>", "model.int8.bin": "<sha256>"}}

The model is code (a pickle, however restricted) and every result depends on it, so a pointer is
refused (:class:`ModelRefused`) unless

* its checkpoint is an ``s3://`` object in the pointer's own bucket, under the pointer's own
  prefix (the models prefix: ``pose_classifier/``), with no ``.`` or ``..`` path segment: not
  another bucket (the input buckets hold untrusted uploads), not an absolute URL;
* every file it names is a plain file name beside the checkpoint with a SHA-256, the checkpoint's
  among them; the worker fetches nothing the pointer does not hash, and checks each file against
  its hash before use;
* where the stack pins the checkpoint's hash (``POSEFLEET_MODEL_SHA256``, set by the stack's
  ``posefleet:modelSha256``), the pointer names that hash.

A format-1 pointer (``checkpoint``, ``sha256``, ``version``) hashes its checkpoint alone: it is
still served, and any side file it would need (the seed's ``class_mapping.json``, the int8 model)
is refused until the model is published again. No torch and no boto3 here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MODELS_PREFIX",
    "POINTER_NAME",
    "ModelPointer",
    "ModelRefused",
    "check_pin",
    "is_sha256",
    "split_s3_uri",
]

MODELS_PREFIX = "pose_classifier"  # where publish writes, under the models location
POINTER_NAME = "current.json"
FORMAT = 2
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelRefused(ValueError):
    """A pointer, or a file it names, that a worker must not serve; the message says why."""


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); refuses any other scheme, an empty part, and a key
    with an empty, ``.`` or ``..`` segment (S3 keys are not paths, but a cache on disk is)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme != "s3":
        raise ModelRefused(f"{uri!r} is not an s3:// URI: a model is only read from S3")
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ModelRefused(f"{uri!r} must look like s3://bucket/key")
    if "\\" in key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ModelRefused(f"{uri!r} has an empty, '.' or '..' path segment")
    return bucket, key


def check_pin(sha256: str, pinned: str | None, *, where: str) -> None:
    """Refuse a checkpoint whose hash is not the one the stack pins (when it pins one)."""
    if pinned is not None and sha256.lower() != pinned.strip().lower():
        raise ModelRefused(
            f"{where} names checkpoint SHA-256 {sha256}, but this deployment pins {pinned} "
            "(POSEFLEET_MODEL_SHA256, posefleet:modelSha256): publish the pinned model again, "
            "or set the pin to the new model's hash and deploy"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPointer:
    bucket: str
    folder: str  # the checkpoint's folder: <models prefix>/<version>
    checkpoint: str  # the checkpoint's file name in that folder
    files: Mapping[str, str] = field(default_factory=dict)  # file name -> SHA-256, checkpoint too
    version: str
    accuracy: float | None = None

    @property
    def checkpoint_uri(self) -> str:
        return self.uri(self.checkpoint)

    @property
    def checkpoint_sha256(self) -> str:
        return self.files[self.checkpoint]

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.folder}/{name}"

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "checkpoint": self.checkpoint_uri,
                "sha256": self.checkpoint_sha256,  # what a format-1 reader checks
                "version": self.version,
                **({"accuracy": self.accuracy} if self.accuracy is not None else {}),
                "files": dict(sorted(self.files.items())),
            },
            indent=2,
        ).encode()

    @classmethod
    def parse(cls, raw: bytes, *, pointer_uri: str) -> ModelPointer:
        """Read a pointer fetched from ``pointer_uri`` and check what it may name."""
        pointer_bucket, pointer_key = split_s3_uri(pointer_uri)
        prefix = pointer_key.rpartition("/")[0]
        try:
            body: Any = json.loads(raw)
        except ValueError as e:
            raise ModelRefused(f"{pointer_uri} is not JSON: {e}") from None
        if not isinstance(body, dict) or not isinstance(body.get("checkpoint"), str):
            raise ModelRefused(f"{pointer_uri} names no checkpoint")
        bucket, key = split_s3_uri(body["checkpoint"])
        if bucket != pointer_bucket:
            raise ModelRefused(
                f"{pointer_uri} names {body['checkpoint']}, in bucket {bucket!r}: a pointer may "
                f"name only objects in its own bucket ({pointer_bucket!r})"
            )
        folder, _, checkpoint = key.rpartition("/")
        if prefix and not (folder == prefix or folder.startswith(f"{prefix}/")):
            raise ModelRefused(
                f"{pointer_uri} names {body['checkpoint']}, outside the models prefix "
                f"{prefix}/: a pointer may name only objects under it"
            )
        sha256 = body.get("sha256")
        if not is_sha256(sha256):
            raise ModelRefused(f"{pointer_uri} has no SHA-256 (64 hex digits) for its checkpoint")
        files = body.get("files", {checkpoint: sha256})
        if not isinstance(files, dict):
            raise ModelRefused(f"{pointer_uri}: 'files' must map file names to SHA-256s")
        for name, digest in files.items():
            if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
                raise ModelRefused(
                    f"{pointer_uri} names file {name!r}: only plain names beside the checkpoint"
                )
            if not is_sha256(digest):
                raise ModelRefused(f"{pointer_uri} has no valid SHA-256 for {name!r}")
        if files.get(checkpoint) != sha256:
            raise ModelRefused(
                f"{pointer_uri}: the checkpoint's SHA-256 in 'files' is not its 'sha256'"
            )
        accuracy = body.get("accuracy")
        return cls(
            bucket=bucket,
            folder=folder,
            checkpoint=checkpoint,
            files=dict(files),
            version=str(body.get("version", "")),
            accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
        )
