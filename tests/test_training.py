"""Training: data paths against moto, the publish gate, metrics, and a real training run whose
checkpoint is then served by the real worker."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mappings import ClassMapping
from posefleet.checkpoint import build_model, save_checkpoint
from posefleet.int8 import int8_paths, int8_version
from posefleet.settings import TrainingSettings
from tests.conftest import INPUT, MODELS
from tests.helpers import all_lines, produce
from training.card import ModelCard, card_path
from training.data import (
    LabelledImage,
    PoseDataset,
    download_labelled,
    scan_folder,
    stratified_split,
)
from training.metrics import classification_report
from training.publish import PublishRefused, publish
from training.synthetic import generate


def test_report_counts_are_exact():
    report = classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert report["per_class"]["b"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2,
    }
    assert report["per_class"]["c"]["f1"] == 0.0
    assert report["weighted"]["recall"] == pytest.approx(0.6)


def test_split_is_stratified_and_seeded(tmp_path):
    items = [
        LabelledImage(tmp_path / f"{p}-{i}.jpg", p) for p in ("1", "2", "5") for i in range(10)
    ]
    train, val = stratified_split(items, val_fraction=0.2, seed=3)
    assert sorted(i.pose_id for i in val) == ["1", "1", "2", "2", "5", "5"]
    assert stratified_split(items, val_fraction=0.2, seed=3) == (train, val)
    assert stratified_split(items, val_fraction=0.2, seed=4) != (train, val)
    assert not set(train) & set(val)


def test_flips_take_the_mirror_label(tmp_path):
    photo = next(generate(1, seed=1, sizes=((120, 160),), pose_ids=("22",)))
    path = tmp_path / "qt.jpg"
    path.write_bytes(photo.data)
    mapping = ClassMapping.for_poses(["22", "23", "2"])
    flipping = PoseDataset(
        [LabelledImage(path, "22")] * 40, mapping, input_size=64, flip=True, seed=0
    )
    labels = {flipping[i][1] for i in range(40)}
    assert labels == {0, 1}  # Quarter Turn Left, and mirrored: Quarter Turn Right
    plain = PoseDataset([LabelledImage(path, "22")], mapping, input_size=64)
    for i in range(40):
        pixels, label = flipping[i]
        if label == 1:
            assert torch.equal(pixels, torch.flip(plain[0][0], dims=[2]))


def test_a_folder_of_phone_photos_trains_on_heic_and_avif_too(tmp_path):
    from posefleet.preprocess import decode_image
    from tests.images import heif, photo

    # Given labelled photos as phones save them, some turned, beside a JPEG and a stray file
    upright = {
        name: photo((160, 120), seed=i, pose_id=pose)
        for i, (name, pose) in enumerate(
            [("22/IMG_0001.HEIC", "22"), ("22/b.avif", "22"), ("2/c.heif", "2"), ("2/d.hif", "2")]
        )
    }
    files = {
        "22/IMG_0001.HEIC": heif(upright["22/IMG_0001.HEIC"], transform=6),
        "22/b.avif": heif(upright["22/b.avif"], transform=8, fmt="AVIF"),
        "2/c.heif": heif(upright["2/c.heif"]),
        "2/d.hif": heif(upright["2/d.hif"], transform=3),
        "2/e.jpg": next(generate(1, seed=5, sizes=((160, 120),), pose_ids=("2",))).data,
        "2/notes.txt": b"not a photo",
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)

    # When training scans the folder and loads it
    items = scan_folder(tmp_path)
    dataset = PoseDataset(items, ClassMapping.for_poses(["2", "22"]), input_size=64)

    # Then every photo is listed but the stray file, each decoded by the one preprocessing
    # function, upright
    listed = sorted(str(i.path.relative_to(tmp_path)) for i in items)
    assert listed == sorted(set(files) - {"2/notes.txt"})
    for i, item in enumerate(items):
        pixels, label = dataset[i]
        assert torch.equal(pixels, decode_image(item.path.read_bytes(), input_size=64).pixels)
        assert label == (1 if item.pose_id == "22" else 0)
        name = str(item.path.relative_to(tmp_path))
        if name in upright:
            expected = np.asarray(upright[name].resize((64, 64), Image.Resampling.BILINEAR))
            diff = np.abs(pixels.permute(1, 2, 0).numpy().astype(np.float32) - expected).mean()
            assert diff < 8, name


def test_s3_download_resumes_and_counts_unlabeled(s3, queues, tmp_path):
    photos = list(generate(6, seed=2, sizes=((64, 48),), pose_ids=("2", "5")))
    labels = {}
    for i, photo in enumerate(photos):
        s3.put_object(Bucket=INPUT, Key=f"poses/{i}.jpg", Body=photo.data)
        if i < 4:
            labels[f"{INPUT}/poses/{i}.jpg"] = photo.pose_id
    s3.put_object(Bucket=MODELS, Key="other/x.jpg", Body=photos[0].data)
    labels[f"{INPUT}/poses/5.jpg"] = "999"  # a pose id that does not exist
    sources = [(INPUT, "poses/"), (MODELS, "other/")]
    items, summary = download_labelled(s3, sources, labels, tmp_path, progress=False)
    assert (summary.downloaded, summary.skipped_present, summary.unknown_pose) == (4, 0, 1)
    assert dict(summary.unlabeled) == {INPUT: 1, MODELS: 1}
    assert sorted(i.pose_id for i in items) == sorted(p.pose_id for p in photos[:4])
    assert all(
        i.path.read_bytes() == photos[int(i.path.stem.rsplit("__", 1)[1])].data for i in items
    )
    _, again = download_labelled(s3, sources, labels, tmp_path, progress=False)
    assert (again.downloaded, again.skipped_present) == (0, 4)


def test_cleanse_deletes_only_after_the_typed_confirmation(
    s3, queues, tmp_path, monkeypatch, capsys
):
    from training.__main__ import main

    for i in range(5):
        s3.put_object(Bucket=INPUT, Key=f"c/{i}.jpg", Body=b"x" * (i + 1))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({f"{INPUT}/c/0.jpg": "2", f"{INPUT}/c/1.jpg": "5"}))
    args = ["cleanse", "--source", f"s3://{INPUT}/c/", "--labels", str(labels)]

    assert main(args) == 0  # a dry run by default
    report = json.loads(capsys.readouterr().out)
    assert report == [
        {"bucket": INPUT, "total": 5, "labeled": 2, "unlabeled": 3, "unlabeled_bytes": 3 + 4 + 5}
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n"))
    assert main([*args, "--delete"]) == 1
    assert s3.list_objects_v2(Bucket=INPUT, Prefix="c/")["KeyCount"] == 5
    monkeypatch.setattr(sys, "stdin", io.StringIO("delete 3\n"))
    assert main([*args, "--delete"]) == 0
    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=INPUT, Prefix="c/")["Contents"])
    assert left == ["c/0.jpg", "c/1.jpg"]


def fake_card(checkpoint: Path, accuracy: float) -> None:
    mapping = ClassMapping(("2", "5"))
    save_checkpoint(
        checkpoint, model=build_model("resnet18", 2), arch="resnet18", class_mapping=mapping
    )
    report = classification_report([0, 1], [0, 1], mapping.names)
    report["accuracy"] = accuracy
    card = ModelCard(
        model_version=f"v{int(accuracy * 100)}",
        arch="resnet18",
        classes=list(mapping.classes),
        class_names=list(mapping.names),
        input_size=224,
        data={},
        evaluation=report,
        history={},
        settings={},
        versions={},
        training_seconds=1.0,
        created_at="now",
    )
    card_path(checkpoint).write_text(card.model_dump_json())


@pytest.mark.slow
def test_publish_refuses_a_worse_model_unless_forced(s3, queues, tmp_path):
    good, worse, weak = tmp_path / "good.pt", tmp_path / "worse.pt", tmp_path / "weak.pt"
    fake_card(good, 0.97)
    fake_card(worse, 0.91)
    fake_card(weak, 0.5)
    models = f"s3://{MODELS}"
    first = publish(s3, good, models, min_accuracy=0.8)
    assert first.previous_accuracy is None
    pointer = json.loads(
        s3.get_object(Bucket=MODELS, Key="pose_classifier/current.json")["Body"].read()
    )
    assert pointer["version"] == "v97" and pointer["checkpoint"].endswith(
        "pose_classifier/v97/model.pt"
    )
    with pytest.raises(PublishRefused, match="worse than the current"):
        publish(s3, worse, models, min_accuracy=0.8)
    with pytest.raises(PublishRefused, match="below the bar"):
        publish(s3, weak, models, min_accuracy=0.8, force=False)
    assert publish(s3, worse, models, min_accuracy=0.8, force=True).previous_accuracy == 0.97
    pointer = json.loads(
        s3.get_object(Bucket=MODELS, Key="pose_classifier/current.json")["Body"].read()
    )
    assert pointer["version"] == "v91"
    assert (
        s3.get_object(Bucket=MODELS, Key="pose_classifier/v91/model.pt")["Body"].read()
        == worse.read_bytes()
    )


QUICK_POSES = ("1", "2", "14", "20")  # four poses whose arms differ at a glance


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real training run on synthetic photos, small enough for this CPU."""
    from training.train import run_training

    root = tmp_path_factory.mktemp("synthetic")
    items = []
    # A from-scratch ResNet needs examples more than pixels: many small photos, 96 px input.
    sizes = ((160, 120), (120, 160), (200, 150))
    for i, photo in enumerate(generate(4 * 250, seed=11, sizes=sizes, pose_ids=QUICK_POSES)):
        path = root / photo.pose_id / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo.data)
        items.append(LabelledImage(path, photo.pose_id))
    from training.engine import bf16_supported

    # the demo's recipe (one-cycle to 2e-3, label smoothing), in bfloat16 where the CPU has it
    settings = TrainingSettings(
        arch="resnet18",
        input_size=96,
        lr=2e-3,
        lr_schedule="onecycle",
        label_smoothing=0.1,
        precision="bf16" if bf16_supported() else "fp32",
        epochs=5,
        patience=3,
        batch_size=32,
        seed=0,
    )
    out = tmp_path_factory.mktemp("model") / "pose_classifier.pt"
    return run_training(items, settings, out, say=lambda s: print(s), progress=False)


