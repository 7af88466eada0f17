"""The fast path agrees with the plain path: OpenVINO's CPU runtime against PyTorch."""

import pytest
import torch

from posefleet.preprocess import decode_image
from tests.images import good_variants, jpeg
from worker.model import Classifier

pytest.importorskip("openvino", reason="pip install 'posefleet[openvino]'")


def test_openvino_predicts_what_torch_predicts(checkpoint_path):
    images = [decode_image(data).pixels for data in good_variants().values()]
    images += [decode_image(jpeg((480, 640), seed=s)).pixels for s in range(10)]
    plain = Classifier.from_file(checkpoint_path, device="cpu", threads=2)
    fast = Classifier.from_file(checkpoint_path, device="cpu", threads=2, backend="openvino")
    expected, got = plain.predict(images), fast.predict(images)
    assert got.shape == expected.shape
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert torch.allclose(got, expected, atol=1e-4)
    assert fast.describe()["backend"] == "openvino"


def test_openvino_refuses_a_gpu(checkpoint_path):
    from posefleet.checkpoint import load_checkpoint

    if not torch.cuda.is_available():
        pytest.skip("no GPU here: the refusal needs a CUDA device to be asked for")
    with pytest.raises(ValueError, match="CPU"):
        Classifier(load_checkpoint(checkpoint_path), device="cuda", backend="openvino")


def test_unknown_backends_are_refused(checkpoint_path):
    from posefleet.checkpoint import load_checkpoint

    with pytest.raises(ValueError, match="backend must be one of"):
        Classifier(load_checkpoint(checkpoint_path), device="cpu", backend="tensorrt")
