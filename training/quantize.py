"""int8 post-training quantisation of a checkpoint, behind an agreement gate.

Three sets of photos, all through the shared preprocessing:

* calibration (up to 300): from the training split, to set the int8 ranges;
* control (up to 400 more from the training split): NNCF's accuracy control keeps the layers in
  fp32 whose quantisation costs the most agreement with fp32 PyTorch, until the agreement on
  these photos is within a quarter of the allowed loss (a margin for the held-out photos);
* held-out: the validation split (the same seeded split training used), never seen by either
  step, where the reported agreement is measured.

The int8 model is written beside the checkpoint (``posefleet/int8.py``) only if its top-1
agreement with fp32 PyTorch on the held-out photos reaches ``min_agreement``.
Needs OpenVINO and NNCF: ``pip install 'posefleet[quantize]'``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posefleet.checkpoint import Checkpoint, load_checkpoint
from posefleet.int8 import MIN_AGREEMENT, Int8Info, write_int8
from posefleet.openvino_ir import to_openvino
from posefleet.preprocess import preprocess
from training.data import LabelledImage, stratified_split

__all__ = ["QuantizeRefused", "Quantized", "quantize_checkpoint"]


class QuantizeRefused(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Quantized:
    info: Int8Info
    paths: tuple[Path, Path]
    fp32_accuracy: float
    int8_accuracy: float


def _inputs(items: Sequence[LabelledImage], ckpt: Checkpoint) -> torch.Tensor:
    return torch.stack([preprocess(item.path.read_bytes(), ckpt.preprocess) for item in items])


def _top1(run: Callable[[np.ndarray], np.ndarray], x: torch.Tensor, batch: int = 64) -> np.ndarray:
    return np.concatenate(
        [run(x[i : i + batch].numpy()).argmax(1) for i in range(0, len(x), batch)]
    )


def quantize_checkpoint(
    checkpoint: Path,
    items: Sequence[LabelledImage],
    *,
    val_fraction: float,
    seed: int,
    calibration_images: int = 300,
    control_images: int = 400,
    min_agreement: float = MIN_AGREEMENT,
    accuracy_control: bool = True,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> Quantized:
    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        raise RuntimeError(
            "quantize needs OpenVINO and NNCF: pip install 'posefleet[quantize]'"
        ) from e
    if not 0 < min_agreement <= 1:
        raise ValueError(f"min_agreement must be in (0, 1], got {min_agreement}")
    ckpt = load_checkpoint(checkpoint)
    train, heldout = stratified_split(items, val_fraction=val_fraction, seed=seed)
    if not heldout:
        raise ValueError("no held-out photos to measure agreement on; give more labelled photos")
    wanted = calibration_images + (control_images if accuracy_control else 0)
    pool = random.Random(seed).sample(train, min(wanted, len(train)))
    calibration, control = pool[:calibration_images], pool[calibration_images:] or pool
    controlled = f", controlling on {len(control)}" if accuracy_control else ""
    say(
        f"calibrating on {len(calibration)} photos{controlled}; "
        f"agreement on {len(heldout)} held-out photos"
    )
    cal_x, test_x = _inputs(calibration, ckpt), _inputs(heldout, ckpt)
    size = ckpt.preprocess.input_size
    model = ckpt.build()

    def fp32_top1(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return _top1(lambda batch: model(torch.from_numpy(batch)).numpy(), x)

    def agreement_on(compiled: Any, items: Iterable[tuple[np.ndarray, int]]) -> tuple[float, list]:
        hits = [float(compiled(x)[0].argmax() == expected) for x, expected in items]
        return float(np.mean(hits)), hits

    fp32 = to_openvino(model, input_size=size)
    calibration_data = nncf.Dataset([cal_x[i : i + 1].numpy() for i in range(len(cal_x))])
    if accuracy_control:
        ctl_x = _inputs(control, ckpt)
        ctl_ref = fp32_top1(ctl_x)
        int8 = nncf.quantize_with_accuracy_control(
            fp32,
            calibration_data,
            nncf.Dataset(
                [(ctl_x[i : i + 1].numpy(), int(ctl_ref[i])) for i in range(len(ctl_x))],
                lambda item: item[0],
            ),
            agreement_on,
            max_drop=(1 - min_agreement) / 4,
            drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(cal_x),
        )
    else:  # every layer int8: the fastest, for models whose agreement is checked elsewhere
        int8 = nncf.quantize(fp32, calibration_data, subset_size=len(cal_x))
    compiled = ov.Core().compile_model(int8, "CPU")
    reference = fp32_top1(test_x)
    got = _top1(lambda x: compiled(x)[0], test_x)
    index = {pose_id: i for i, pose_id in enumerate(ckpt.class_mapping.classes)}
    labels = np.array([index.get(item.pose_id, -1) for item in heldout])
    agreement = float(np.mean(got == reference))
    result_info = Int8Info(
        checkpoint_version=ckpt.version,
        agreement=round(agreement, 6),
        heldout_images=len(heldout),
        calibration_images=len(calibration),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    say(f"top-1 agreement with fp32 PyTorch: {agreement:.2%} (bar {min_agreement:.2%})")
    if agreement < min_agreement and not force:
        raise QuantizeRefused(
            f"int8 top-1 agreement {agreement:.2%} on {len(heldout)} held-out photos is below "
            f"the bar of {min_agreement:.2%}; nothing written (--force writes it anyway)"
        )
    return Quantized(
        info=result_info,
        paths=write_int8(int8, checkpoint, result_info),
        fp32_accuracy=float(np.mean(reference == labels)),
        int8_accuracy=float(np.mean(got == labels)),
    )