@pytest.mark.slow
def test_training_reaches_95_percent_on_synthetic_poses(trained):
    print(
        f"\nvalidation accuracy {trained.card.evaluation.accuracy:.1%} after "
        f"{len(trained.card.history['epochs'])} epochs, {trained.card.training_seconds:.0f}s"
    )
    assert trained.card.evaluation.accuracy >= 0.95


@pytest.mark.slow
def test_the_card_validates_and_the_charts_render(trained):
    card = ModelCard.model_validate_json(card_path(trained.checkpoint).read_text())
    assert card.classes == list(QUICK_POSES) and card.data["train"] + card.data["val"] == 1000
    stem = trained.checkpoint.with_suffix("")
    for suffix in (".confusion.png", ".per_class.png"):
        image = Image.open(f"{stem}{suffix}")
        assert image.width > 300 and image.height > 150
        assert np.asarray(image.convert("L")).std() > 10  # not blank
    confusion = json.loads(Path(f"{stem}.confusion.json").read_text())
    assert sum(map(sum, confusion["matrix"])) == card.data["val"]


def serve_published(trained, stack, processes, name: str, **env: str) -> tuple[str, dict]:
    """Publish the trained checkpoint (and whatever lies beside it) to a fresh models bucket,
    put its validation photos under ``<name>/`` and let a worker that resolves the current
    pointer serve job ``name``; returns the published version and the result lines by file."""
    models = f"models-{name}-{stack.suffix}"
    stack.s3.create_bucket(Bucket=models)
    published = publish(stack.s3, trained.checkpoint, f"s3://{models}", min_accuracy=0.0)
    for item in trained.val_items:
        stack.s3.put_object(
            Bucket=stack.input, Key=f"{name}/{item.path.name}", Body=item.path.read_bytes()
        )
    settings = stack.env(
        POSEFLEET_MODEL=published.pointer_uri,
        POSEFLEET_MODEL_CACHE_DIR=str(trained.checkpoint.parent / f"cache-{name}"),
        **env,
    )
    worker = processes.worker(name, settings, "--exit-when-idle", "3")
    produce(stack, f"{name}/", name, task_size=20)
    assert worker.popen.wait(timeout=180) == 0
    lines = {line.key.removeprefix(f"{name}/"): line for line in all_lines(stack, name)}
    assert len(lines) == len(trained.val_items)
    return published.version, lines


