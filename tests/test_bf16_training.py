"""Training in bfloat16 (the demo's recipe where the CPU supports it): the weights stay fp32,
the loss is finite and falls on a batch it sees again, and evaluation is unchanged."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from posefleet.checkpoint import build_model
from posefleet.preprocess import PreprocessSpec
from training.engine import bf16_supported, train_one_epoch


@pytest.mark.skipif(not bf16_supported(), reason="this CPU has no native bfloat16")
def test_bf16_epochs_keep_fp32_weights_and_learn():
    torch.manual_seed(0)
    model = build_model("resnet18", 3)
    pixels = torch.randint(0, 256, (12, 3, 48, 48), dtype=torch.uint8)
    targets = torch.tensor([0, 1, 2] * 4)
    loader = DataLoader(TensorDataset(pixels, targets), batch_size=12)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    spec = PreprocessSpec(input_size=48)

    losses = [
        train_one_epoch(model, loader, optimizer, spec, progress=False, bf16=True)[0]
        for _ in range(5)
    ]

    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
