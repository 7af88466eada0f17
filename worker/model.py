"""The resident model: load once, predict batches. Knows torch; never imports boto3.

Shaped like LitServe's API: :meth:`Classifier.setup` loads the checkpoint onto the device,
:meth:`Classifier.predict` turns a ``uint8`` batch into probabilities, and
:meth:`Classifier.postprocess` turns those into the seed's prediction fields. The worker loop
calls these three and knows nothing else about torch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from posefleet.checkpoint import Checkpoint, load_checkpoint
from posefleet.preprocess import PreprocessSpec, normalize

__all__ = ["BACKENDS", "Classifier", "Prediction", "pick_device"]

BACKENDS = ("torch", "openvino")


def _compile_openvino(model: torch.nn.Module, size: int, threads: int) -> Any:
    """The same model through OpenVINO's CPU runtime (fp32: the same numbers, faster kernels)."""
    try:
        import openvino as ov
    except ImportError as e:
        raise RuntimeError(
            "backend=openvino needs OpenVINO: pip install 'posefleet[openvino]'"
        ) from e
    example = torch.zeros(1, 3, size, size)
    converted = ov.convert_model(model, example_input=example, input=[-1, 3, size, size])
    config = {"INFERENCE_NUM_THREADS": threads} if threads > 0 else {}
    return ov.Core().compile_model(converted, "CPU", config)


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was asked for, but no CUDA device is available")
    return device


@dataclass(frozen=True, slots=True)
class Prediction:
    predicted_class_index: int
    predicted_class_id: str
    predicted_class_name: str
    confidence: float
    all_probabilities: dict[str, float]


class Classifier:
    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        device: str = "auto",
        threads: int = 0,
        backend: str = "torch",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.checkpoint = checkpoint
        self.device = pick_device(device)
        if backend == "openvino" and self.device.type != "cpu":
            raise ValueError("the openvino backend runs on the CPU; use backend=torch with a GPU")
        self.threads = threads
        self.backend = backend
        self.model: torch.nn.Module | None = None
        self._compiled: Any = None  # the OpenVINO compiled model, for backend=openvino
        self.load_seconds = 0.0

    @classmethod
    def from_file(
        cls,
        path: Path,
        *,
        device: str = "auto",
        threads: int = 0,
        expected_sha256: str | None = None,
        backend: str = "torch",
    ) -> Classifier:
        started = time.perf_counter()
        checkpoint = load_checkpoint(path, expected_sha256=expected_sha256)
        classifier = cls(checkpoint, device=device, threads=threads, backend=backend)
        classifier.setup()
        classifier.load_seconds = time.perf_counter() - started
        return classifier

    @property
    def version(self) -> str:
        return self.checkpoint.version

    @property
    def spec(self) -> PreprocessSpec:
        return self.checkpoint.preprocess

    def setup(self) -> None:
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        model = self.checkpoint.build().to(self.device)
        if self.backend == "openvino":
            self._compiled = _compile_openvino(model, self.spec.input_size, self.threads)
        self.model = model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def predict(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """``uint8 (3, H, W)`` images -> probabilities ``float32 (N, classes)`` on the CPU."""
        if self.model is None:
            raise RuntimeError("call setup() before predict()")
        on_gpu = self.device.type == "cuda"
        pixels = torch.stack(list(images))
        if self._compiled is not None:
            logits = torch.from_numpy(self._compiled(normalize(pixels, self.spec).numpy())[0])
            return torch.softmax(logits.float(), dim=1)
        batch = pixels.pin_memory() if on_gpu else pixels
        batch = batch.to(self.device, non_blocking=on_gpu)
        x = normalize(batch, self.spec).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=on_gpu):
            logits = self.model(x)
        probs = torch.softmax(logits.float(), dim=1).cpu()
        if probs.shape[0] != pixels.shape[0]:
            raise RuntimeError(
                f"model returned {probs.shape[0]} outputs for {pixels.shape[0]} inputs"
            )
        return probs

    def postprocess(self, probs: torch.Tensor) -> list[Prediction]:
        mapping = self.checkpoint.class_mapping
        names = mapping.names
        out = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append(
                Prediction(
                    predicted_class_index=best,
                    predicted_class_id=mapping.classes[best],
                    predicted_class_name=names[best],
                    confidence=round(row[best], 6),
                    all_probabilities={n: round(p, 6) for n, p in zip(names, row, strict=True)},
                )
            )
        return out

    def gpu_utilization(self) -> float | None:
        """Percent of the last sample period the GPU was busy; None on the CPU or without NVML."""
        if self.device.type != "cuda":
            return None
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # pynvml missing or the driver says no: a metric is not worth a crash
            return None

    def describe(self) -> dict[str, Any]:
        return {
            "model_version": self.version,
            "arch": self.checkpoint.arch,
            "classes": len(self.checkpoint.class_mapping.classes),
            "device": str(self.device),
            "backend": self.backend,
            "input_size": self.spec.input_size,
        }
