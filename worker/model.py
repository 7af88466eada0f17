"""The resident model: load once, predict batches. Knows torch; never imports boto3.

Shaped like LitServe's API: :meth:`Classifier.setup` loads the checkpoint onto the device,
:meth:`Classifier.predict` turns a ``uint8`` batch into probabilities, and
:meth:`Classifier.postprocess` turns those into the seed's prediction fields. The worker loop
calls these three and knows nothing else about torch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from posefleet.checkpoint import Checkpoint, load_checkpoint
from posefleet.int8 import Int8Info, int8_version, read_int8
from posefleet.openvino_ir import to_openvino
from posefleet.preprocess import PreprocessSpec, normalize

__all__ = ["BACKENDS", "Classifier", "Prediction", "pick_device"]

BACKENDS = ("torch", "openvino", "openvino-int8")


def _compile_openvino(model: Any, threads: int, *, fp32: bool = False) -> Any:
    """An ``openvino.Model`` compiled for the CPU, one stream (the worker calls it from one
    thread: more streams would leave cores idle).

    ``fp32`` pins the precision: on CPUs with bf16 instructions (AVX512-BF16, AMX) OpenVINO
    otherwise runs in bf16 by default, and the ``openvino`` backend promises PyTorch's fp32
    numbers (probabilities differ by up to 1.5e-3 in bf16)."""
    import openvino as ov

    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads} if threads > 0 else {}
    if fp32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return ov.Core().compile_model(model, "CPU", config)


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
        if backend != "torch" and self.device.type != "cpu":
            raise ValueError(f"the {backend} backend runs on the CPU; use backend=torch with a GPU")
        self.threads = threads
        self.backend = backend
        self.model: torch.nn.Module | None = None
        self._compiled: Any = None  # the OpenVINO compiled model, for backend=openvino*
        self.int8: Int8Info | None = None
        self._version = checkpoint.version
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
        classifier.setup(path)
        classifier.load_seconds = time.perf_counter() - started
        return classifier

    @property
    def version(self) -> str:
        """The checkpoint's version, or the int8 model's (``posefleet/int8.py``) when serving it."""
        return self._version

    @property
    def spec(self) -> PreprocessSpec:
        return self.checkpoint.preprocess

    @property
    def default_batch_size(self) -> int:
        """The batch size a worker takes when its settings leave it to the device
        (``batch_size=0``): 32 on a GPU, which needs batches to be busy; 8 on a CPU, where one
        batch of 32 images is no faster per image than four of 8 (ResNet50, one thread: 6.3-7.7
        against 7.9-8.6 images/s) and a live photo behind it would wait four times as long."""
        return 32 if self.device.type == "cuda" else 8

    def setup(self, path: Path | None = None) -> None:
        """Build the model; ``backend=openvino-int8`` reads the int8 model beside ``path``.

        Only the backend's own copy of the weights stays in memory: the checkpoint's tensors are
        dropped once built (ResNet50: 100 MB), and so is the PyTorch model once OpenVINO has it.
        """
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        if self.backend == "openvino-int8":
            if path is None:
                raise ValueError("backend=openvino-int8 needs the checkpoint's path")
            int8_model, self.int8 = read_int8(path, self.checkpoint.version)
            self._compiled = _compile_openvino(int8_model, self.threads)
            self._version = int8_version(self.checkpoint.version, path)
        elif self.backend == "openvino":
            converted = to_openvino(self.checkpoint.build(), input_size=self.spec.input_size)
            self._compiled = _compile_openvino(converted, self.threads, fp32=True)
        else:
            model = self.checkpoint.build().to(self.device)
            self.model = model.to(memory_format=torch.channels_last)
        self.checkpoint = dataclasses.replace(self.checkpoint, state_dict={})

    @torch.inference_mode()
    def predict(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """``uint8 (3, H, W)`` images -> probabilities ``float32 (N, classes)`` on the CPU."""
        if self.model is None and self._compiled is None:
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
            **({"int8_agreement": self.int8.agreement} if self.int8 else {}),
        }