@pytest.mark.slow
@pytest.mark.e2e
def test_the_worker_serves_the_published_model_with_trainings_predictions(
    trained, stack, processes
):
    # Given the trained checkpoint published, when a worker serves its validation photos
    version, lines = serve_published(trained, stack, processes, "val")
    # Then it predicts exactly what training's evaluation predicted, with the published version
    for item, predicted in zip(trained.val_items, trained.val_predictions, strict=True):
        line = lines[item.path.name]
        assert line.model_version == version
        assert line.predicted_class_index == predicted, item.path.name


@pytest.fixture(scope="module")
def quantized(trained):
    """``python -m training quantize`` over the trained model and the folder it learned from."""
    pytest.importorskip("nncf", reason="pip install 'posefleet[quantize]'")
    from training.__main__ import main

    data = trained.val_items[0].path.parent.parent
    argv = ["quantize", "--checkpoint", str(trained.checkpoint), "--data", str(data)]
    assert main(argv) == 0
    return int8_paths(trained.checkpoint)


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_the_held_out_photos(trained, quantized):
    from posefleet.int8 import read_int8

    _, info = read_int8(trained.checkpoint, trained.card.model_version)
    print(
        f"\nint8 top-1 agreement with fp32 on {info.heldout_images} held-out: {info.agreement:.2%}"
    )
    assert info.heldout_images == len(trained.val_items)  # training's own validation split
    assert info.agreement >= 0.99 and info.calibration_images > 0


