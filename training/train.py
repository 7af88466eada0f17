"""One training run: split, fit, evaluate, and write the checkpoint, its model card and charts."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mappings import ClassMapping
from posefleet.checkpoint import save_checkpoint
from posefleet.preprocess import PreprocessSpec
from posefleet.settings import TrainingSettings
from training.card import ModelCard, card_path
from training.charts import confusion_png, per_class_png
from training.data import LabelledImage, PoseDataset, stratified_split
from training.engine import create_model, fit, predict_batches
from training.metrics import classification_report

__all__ = ["TrainResult", "evaluate_checkpoint_on", "run_training"]


@dataclass(frozen=True, slots=True)
class TrainResult:
    checkpoint: Path
    card: ModelCard
    val_items: list[LabelledImage]
    val_predictions: list[int]  # class index per validation image, in val_items order


def _loader(
    items: Sequence[LabelledImage],
    mapping: ClassMapping,
    settings: TrainingSettings,
    *,
    train: bool,
) -> DataLoader:
    dataset = PoseDataset(
        items,
        mapping,
        input_size=settings.input_size,
        flip=train and settings.flip,
        seed=settings.seed,
    )
    generator = torch.Generator().manual_seed(settings.seed)
    return DataLoader(
        dataset,
        batch_size=settings.batch_size if train else 64,
        shuffle=train,
        num_workers=settings.workers,
        generator=generator,
    )


def write_report(report: dict[str, Any], checkpoint: Path) -> None:
    stem = checkpoint.with_suffix("")
    Path(f"{stem}.confusion.json").write_text(json.dumps(report["confusion_matrix"], indent=2))
    confusion_png(
        report["confusion_matrix"]["matrix"],
        report["confusion_matrix"]["labels"],
        Path(f"{stem}.confusion.png"),
    )
    per_class_png(report["per_class"], Path(f"{stem}.per_class.png"))


def run_training(
    items: Sequence[LabelledImage],
    settings: TrainingSettings,
    out: Path,
    *,
    pose_ids: Sequence[str] | None = None,
    extra_data: dict[str, Any] | None = None,
    say: Callable[[str], None] = print,
    progress: bool = True,
) -> TrainResult:
    torch.manual_seed(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    present = sorted(
        {i.pose_id for i in items}, key=lambda p: list(ClassMapping.for_poses().classes).index(p)
    )
    mapping = ClassMapping.for_poses(list(pose_ids) if pose_ids else present)
    train_items, val_items = stratified_split(
        items, val_fraction=settings.val_fraction, seed=settings.seed
    )
    say(
        f"{len(train_items)} training and {len(val_items)} validation images, "
        f"{len(mapping.classes)} poses"
    )
    spec = PreprocessSpec(input_size=settings.input_size)
    model = create_model(settings, len(mapping.classes))
    out.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    history = fit(
        model,
        _loader(train_items, mapping, settings, train=True),
        _loader(val_items, mapping, settings, train=False),
        settings,
        spec,
        state_file=out.with_suffix(".state.pt"),
        say=say,
        progress=progress,
    )
    seconds = time.perf_counter() - began
    probs, targets = predict_batches(
        model, _loader(val_items, mapping, settings, train=False), spec
    )
    predictions = [int(i) for i in probs.argmax(1)] if len(probs) else []
    report = classification_report(targets, predictions, mapping.names)
    version = save_checkpoint(
        out,
        model=model,
        arch=settings.arch,
        class_mapping=mapping,
        preprocess=spec,
        metrics={"val_accuracy": report["accuracy"], "weighted_f1": report["weighted"]["f1"]},
    )
    card = ModelCard(
        model_version=version,
        arch=settings.arch,
        classes=list(mapping.classes),
        class_names=list(mapping.names),
        input_size=settings.input_size,
        data={
            "train": len(train_items),
            "val": len(val_items),
            "per_pose": dict(Counter(i.pose_id for i in items)),
            **(extra_data or {}),
        },
        evaluation=report,
        history=history.as_dict(),
        settings=settings.model_dump(),
        versions=ModelCard.software_versions(),
        training_seconds=round(seconds, 1),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    card_path(out).write_text(card.model_dump_json(indent=2))
    write_report(report, out)
    out.with_suffix(".state.pt").unlink(missing_ok=True)
    say(
        f"validation accuracy {report['accuracy']:.1%}, "
        f"weighted F1 {report['weighted']['f1']:.3f}; "
        f"wrote {out} (model version {version}) and its card"
    )
    return TrainResult(out, card, list(val_items), predictions)


def evaluate_checkpoint_on(checkpoint: Path, items: Sequence[LabelledImage]) -> dict[str, Any]:
    """Score a saved checkpoint on labelled images, through the same preprocessing."""
    from posefleet.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build()
    loader = DataLoader(
        PoseDataset(items, ckpt.class_mapping, input_size=ckpt.preprocess.input_size), batch_size=64
    )
    probs, targets = predict_batches(model, loader, ckpt.preprocess)
    return classification_report(
        targets, [int(i) for i in probs.argmax(1)], ckpt.class_mapping.names
    )
