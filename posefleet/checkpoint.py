"""Checkpoint: the one definition of the model file the fleet serves.

A posefleet checkpoint is a dict saved with ``torch.save`` and read with
``torch.load(..., weights_only=True)``::

    {"format": "posefleet.checkpoint/1", "arch": "resnet50",
     "class_mapping": {class_to_idx, idx_to_class, classes},   # seed-compatible
     "input_size": 224, "mean": [...], "std": [...],
     "state_dict": {...}, "metrics": {...}, "created_at": "...", "extra": {...}}

The model version is the first 12 hex digits of the SHA-256 of the file's bytes (for the seed
format, of the weights file followed by its class_mapping.json) and goes into every result.

The seed's format also loads: a bare ``state_dict`` (or the seed's "complete" dict with
``model_state_dict``) and a ``class_mapping.json`` beside it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models

from mappings import ClassMapping
from posefleet.preprocess import PreprocessSpec

__all__ = [
    "ARCHITECTURES",
    "FORMAT",
    "Checkpoint",
    "ModelIntegrityError",
    "build_model",
    "file_version",
    "load_checkpoint",
    "save_checkpoint",
    "save_initialised",
]

FORMAT = "posefleet.checkpoint/1"
ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101")
SEED_MAPPING_FILE = "class_mapping.json"


class ModelIntegrityError(RuntimeError):
    """The model file is not the one the settings expect."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    arch: str
    class_mapping: ClassMapping
    preprocess: PreprocessSpec
    state_dict: Mapping[str, torch.Tensor]
    version: str
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    head: str = (
        "linear"  # "linear": fc = Linear; "dropout_linear": fc = Sequential(Dropout, Linear)
    )

    def build(self) -> nn.Module:
        """The model with its weights, in eval mode, on the CPU."""
        model = build_model(self.arch, len(self.class_mapping.classes), head=self.head)
        model.load_state_dict(dict(self.state_dict))
        return model.eval()


def build_model(arch: str, num_classes: int, *, head: str = "linear") -> nn.Module:
    """A torchvision ResNet with a ``num_classes`` head and no downloaded weights."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    model = getattr(models, arch)(weights=None)
    in_features = model.fc.in_features
    if head == "dropout_linear":
        model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(in_features, num_classes))
    else:
        model.fc = nn.Linear(in_features, num_classes)
    return model


def file_version(*paths: Path) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.read_bytes())
    return digest.hexdigest()[:12]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    arch: str,
    class_mapping: ClassMapping,
    preprocess: PreprocessSpec | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write a posefleet checkpoint; returns its model version."""
    spec = preprocess or PreprocessSpec()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "arch": arch,
        "class_mapping": class_mapping.to_json(),
        "input_size": spec.input_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "extra": dict(extra or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return file_version(path)


def save_initialised(
    path: Path, *, arch: str = "resnet50", seed: int = 0, input_size: int = 224
) -> str:
    """An untrained model over every canonical pose, initialised from ``seed``: for tests, the
    demo's untrained mode and the benchmark, where what matters is a real network, not its skill."""
    torch.manual_seed(seed)
    mapping = ClassMapping.for_poses()
    model = build_model(arch, len(mapping.classes))
    return save_checkpoint(
        path,
        model=model,
        arch=arch,
        class_mapping=mapping,
        preprocess=PreprocessSpec(input_size=input_size),
        metrics={"note": f"untrained, seed {seed}"},
    )


def _infer_arch(state: Mapping[str, torch.Tensor]) -> str:
    blocks = {
        layer: len({int(m.group(1)) for k in state if (m := re.match(rf"{layer}\.(\d+)\.", k))})
        for layer in ("layer1", "layer2", "layer3", "layer4")
    }
    bottleneck = any(k.endswith("conv3.weight") for k in state)
    shape = (blocks["layer1"], blocks["layer2"], blocks["layer3"], blocks["layer4"])
    table = {
        ((2, 2, 2, 2), False): "resnet18",
        ((3, 4, 6, 3), False): "resnet34",
        ((3, 4, 6, 3), True): "resnet50",
        ((3, 4, 23, 3), True): "resnet101",
    }
    try:
        return table[(shape, bottleneck)]
    except KeyError:
        raise ValueError(f"state_dict is not a known ResNet (blocks {shape})") from None


def _head(state: Mapping[str, torch.Tensor]) -> str:
    return "dropout_linear" if "fc.1.weight" in state else "linear"


def _load_seed(path: Path, raw: Mapping[str, Any], version: str) -> Checkpoint:
    state = raw.get("model_state_dict", raw)
    if "class_mapping" in raw:
        mapping = ClassMapping.from_json(raw["class_mapping"])
        files = (path,)
    elif "class_to_idx" in raw:
        mapping = ClassMapping.from_json({"class_to_idx": raw["class_to_idx"]})
        files = (path,)
    else:
        mapping_file = path.with_name(SEED_MAPPING_FILE)
        if not mapping_file.exists():
            raise FileNotFoundError(
                f"{path} is a bare state_dict; its classes must be in {mapping_file} "
                "(the seed's class_mapping.json)"
            )
        mapping = ClassMapping.from_json(json.loads(mapping_file.read_text()))
        files = (path, mapping_file)
    head = _head(state)
    out_features = state["fc.1.weight" if head == "dropout_linear" else "fc.weight"].shape[0]
    if out_features != len(mapping.classes):
        raise ValueError(
            f"model has {out_features} outputs but the class mapping lists {len(mapping.classes)}"
        )
    return Checkpoint(
        arch=_infer_arch(state),
        class_mapping=mapping,
        preprocess=PreprocessSpec(),
        state_dict=state,
        version=file_version(*files) if len(files) > 1 else version,
        head=head,
        extra={"source_format": "seed"},
    )


def load_checkpoint(path: Path, *, expected_sha256: str | None = None) -> Checkpoint:
    """Load a posefleet or seed checkpoint with ``weights_only=True``.

    If ``expected_sha256`` is given, the file's SHA-256 must match before anything is unpickled.
    """
    path = Path(path)
    if expected_sha256 is not None:
        actual = _sha256(path)
        if actual.lower() != expected_sha256.lower():
            raise ModelIntegrityError(
                f"{path} has SHA-256 {actual}, but the settings expect {expected_sha256}"
            )
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict")
    version = file_version(path)
    if raw.get("format") != FORMAT:
        return _load_seed(path, raw, version)
    return Checkpoint(
        arch=raw["arch"],
        class_mapping=ClassMapping.from_json(raw["class_mapping"]),
        preprocess=PreprocessSpec(
            input_size=int(raw["input_size"]), mean=tuple(raw["mean"]), std=tuple(raw["std"])
        ),
        state_dict=raw["state_dict"],
        version=version,
        metrics=dict(raw.get("metrics", {})),
        created_at=raw.get("created_at"),
        extra=dict(raw.get("extra", {})),
        head=_head(raw["state_dict"]),
    )
