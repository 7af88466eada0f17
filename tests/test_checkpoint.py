import hashlib
import json
import pickle

import pytest
import torch

from mappings import ClassMapping
from posefleet.checkpoint import ModelIntegrityError, build_model, load_checkpoint, save_checkpoint
from posefleet.preprocess import PreprocessSpec
from tests.images import jpeg
from worker.model import Classifier

SEED_CLASSES = ["1", "11", "14", "16", "2", "5", "7"]


def outputs(model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.inference_mode():
        return model.eval()(torch.randn(2, 3, 64, 64))


def test_posefleet_checkpoint_is_self_describing(tmp_path):
    torch.manual_seed(1)
    model = build_model("resnet18", 11)
    path = tmp_path / "m.pt"
    mapping = ClassMapping.for_poses()
    version = save_checkpoint(
        path,
        model=model,
        arch="resnet18",
        class_mapping=mapping,
        preprocess=PreprocessSpec(input_size=160),
        metrics={"val_acc": 0.97},
    )
    assert version == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    ckpt = load_checkpoint(path)
    assert (ckpt.arch, ckpt.class_mapping, ckpt.preprocess.input_size) == ("resnet18", mapping, 160)
    assert ckpt.metrics == {"val_acc": 0.97}
    assert ckpt.version == version
    assert torch.equal(outputs(ckpt.build()), outputs(model))


def test_seed_format_bare_state_dict_with_class_mapping_json(tmp_path):
    torch.manual_seed(2)
    model = build_model("resnet50", len(SEED_CLASSES))
    torch.save(model.state_dict(), tmp_path / "pose_classifier.pth")
    (tmp_path / "class_mapping.json").write_text(
        json.dumps(ClassMapping(tuple(SEED_CLASSES)).to_json())
    )
    ckpt = load_checkpoint(tmp_path / "pose_classifier.pth")
    assert ckpt.arch == "resnet50"
    assert ckpt.class_mapping.classes == tuple(SEED_CLASSES)
    assert ckpt.extra["source_format"] == "seed"
    assert torch.equal(outputs(ckpt.build()), outputs(model))
    # the version covers the weights and the mapping
    before = ckpt.version
    (tmp_path / "class_mapping.json").write_text(
        json.dumps(ClassMapping(tuple(reversed(SEED_CLASSES))).to_json())
    )
    assert load_checkpoint(tmp_path / "pose_classifier.pth").version != before


def test_seed_complete_checkpoint_with_a_dropout_head(tmp_path):
    torch.manual_seed(3)
    model = build_model("resnet18", 7, head="dropout_linear")
    torch.save(
        {
            "model_state_dict": model.state_dict(),
            "class_to_idx": {c: i for i, c in enumerate(SEED_CLASSES)},
            "epoch": 12,
            "best_val_acc": 91.5,
        },
        tmp_path / "pose_classifier_complete.pth",
    )
    ckpt = load_checkpoint(tmp_path / "pose_classifier_complete.pth")
    assert (ckpt.arch, ckpt.head) == ("resnet18", "dropout_linear")
    assert torch.equal(outputs(ckpt.build()), outputs(model))


def test_bare_state_dict_without_its_mapping_says_where_to_put_it(tmp_path):
    torch.save(build_model("resnet18", 3).state_dict(), tmp_path / "w.pth")
    with pytest.raises(FileNotFoundError, match=r"class_mapping\.json"):
        load_checkpoint(tmp_path / "w.pth")


def test_expected_sha256_is_enforced_before_loading(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(
        path,
        model=build_model("resnet18", 2),
        arch="resnet18",
        class_mapping=ClassMapping(("1", "2")),
    )
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_checkpoint(path, expected_sha256=good.upper()).arch == "resnet18"
    with pytest.raises(ModelIntegrityError, match="expect"):
        load_checkpoint(path, expected_sha256="0" * 64)


class Sneaky:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"format": "posefleet.checkpoint/1", "payload": Sneaky()}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)


def test_classifier_predicts_one_row_per_image_in_the_seed_fields(checkpoint_path):
    from posefleet.preprocess import decode_image

    clf = Classifier.from_file(checkpoint_path, device="cpu")
    images = [decode_image(jpeg(seed=s)).pixels for s in range(3)]
    probs = clf.predict(images)
    assert probs.shape == (3, 11)
    assert torch.allclose(probs.sum(dim=1), torch.ones(3), atol=1e-5)
    alone = clf.predict(images[:1])
    assert torch.allclose(alone[0], probs[0], atol=1e-4)  # batching does not change an answer
    (p, *_) = clf.postprocess(probs)
    assert p.predicted_class_index == int(probs[0].argmax())
    assert p.predicted_class_id == clf.checkpoint.class_mapping.classes[p.predicted_class_index]
    assert p.all_probabilities[p.predicted_class_name] == p.confidence
    assert len(p.all_probabilities) == 11