@pytest.mark.slow
@pytest.mark.e2e
def test_an_int8_worker_serves_the_published_int8_model(trained, quantized, stack, processes):
    # Given the checkpoint and its int8 model published together, when a worker with the int8
    # backend serves the validation photos
    version, lines = serve_published(
        trained, stack, processes, "val8", POSEFLEET_BACKEND="openvino-int8"
    )
    # Then it downloaded the int8 model beside the checkpoint, says so in every result, and
    # agrees with training's fp32 predictions on at least 99% of the photos
    assert {line.model_version for line in lines.values()} == {
        int8_version(version, trained.checkpoint)
    }
    same = sum(
        lines[item.path.name].predicted_class_index == predicted
        for item, predicted in zip(trained.val_items, trained.val_predictions, strict=True)
    )
    assert same / len(trained.val_items) >= 0.99


def test_quantize_refuses_a_bar_above_one(checkpoint_path, tmp_path, capsys):
    pytest.importorskip("nncf", reason="pip install 'posefleet[quantize]'")
    from tests.images import jpeg
    from training.__main__ import main

    for pose in ("1", "2"):
        (tmp_path / pose).mkdir()
        (tmp_path / pose / "a.jpg").write_bytes(jpeg())
    argv = ["quantize", "--checkpoint", str(checkpoint_path), "--data", str(tmp_path)]
    assert main([*argv, "--min-agreement", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == ("training: min_agreement must be in (0, 1], got 1.5")
    assert not any(p.exists() for p in int8_paths(checkpoint_path))


def test_predict_prints_and_draws(checkpoint_path, tmp_path, capsys):
    from tests.images import jpeg
    from training.__main__ import main

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg((300, 400)))
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint_path),
                str(photo),
                "--out",
                str(tmp_path / "p.png"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Predicted pose:" in out and out.count("%") >= 12
    assert Image.open(tmp_path / "p.png").width > 500
