"""The seed Lambda's way, as the baseline: for each key, download to disk, decode the whole image
with Pillow, Resize((224, 224)), ToTensor, Normalize, and run the model on a batch of one."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import transforms

from posefleet.checkpoint import Checkpoint


def run_baseline(
    s3: Any, bucket: str, keys: list[str], checkpoint: Checkpoint
) -> tuple[float, dict[str, int]]:
    """Returns (seconds, key -> predicted class index)."""
    model = checkpoint.build()
    spec = checkpoint.preprocess
    transform = transforms.Compose(
        [
            transforms.Resize((spec.input_size, spec.input_size)),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )
    predictions: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        for key in keys:
            path = Path(tmp) / "image"
            s3.download_file(bucket, key, str(path))
            image = Image.open(path).convert("RGB")
            with torch.no_grad():
                probs = torch.softmax(model(transform(image).unsqueeze(0)), dim=1)
            predictions[key] = int(probs.argmax(1))
        seconds = time.perf_counter() - started
    return seconds, predictions
