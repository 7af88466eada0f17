"""The model card written next to every checkpoint: what it was trained on, how well it does,
with which settings and versions. Its schema is this pydantic model."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ModelCard", "card_path"]


class ClassScores(BaseModel):
    precision: float = Field(ge=0, le=1)
    recall: float = Field(ge=0, le=1)
    f1: float = Field(ge=0, le=1)
    support: int = Field(ge=0)


class Evaluation(BaseModel):
    accuracy: float = Field(ge=0, le=1)
    weighted: dict[str, float]
    per_class: dict[str, ClassScores]
    confusion_matrix: dict[str, Any]
    images: int = Field(ge=0)


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: int = 1
    model_version: str
    arch: str
    classes: list[str] = Field(description="pose ids, in output order")
    class_names: list[str]
    input_size: int
    data: dict[str, Any] = Field(description="image counts: train, val, per pose, unlabeled")
    evaluation: Evaluation
    history: dict[str, Any]
    settings: dict[str, Any]
    versions: dict[str, str]
    training_seconds: float
    created_at: str

    @staticmethod
    def software_versions() -> dict[str, str]:
        import PIL
        import torch
        import torchvision

        return {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "pillow": PIL.__version__,
        }


def card_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.stem + ".card.json")
