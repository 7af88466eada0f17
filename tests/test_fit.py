"""``fit`` with the demo's recipe: a one-cycle schedule stepped per batch, label smoothing, and a
model that trains channels-last but comes back in the default memory format, with its best
weights."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from posefleet.checkpoint import build_model
from posefleet.preprocess import PreprocessSpec
from posefleet.settings import TrainingSettings
from training.engine import fit


def loaders() -> tuple[DataLoader, DataLoader]:
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (24, 3, 48, 48), dtype=torch.uint8)
    targets = torch.tensor([0, 1, 2] * 8)
    data = TensorDataset(pixels, targets)
    return DataLoader(data, batch_size=8, shuffle=True), DataLoader(data, batch_size=24)


@pytest.mark.slow
def test_one_cycle_steps_per_batch_and_the_model_comes_back_contiguous(tmp_path):
    train, val = loaders()
    model = build_model("resnet18", 3)
    settings = TrainingSettings(
        arch="resnet18",
        input_size=48,
        lr=2e-3,
        lr_schedule="onecycle",
        label_smoothing=0.1,
        epochs=4,
        patience=4,
    )
    state_file = tmp_path / "state.pt"

    history = fit(
        model, train, val, settings, PreprocessSpec(input_size=48), state_file=state_file,
        say=lambda _: None, progress=False,
    )  # fmt: skip

    saved = torch.load(state_file, weights_only=True)
    assert saved["schedule"]["total_steps"] == 4 * len(train)  # 3 batches an epoch
    assert saved["schedule"]["last_epoch"] == 4 * len(train)  # stepped after every batch
    assert saved["schedule"]["_last_lr"][0] < settings.lr / 20  # annealed from its peak
    assert all(p.is_contiguous() for p in model.parameters())
    best = saved["best_model"]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    assert history.rows[-1].train_loss < history.rows[0].train_loss
    assert len(history.rows) == 4


@pytest.mark.slow
def test_the_epoch_schedules_still_step_per_epoch(tmp_path):
    train, val = loaders()
    settings = TrainingSettings(
        arch="resnet18", input_size=48, lr=1e-3, lr_schedule="cosine", epochs=2, patience=2
    )
    state_file = tmp_path / "state.pt"

    fit(
        build_model("resnet18", 3), train, val, settings, PreprocessSpec(input_size=48),
        state_file=state_file, say=lambda _: None, progress=False,
    )  # fmt: skip

    assert torch.load(state_file, weights_only=True)["schedule"]["last_epoch"] == 2
