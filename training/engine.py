"""Training in torchvision's reference shape: ``train_one_epoch``, ``evaluate``, ``fit``.

Each function sets ``model.train()`` or ``model.eval()`` first; evaluation runs under
``torch.inference_mode()`` through the shared preprocessing's ``normalize``, exactly as the
worker does. ``fit`` keeps the best model by validation accuracy, stops early after
``patience`` epochs without improvement, and can resume from its last state file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from posefleet.checkpoint import build_model
from posefleet.preprocess import PreprocessSpec, normalize
from posefleet.settings import TrainingSettings

__all__ = [
    "EpochRow",
    "History",
    "bf16_supported",
    "create_model",
    "evaluate",
    "fit",
    "predict_batches",
    "train_one_epoch",
]


def create_model(settings: TrainingSettings, num_classes: int) -> nn.Module:
    """A torchvision ResNet; ImageNet weights only from a local file, never downloaded."""
    model = build_model(settings.arch, num_classes)
    if settings.pretrained:
        state = torch.load(settings.pretrained, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("fc.") for k in missing):
            raise ValueError(
                f"{settings.pretrained} does not fit {settings.arch}: {unexpected or missing}"
            )
    return model


def bf16_supported() -> bool:
    """Whether this CPU trains in bfloat16 natively (AVX512-BF16 or AMX): about twice as fast
    as fp32 there (docs/benchmarks.md), and much slower where it is emulated."""
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    spec: PreprocessSpec,
    *,
    desc: str = "train",
    progress: bool = True,
    bf16: bool = False,
    label_smoothing: float = 0.0,
    after_step: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """One pass over ``loader``; with ``bf16``, forward and loss under CPU bfloat16 autocast
    (weights and optimizer stay fp32). ``after_step`` runs after every optimizer step (a
    per-step learning-rate schedule)."""
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress)
    for pixels, targets in bar:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(normalize(pixels, spec))
            loss = criterion(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        total_loss += loss.item() * len(targets)
        correct += int((logits.argmax(1) == targets).sum())
        seen += len(targets)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.1%}")
    return total_loss / max(1, seen), correct / max(1, seen)


@torch.inference_mode()
def predict_batches(
    model: nn.Module, loader: DataLoader, spec: PreprocessSpec
) -> tuple[torch.Tensor, list[int]]:
    """Probabilities for every image of ``loader`` (in order) and the targets."""
    model.eval()
    probs, targets = [], []
    for pixels, batch_targets in loader:
        probs.append(torch.softmax(model(normalize(pixels, spec)).float(), dim=1))
        targets += [int(t) for t in batch_targets]
    return torch.cat(probs) if probs else torch.empty(0), targets


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, spec: PreprocessSpec) -> tuple[float, float]:
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct, seen = 0.0, 0, 0
    for pixels, targets in loader:
        logits = model(normalize(pixels, spec))
        total_loss += float(criterion(logits, targets))
        correct += int((logits.argmax(1) == targets).sum())
        seen += len(targets)
    return total_loss / max(1, seen), correct / max(1, seen)


@dataclass(slots=True)
class EpochRow:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    status: str


@dataclass(slots=True)
class History:
    rows: list[EpochRow] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = -1.0
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "stopped_early": self.stopped_early,
            "epochs": [_row(r) for r in self.rows],
        }


def _row(r: EpochRow) -> dict[str, Any]:
    return {k: getattr(r, k) for k in EpochRow.__slots__}


COLUMNS = (
    ("Epoch", 6),
    ("Train Loss", 12),
    ("Train Acc", 11),
    ("Val Loss", 10),
    ("Val Acc", 9),
    ("Time", 8),
)
HEADER = " ".join(f"{name:<{width}}" for name, width in COLUMNS) + " Status"


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    settings: TrainingSettings,
    spec: PreprocessSpec,
    *,
    state_file: Path | None = None,
    say: Callable[[str], None] = print,
    progress: bool = True,
) -> History:
    """Train with early stopping; the model ends holding the best weights.

    The model trains in the channels-last memory format (about 10% less CPU per image here,
    docs/benchmarks.md) and is handed back in the default one.
    """
    model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    schedule = _schedule(optimizer, settings, steps_per_epoch=len(train_loader))
    per_step = settings.lr_schedule == "onecycle"
    history, start = History(), 1
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if state_file and state_file.exists():
        saved = torch.load(state_file, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(saved["schedule"])
        best_state = saved["best_model"]
        history.best_epoch, history.best_val_acc = saved["best_epoch"], saved["best_val_acc"]
        history.rows = [EpochRow(**r) for r in saved["rows"]]
        start = saved["epoch"] + 1
        say(f"resuming from {state_file} after epoch {saved['epoch']}")
    say("=" * len(HEADER) + "\n" + HEADER + "\n" + "=" * len(HEADER))
    for epoch in range(start, settings.epochs + 1):
        began = time.perf_counter()
        train_loss, train_acc = train_one_epoch(
            model,
            train_loader,
            optimizer,
            spec,
            desc=f"Epoch {epoch} [Train]",
            progress=progress,
            bf16=settings.precision == "bf16",
            label_smoothing=settings.label_smoothing,
            after_step=schedule.step if schedule is not None and per_step else None,
        )
        val_loss, val_acc = evaluate(model, val_loader, spec)
        if schedule is not None and not per_step:
            schedule.step()
        if val_acc > history.best_val_acc:
            history.best_val_acc, history.best_epoch = val_acc, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            status = "✓ Best Model"
        else:
            status = f"Wait {epoch - history.best_epoch}/{settings.patience}"
        row = EpochRow(
            epoch, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - began, status
        )
        history.rows.append(row)
        say(
            f"{epoch:<6} {train_loss:<12.4f} {train_acc:<11.1%} {val_loss:<10.4f} {val_acc:<9.1%} "
            f"{row.seconds:<8.1f} {status}"
        )
        if state_file:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict() if schedule is not None else {},
                    "best_model": best_state,
                    "best_epoch": history.best_epoch,
                    "best_val_acc": history.best_val_acc,
                    "rows": [_row(r) for r in history.rows],
                    "epoch": epoch,
                },
                state_file,
            )
        if epoch - history.best_epoch >= settings.patience:
            history.stopped_early = True
            say(f"early stop: no better validation accuracy for {settings.patience} epochs")
            break
    model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)
    return history


def _schedule(
    optimizer: torch.optim.Optimizer, settings: TrainingSettings, *, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if settings.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    if settings.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=settings.lr,
            total_steps=settings.epochs * max(1, steps_per_epoch),
            pct_start=0.25,
        )
    return None
