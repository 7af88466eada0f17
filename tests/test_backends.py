"""The fast paths agree with the plain path: OpenVINO's CPU runtime against PyTorch, and the
int8 companion of a checkpoint is served only beside the checkpoint it was made from."""

import shutil
from pathlib import Path

import pytest
import torch

from posefleet.checkpoint import load_checkpoint
from posefleet.int8 import Int8Info, Int8Mismatch, int8_paths, write_int8
from posefleet.openvino_ir import to_openvino
from posefleet.preprocess import decode_image
from tests.images import good_variants, jpeg
from worker.model import Classifier

pytest.importorskip("openvino", reason="pip install 'posefleet[openvino]'")


@pytest.mark.slow
def test_openvino_predicts_what_torch_predicts(checkpoint_path):
    plain = Classifier.from_file(checkpoint_path, device="cpu", threads=2)
    size = plain.spec.input_size
    images = [decode_image(data, input_size=size).pixels for data in good_variants().values()]
    images += [decode_image(jpeg((480, 640), seed=s), input_size=size).pixels for s in range(10)]
    fast = Classifier.from_file(checkpoint_path, device="cpu", threads=2, backend="openvino")
    expected, got = plain.predict(images), fast.predict(images)
    assert got.shape == expected.shape
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert torch.allclose(got, expected, atol=1e-4)
    assert fast.describe()["backend"] == "openvino"


def test_openvino_refuses_a_gpu(checkpoint_path):
    if not torch.cuda.is_available():
        pytest.skip("no GPU here: the refusal needs a CUDA device to be asked for")
    with pytest.raises(ValueError, match="CPU"):
        Classifier(load_checkpoint(checkpoint_path), device="cuda", backend="openvino")


def test_unknown_backends_are_refused(checkpoint_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        Classifier(load_checkpoint(checkpoint_path), device="cpu", backend="tensorrt")


def _companion(checkpoint: Path, made_from: str) -> None:
    """An OpenVINO model beside ``checkpoint`` with posefleet's metadata: the companion's
    contract (paths, metadata, version check) without NNCF's calibration, which
    tests/test_training.py runs for real on a trained model."""
    ckpt = load_checkpoint(checkpoint)
    converted = to_openvino(ckpt.build(), input_size=ckpt.preprocess.input_size)
    info = Int8Info(
        checkpoint_version=made_from,
        agreement=0.995,
        heldout_images=200,
        calibration_images=300,
        created_at="2026-11-23T00:00:00+00:00",
    )
    write_int8(converted, checkpoint, info)


@pytest.mark.slow
def test_the_int8_backend_serves_the_model_beside_the_checkpoint(checkpoint_path, tmp_path):
    checkpoint = tmp_path / "model.pt"
    shutil.copy(checkpoint_path, checkpoint)
    version = load_checkpoint(checkpoint).version
    _companion(checkpoint, made_from=version)
    assert [p.name for p in int8_paths(checkpoint)] == ["model.int8.xml", "model.int8.bin"]
    plain = Classifier.from_file(checkpoint, device="cpu", threads=2)
    size = plain.spec.input_size
    images = [decode_image(jpeg((480, 640), seed=s), input_size=size).pixels for s in range(6)]
    served = Classifier.from_file(checkpoint, device="cpu", threads=2, backend="openvino-int8")
    assert torch.equal(served.predict(images).argmax(1), plain.predict(images).argmax(1))
    # Its results say which numbers made them: the checkpoint's version and the IR's digest.
    assert served.version.startswith(f"{version}-int8-") and len(served.version) == 26
    assert served.describe()["int8_agreement"] == 0.995


@pytest.mark.slow
def test_an_int8_model_from_another_checkpoint_is_refused(checkpoint_path, tmp_path):
    checkpoint = tmp_path / "model.pt"
    shutil.copy(checkpoint_path, checkpoint)
    with pytest.raises(Int8Mismatch, match="no int8 model beside"):
        Classifier.from_file(checkpoint, device="cpu", backend="openvino-int8")
    _companion(checkpoint, made_from="0123456789ab")
    with pytest.raises(Int8Mismatch, match="made from checkpoint 0123456789ab"):
        Classifier.from_file(checkpoint, device="cpu", backend="openvino-int8")


def test_the_worker_says_in_one_line_why_it_has_no_model(checkpoint_path, tmp_path, capsys):
    from worker.__main__ import main

    checkpoint = tmp_path / "model.pt"
    shutil.copy(checkpoint_path, checkpoint)
    env = {
        "POSEFLEET_MODEL": str(checkpoint),
        "POSEFLEET_BACKEND": "openvino-int8",
        "POSEFLEET_QUEUE_URL": "http://127.0.0.1:9/queue/none",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        assert main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"worker: cannot load the model {checkpoint}: no int8 model beside")
