"""A checkpoint's network as an OpenVINO model: the one conversion, used by the worker's
``openvino`` backend and by ``python -m training quantize`` (which calibrates what it returns).

The network is captured with ``torch.export`` (an ``ExportedProgram``), the path torch 2.14 and
OpenVINO support, rather than ``ov.convert_model(module, example_input=...)``, which traces with
the deprecated ``torch.jit.trace``. The batch dimension stays dynamic, the image size is the
checkpoint's. OpenVINO is imported only here, when a model is converted
(``pip install 'posefleet[openvino]'``).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["to_openvino"]


def to_openvino(model: torch.nn.Module, *, input_size: int) -> Any:
    """An ``openvino.Model`` computing what ``model`` computes in eval mode, on float32 input
    ``(batch, 3, input_size, input_size)`` for any batch."""
    try:
        import openvino as ov
    except ImportError as e:
        raise RuntimeError(
            "converting to OpenVINO needs OpenVINO: pip install 'posefleet[openvino]'"
        ) from e
    if input_size < 1:
        raise ValueError(f"input_size must be a positive number of pixels, got {input_size}")
    model = model.eval()
    # An example batch of 2: torch.export specialises a dimension of size 1 to a constant.
    example = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    return ov.convert_model(program, input=[-1, 3, input_size, input_size])
