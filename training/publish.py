"""Publishing a checkpoint to the models location, behind a quality gate.

    s3://<models>/pose_classifier/<version>/model.pt
    s3://<models>/pose_classifier/<version>/model.card.json
    s3://<models>/pose_classifier/<version>/model.int8.xml, .bin   (if quantized, posefleet/int8.py)
    s3://<models>/pose_classifier/current.json      {"checkpoint", "sha256", "version", "accuracy"}

A model is published only if its validation accuracy meets ``min_accuracy`` and is not worse
than the current model's, unless forced. Workers pick up ``current.json`` when they start.
IAM: ``s3:GetObject`` and ``s3:PutObject`` on the models prefix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from posefleet.checkpoint import SEED_MAPPING_FILE
from posefleet.int8 import int8_paths
from training.card import ModelCard, card_path

__all__ = ["PublishRefused", "Published", "publish", "upload_model"]

PREFIX = "pose_classifier"


class PublishRefused(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Published:
    version: str
    checkpoint_uri: str
    pointer_uri: str
    previous_accuracy: float | None


def _split(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def _current(s3: Any, bucket: str, prefix: str) -> dict[str, Any] | None:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/current.json")["Body"].read())
    except ClientError as e:
        if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise


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
    data = checkpoint.read_bytes()
    key = f"{prefix}/{version}/model.pt"
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    for local, remote in zip(
        int8_paths(checkpoint), int8_paths(Path(key)), strict=True
    ):  # the int8 model travels with its checkpoint, so openvino-int8 workers find it beside it
        if local.is_file():
            s3.put_object(Bucket=bucket, Key=remote.as_posix(), Body=local.read_bytes())
    seed_mapping = checkpoint.with_name(SEED_MAPPING_FILE)
    if card is None and seed_mapping.is_file():
        s3.put_object(
            Bucket=bucket,
            Key=f"{prefix}/{version}/{SEED_MAPPING_FILE}",
            Body=seed_mapping.read_bytes(),
            ContentType="application/json",
        )
    if card is not None:
        s3.put_object(
            Bucket=bucket,
            Key=f"{prefix}/{version}/model.card.json",
            Body=card.model_dump_json(indent=2).encode(),
            ContentType="application/json",
        )
    pointer = {
        "checkpoint": f"s3://{bucket}/{key}",
        "sha256": hashlib.sha256(data).hexdigest(),
        "version": version,
        **({"accuracy": accuracy} if accuracy is not None else {}),
    }
    s3.put_object(
        Bucket=bucket,
        Key=f"{prefix}/current.json",
        Body=json.dumps(pointer).encode(),
        ContentType="application/json",
    )
    return Published(
        version, pointer["checkpoint"], f"s3://{bucket}/{prefix}/current.json", previous
    )
