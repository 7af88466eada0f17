"""Publishing a checkpoint to the models location, behind a quality gate.

    s3://<models>/pose_classifier/<version>/model.pt
    s3://<models>/pose_classifier/<version>/model.card.json
    s3://<models>/pose_classifier/<version>/model.int8.xml, .bin   (if quantized, posefleet/int8.py)
    s3://<models>/pose_classifier/<version>/class_mapping.json     (the seed's format only)
    s3://<models>/pose_classifier/current.json      the pointer: posefleet/model_pointer.py

The pointer hashes every file the worker may fetch (the checkpoint, its class mapping, the int8
model); workers check each before use and pick up ``current.json`` when they start. A model is
published only if its validation accuracy meets ``min_accuracy`` and is not worse than the
current model's, unless forced.

IAM: ``s3:GetObject`` and ``s3:PutObject`` on the models prefix. On AWS the models bucket's
policy lets only the stack's publisher role (output ``publisher_role``) and the deploying user
write there (docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from posefleet.aws import is_not_found
from posefleet.checkpoint import SEED_MAPPING_FILE
from posefleet.int8 import int8_paths
from posefleet.model_pointer import (
    MODELS_PREFIX,
    POINTER_NAME,
    ModelPointer,
    ModelRefused,
    split_s3_uri,
)
from training.card import ModelCard, card_path

__all__ = ["PublishRefused", "Published", "publish", "upload_model"]

PREFIX = MODELS_PREFIX


class PublishRefused(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Published:
    version: str
    checkpoint_uri: str
    pointer_uri: str
    previous_accuracy: float | None


def _split(uri: str) -> tuple[str, str]:
    """``s3://bucket[/root]`` -> (bucket, root); the same checks as a pointer's files."""
    if not uri.startswith("s3://"):
        raise ModelRefused(f"--models must be an s3:// location, got {uri!r}")
    if uri.rstrip("/").count("/") < 3:  # a bare bucket: no key to check
        bucket = uri.removeprefix("s3://").strip("/")
        split_s3_uri(f"s3://{bucket}/{POINTER_NAME}")
        return bucket, ""
    bucket, root = split_s3_uri(uri.rstrip("/"))
    return bucket, root


def _current(s3: Any, bucket: str, prefix: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=f"{prefix}/{POINTER_NAME}")["Body"].read()
    except ClientError as e:
        if is_not_found(e):
            return None
        raise
    return json.loads(body)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(
    s3: Any, checkpoint: Path, models_uri: str, *, min_accuracy: float, force: bool = False
) -> Published:
    """Publish a trained checkpoint (its card beside it) if it passes the quality gate."""
    card = ModelCard.model_validate_json(card_path(checkpoint).read_text())
    accuracy = card.evaluation.accuracy
    bucket, root = _split(models_uri)
    prefix = f"{root}/{PREFIX}".strip("/")
    current = _current(s3, bucket, prefix)
    previous = current.get("accuracy") if current else None
    if not force:
        if accuracy < min_accuracy:
            raise PublishRefused(
                f"validation accuracy {accuracy:.3f} is below the bar of {min_accuracy:.3f}"
            )
        if previous is not None and accuracy < previous:
            raise PublishRefused(
                f"validation accuracy {accuracy:.3f} is worse than the current model's "
                f"{previous:.3f} "
                f"({current.get('version')}); use --force to publish anyway"
            )
    return upload_model(
        s3, checkpoint, models_uri, version=card.model_version, accuracy=accuracy, card=card
    )


def upload_model(
    s3: Any,
    checkpoint: Path,
    models_uri: str,
    *,
    version: str,
    accuracy: float | None = None,
    card: ModelCard | None = None,
) -> Published:
    """Upload a checkpoint under ``<version>/`` and point ``current.json`` at it, with no gate:
    what :func:`publish` does once a model passes, and what the local fleet does with a model
    it is given (a checkpoint without a card, or the seed's format, whose
    ``class_mapping.json`` travels beside it as ``model_source`` expects)."""
    bucket, root = _split(models_uri)
    prefix = f"{root}/{PREFIX}".strip("/")
    current = _current(s3, bucket, prefix)
    previous = current.get("accuracy") if current else None
    folder = f"{prefix}/{version}"
    split_s3_uri(f"s3://{bucket}/{folder}/model.pt")  # a version is one plain path segment
    data = checkpoint.read_bytes()
    uploads: dict[str, tuple[bytes, str | None]] = {"model.pt": (data, None)}
    for local, remote in zip(int8_paths(checkpoint), int8_paths(Path("model.pt")), strict=True):
        if local.is_file():  # the int8 model travels with its checkpoint, hashed beside it
            uploads[remote.name] = (local.read_bytes(), None)
    seed_mapping = checkpoint.with_name(SEED_MAPPING_FILE)
    if card is None and seed_mapping.is_file():
        uploads[SEED_MAPPING_FILE] = (seed_mapping.read_bytes(), "application/json")
    if card is not None:
        uploads["model.card.json"] = (card.model_dump_json(indent=2).encode(), "application/json")
    for name, (body, content_type) in uploads.items():
        extra = {"ContentType": content_type} if content_type else {}
        s3.put_object(Bucket=bucket, Key=f"{folder}/{name}", Body=body, **extra)
    pointer = ModelPointer(
        bucket=bucket,
        folder=folder,
        checkpoint="model.pt",
        files={name: _sha256(body) for name, (body, _) in uploads.items()},
        version=version,
        accuracy=accuracy,
    )
    # Last: a worker starting now sees the old pointer or the new one, each whole.
    pointer_key = f"{prefix}/{POINTER_NAME}"
    s3.put_object(
        Bucket=bucket, Key=pointer_key, Body=pointer.to_json(), ContentType="application/json"
    )
    return Published(version, pointer.checkpoint_uri, f"s3://{bucket}/{pointer_key}", previous)
