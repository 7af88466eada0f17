"""Labelled pose photos: from a local folder (one subfolder per pose id) or from S3 with a labels
file (key -> pose id, the seed's db_labels.json idea); a stratified, seeded split; a Dataset
that decodes with the shared preprocessing and flips with the pose's mirror label.

IAM for S3 sources: ``s3:ListBucket`` and ``s3:GetObject`` on the buckets and prefixes.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mappings import ClassMapping, load_poses
from posefleet.preprocess import decode_image
from posefleet.result import ImageError
from posefleet.settings import IMAGE_EXTENSIONS
from producer.listing import is_image_key

__all__ = [
    "DownloadSummary",
    "LabelledImage",
    "PoseDataset",
    "download_labelled",
    "load_labels",
    "scan_folder",
    "stratified_split",
]


@dataclass(frozen=True, slots=True)
class LabelledImage:
    path: Path
    pose_id: str


def scan_folder(root: Path) -> list[LabelledImage]:
    """``root/<pose id>/*.jpg``; folders that are not pose ids are refused, not guessed."""
    poses = load_poses()
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in poses:
            raise ValueError(
                f"{folder} is not a pose id from mappings/poses.json ({', '.join(poses)})"
            )
        items += [
            LabelledImage(p, folder.name)
            for p in sorted(folder.iterdir())
            if is_image_key(p.name, IMAGE_EXTENSIONS)
        ]
    if not items:
        raise ValueError(f"no images under {root}/<pose id>/")
    return items


def load_labels(path: Path) -> dict[str, str]:
    """A labels file: ``{"bucket/key": "pose id"}``, or a list of ``{bucket, key, pose_id}``."""
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        return {str(k): str(v) for k, v in data.items()}
    return {f"{d['bucket']}/{d['key']}": str(d["pose_id"]) for d in data}


@dataclass(slots=True)
class DownloadSummary:
    downloaded: int = 0
    skipped_present: int = 0
    unlabeled: Counter[str] = field(default_factory=Counter)  # per bucket
    unknown_pose: int = 0
    per_pose: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "downloaded": self.downloaded,
            "skipped_present": self.skipped_present,
            "unlabeled": dict(self.unlabeled),
            "unknown_pose": self.unknown_pose,
            "per_pose": dict(sorted(self.per_pose.items())),
        }


def download_labelled(
    s3: Any,
    sources: Iterable[tuple[str, str]],
    labels: dict[str, str],
    dest: Path,
    *,
    progress: bool = True,
) -> tuple[list[LabelledImage], DownloadSummary]:
    """Download labelled images from ``(bucket, prefix)`` sources into ``dest/<pose>/``.

    A file already present with the same size is skipped (resume). Unlabeled objects are counted
    per bucket and reported, never silently dropped.
    """
    poses = load_poses()
    summary = DownloadSummary()
    items: list[LabelledImage] = []
    for bucket, prefix in sources:
        objects = [
            o
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])
            if is_image_key(o["Key"], IMAGE_EXTENSIONS)
        ]
        for obj in tqdm(objects, desc=f"s3://{bucket}/{prefix}", unit="img", disable=not progress):
            pose_id = labels.get(f"{bucket}/{obj['Key']}")
            if pose_id is None:
                summary.unlabeled[bucket] += 1
                continue
            if pose_id not in poses:
                summary.unknown_pose += 1
                continue
            target = dest / pose_id / f"{bucket}__{obj['Key'].replace('/', '__')}"
            if target.exists() and target.stat().st_size == obj["Size"]:
                summary.skipped_present += 1
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(target))
                summary.downloaded += 1
            summary.per_pose[pose_id] += 1
            items.append(LabelledImage(target, pose_id))
    return items, summary


def stratified_split(
    items: Sequence[LabelledImage], *, val_fraction: float, seed: int
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Per pose, the same fraction goes to validation (at least one image where a pose has two)."""
    by_pose: dict[str, list[LabelledImage]] = defaultdict(list)
    for item in items:
        by_pose[item.pose_id].append(item)
    rng = random.Random(seed)
    train, val = [], []
    for pose_id in sorted(by_pose):
        group = sorted(by_pose[pose_id], key=lambda i: str(i.path))
        rng.shuffle(group)
        n_val = max(1, round(len(group) * val_fraction)) if len(group) > 1 else 0
        val += group[:n_val]
        train += group[n_val:]
    return train, val


class PoseDataset(Dataset):
    """Images decoded by the shared preprocessing (``uint8``), labels as class indices.

    With ``flip``, half of the images are mirrored and take their pose's mirror label (a left
    quarter turn becomes a right one); a pose whose mirror is not in the mapping is not flipped.
    Decoded images are cached in memory after the first epoch.
    """

    def __init__(
        self,
        items: Sequence[LabelledImage],
        mapping: ClassMapping,
        *,
        input_size: int,
        flip: bool = False,
        seed: int = 0,
    ) -> None:
        self.items = list(items)
        self.mapping = mapping
        self.index = {c: i for i, c in enumerate(mapping.classes)}
        self.input_size = input_size
        self.flip = flip
        self.rng = random.Random(seed)
        self.poses = load_poses()
        self._cache: dict[int, torch.Tensor] = {}
        unknown = {i.pose_id for i in self.items} - set(self.index)
        if unknown:
            raise ValueError(
                f"poses {sorted(unknown)} are not in the class mapping {list(mapping.classes)}"
            )

    def __len__(self) -> int:
        return len(self.items)

    def pixels(self, i: int) -> torch.Tensor:
        if i not in self._cache:
            try:
                self._cache[i] = decode_image(
                    self.items[i].path.read_bytes(), input_size=self.input_size
                ).pixels
            except ImageError as e:
                raise ValueError(f"{self.items[i].path}: {e.kind}: {e.message}") from None
        return self._cache[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels, pose_id = self.pixels(i), self.items[i].pose_id
        if self.flip and self.rng.random() < 0.5:
            mirror = self.poses[pose_id].mirror
            if mirror in self.index:
                pixels, pose_id = torch.flip(pixels, dims=[2]), mirror
        return pixels, self.index[pose_id]
