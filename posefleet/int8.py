"""The int8 model: the one definition of the quantised companion of a checkpoint.

``python -m training quantize`` calibrates a checkpoint with NNCF's post-training quantisation
and writes an OpenVINO model beside it::

    model.pt             the checkpoint (the source of truth: classes, input size, weights)
    model.int8.xml       the int8 network (OpenVINO IR), with the metadata below in its rt_info
    model.int8.bin       its weights

The IR takes the same normalised input as the checkpoint's network (``preprocess.normalize``),
so the worker's preprocessing does not change. Its metadata names the checkpoint version it was
made from, and the top-1 agreement with fp32 PyTorch measured on held-out photos; the worker
refuses an int8 model made from another checkpoint. Results served by it carry the model version
``<checkpoint version>-int8-<first 8 hex digits of the IR's SHA-256>``, since its numbers are
not the checkpoint's.

OpenVINO is imported only when a model is read or written (``pip install 'posefleet[openvino]'``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "INT8_SUFFIXES",
    "MIN_AGREEMENT",
    "Int8Info",
    "Int8Mismatch",
    "int8_paths",
    "int8_version",
    "read_int8",
    "write_int8",
]

INT8_SUFFIXES = (".int8.xml", ".int8.bin")
MIN_AGREEMENT = 0.99  # the default bar: top-1 agreement with fp32 PyTorch on held-out photos
_RT_KEY = "posefleet"  # rt_info section of the IR
_NUMBERS = {"agreement": float, "heldout_images": int, "calibration_images": int}  # rt_info: text


class Int8Mismatch(RuntimeError):
    """The int8 model is missing or was not made from this checkpoint."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Int8Info:
    checkpoint_version: str
    agreement: float  # top-1 agreement with fp32 PyTorch on held-out photos
    heldout_images: int
    calibration_images: int
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def int8_paths(checkpoint: Path) -> tuple[Path, Path]:
    """``model.pt`` -> (``model.int8.xml``, ``model.int8.bin``): where the int8 model lives."""
    xml, weights = (checkpoint.with_name(checkpoint.stem + s) for s in INT8_SUFFIXES)
    return xml, weights


def int8_version(checkpoint_version: str, checkpoint: Path) -> str:
    digest = hashlib.sha256()
    for path in int8_paths(checkpoint):
        digest.update(path.read_bytes())
    return f"{checkpoint_version}-int8-{digest.hexdigest()[:8]}"


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as e:
        raise RuntimeError("int8 models need OpenVINO: pip install 'posefleet[openvino]'") from e
    return openvino


def write_int8(model: Any, checkpoint: Path, info: Int8Info) -> tuple[Path, Path]:
    """Save an ``openvino.Model`` as the int8 companion of ``checkpoint``."""
    ov = _openvino()
    for name, value in info.as_dict().items():
        model.set_rt_info(str(value), [_RT_KEY, name])
    xml, weights = int8_paths(checkpoint)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml, weights


def read_int8(checkpoint: Path, checkpoint_version: str) -> tuple[Any, Int8Info]:
    """The ``openvino.Model`` beside ``checkpoint`` and its metadata, checked against the
    checkpoint's version."""
    ov = _openvino()
    xml, weights = int8_paths(checkpoint)
    if not xml.is_file() or not weights.is_file():
        raise Int8Mismatch(
            f"no int8 model beside {checkpoint} (expected {xml.name} and {weights.name}); "
            "make one with: python -m training quantize --checkpoint ... --data ..."
        )
    model = ov.Core().read_model(str(xml))
    try:
        meta = {f.name: model.get_rt_info([_RT_KEY, f.name]).astype(str) for f in fields(Int8Info)}
    except RuntimeError as e:
        raise Int8Mismatch(f"{xml} has no posefleet metadata; was it written by posefleet?") from e
    info = Int8Info(**{name: _NUMBERS.get(name, str)(value) for name, value in meta.items()})
    if info.checkpoint_version != checkpoint_version:
        raise Int8Mismatch(
            f"{xml.name} was made from checkpoint {info.checkpoint_version}, but {checkpoint.name} "
            f"is {checkpoint_version}; quantize the checkpoint again"
        )
    return model, info
