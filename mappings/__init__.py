"""Poses and class mappings: the one definition of what the model's outputs mean.

``poses.json`` lists the canonical poses with stable ids. A :class:`ClassMapping` ties a
model's output indices to pose ids and reads and writes the training seed's
``class_mapping.json`` format (``class_to_idx``, ``idx_to_class``, ``classes``), so models
trained by the seed keep working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["ClassMapping", "Pose", "load_poses", "pose_name"]

POSES_FILE = Path(__file__).with_name("poses.json")


@dataclass(frozen=True, slots=True)
class Pose:
    id: str
    name: str
    mirror: str


@cache
def load_poses() -> dict[str, Pose]:
    """Every canonical pose, by id, in file order."""
    data = json.loads(POSES_FILE.read_text())
    return {
        str(p["id"]): Pose(id=str(p["id"]), name=p["name"], mirror=str(p["mirror"]))
        for p in data["poses"]
    }


def pose_name(pose_id: str) -> str:
    """Display name for a pose id; an id unknown to poses.json is shown as ``pose <id>``."""
    pose = load_poses().get(pose_id)
    return pose.name if pose else f"pose {pose_id}"


@dataclass(frozen=True, slots=True)
class ClassMapping:
    """Model output index -> pose id. ``classes[i]`` is the pose id of output ``i``."""

    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("a class mapping needs at least one class")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class ids must be unique, got {list(self.classes)}")

    @classmethod
    def for_poses(cls, pose_ids: list[str] | None = None) -> ClassMapping:
        """A mapping over the given pose ids (all canonical poses by default), in that order."""
        return cls(tuple(pose_ids if pose_ids is not None else load_poses()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(pose_name(c) for c in self.classes)

    def to_json(self) -> dict[str, Any]:
        """The training seed's class_mapping.json shape."""
        return {
            "class_to_idx": {c: i for i, c in enumerate(self.classes)},
            "idx_to_class": {str(i): c for i, c in enumerate(self.classes)},
            "classes": list(self.classes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassMapping:
        """Read the seed's format; ``idx_to_class`` decides the index order when present."""
        if "idx_to_class" in data:
            idx = {int(i): str(c) for i, c in data["idx_to_class"].items()}
            if sorted(idx) != list(range(len(idx))):
                raise ValueError(f"idx_to_class must cover 0..{len(idx) - 1}, got {sorted(idx)}")
            return cls(tuple(idx[i] for i in range(len(idx))))
        if "class_to_idx" in data:
            by_idx = sorted((int(i), str(c)) for c, i in data["class_to_idx"].items())
            return cls(tuple(c for _, c in by_idx))
        if "classes" in data:
            return cls(tuple(str(c) for c in data["classes"]))
        raise ValueError("class mapping needs idx_to_class, class_to_idx or classes")
