"""The model's chain of custody: what a pointer may name, and every file it names checked against
its hash before the worker uses it (moto in-process; no model is loaded: refusals come first)."""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from posefleet.checkpoint import SEED_MAPPING_FILE
from posefleet.model_pointer import ModelPointer, ModelRefused
from tests.conftest import MODELS
from training.publish import upload_model
from worker.model_source import resolve_model

POINTER_KEY = "pose_classifier/current.json"
POINTER = f"s3://{MODELS}/{POINTER_KEY}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def published(s3, queues, tmp_path) -> dict[str, bytes]:
    """A checkpoint published with its int8 model and the seed's class mapping beside it."""
    files = {
        "model.pt": b"checkpoint bytes",
        "model.int8.xml": b"<net/>",
        "model.int8.bin": b"int8 weights",
        SEED_MAPPING_FILE: b'{"classes": ["2", "5"]}',
    }
    local = tmp_path / "trained"
    local.mkdir()
    for name, data in files.items():
        (local / name).write_bytes(data)
    upload_model(s3, local / "model.pt", f"s3://{MODELS}", version="v1")
    return files


def pointer_body(s3) -> dict:
    return json.loads(s3.get_object(Bucket=MODELS, Key=POINTER_KEY)["Body"].read())


def write_pointer(s3, body: dict) -> None:
    s3.put_object(Bucket=MODELS, Key=POINTER_KEY, Body=json.dumps(body).encode())


def test_publish_hashes_every_file_the_worker_may_fetch_and_the_worker_checks_each(
    s3, published, tmp_path
):
    body = pointer_body(s3)
    assert body["checkpoint"] == f"s3://{MODELS}/pose_classifier/v1/model.pt"
    assert body["files"] == {name: sha(data) for name, data in published.items()}
    assert body["sha256"] == sha(published["model.pt"])  # what older workers check

    resolved = resolve_model(POINTER, s3=s3, cache_dir=tmp_path / "cache", with_int8=True)

    assert resolved.sha256 == sha(published["model.pt"])
    assert sorted(resolved.verified) == sorted(published)
    assert resolved.path.read_bytes() == published["model.pt"]
    for name, data in published.items():
        assert (resolved.path.with_name(name)).read_bytes() == data


@pytest.mark.parametrize(
    ("checkpoint", "why"),
    [
        ("s3://pf-input/pose_classifier/v1/model.pt", "own bucket"),  # an upload bucket
        (f"s3://{MODELS}/pose_classifier/../uploads/model.pt", "path segment"),
        (f"s3://{MODELS}/pose_classifier/v1/./model.pt", "path segment"),
        ("https://attacker.example/model.pt", "not an s3:// URI"),
        ("/etc/passwd", "not an s3:// URI"),
        (f"s3://{MODELS}/uploads/model.pt", "outside the models prefix"),
        (f"s3://{MODELS}/pose_classifier_evil/model.pt", "outside the models prefix"),
    ],
)
def test_a_pointer_may_name_only_objects_under_the_models_prefix_of_its_bucket(
    s3, published, tmp_path, checkpoint, why
):
    body = pointer_body(s3)
    body["checkpoint"] = checkpoint
    write_pointer(s3, body)

    with pytest.raises(ModelRefused, match=why):
        resolve_model(POINTER, s3=s3, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing was fetched


@pytest.mark.parametrize(
    "name", ["model.pt", "model.int8.bin", "model.int8.xml", SEED_MAPPING_FILE]
)
def test_a_file_changed_after_publishing_is_refused(s3, published, tmp_path, name):
    # Given someone with write access to the bucket swaps one published file
    s3.put_object(Bucket=MODELS, Key=f"pose_classifier/v1/{name}", Body=b"swapped")

    with pytest.raises(ModelRefused, match=f"v1/{name} has SHA-256 {sha(b'swapped')}"):
        resolve_model(POINTER, s3=s3, cache_dir=tmp_path / "cache", with_int8=True)
    assert not list((tmp_path / "cache").rglob(name))  # the bad bytes never take a file's place


def test_a_tampered_cached_copy_is_fetched_again(s3, published, tmp_path):
    cache = tmp_path / "cache"
    first = resolve_model(POINTER, s3=s3, cache_dir=cache)
    first.path.write_bytes(b"tampered on disk")

    again = resolve_model(POINTER, s3=s3, cache_dir=cache)

    assert again.path.read_bytes() == published["model.pt"]


def test_workers_sharing_a_cache_resolve_the_same_model_at_once(s3, published, tmp_path):
    # Given four workers starting together on one cache directory, as the local fleet's do
    cache = tmp_path / "cache"
    start = threading.Barrier(4)

    def resolve(_: int):
        start.wait()
        return resolve_model(POINTER, s3=s3, cache_dir=cache, with_int8=True)

    # When they resolve the pointer at the same moment, each downloading what is not cached
    with ThreadPoolExecutor(4) as pool:
        resolved = list(pool.map(resolve, range(4)))

    # Then each has the checked model, and no download is left behind
    assert {r.path.read_bytes() for r in resolved} == {published["model.pt"]}
    assert not list(cache.rglob("*.part"))


def test_a_file_the_pointer_does_not_hash_is_not_fetched(s3, published, tmp_path):
    # Given a format-1 pointer: the checkpoint's hash alone
    body = pointer_body(s3)
    write_pointer(s3, {k: body[k] for k in ("checkpoint", "sha256", "version")})

    resolved = resolve_model(POINTER, s3=s3, cache_dir=tmp_path / "cache")
    assert resolved.verified == ("model.pt",)
    assert not resolved.path.with_name(SEED_MAPPING_FILE).exists()  # not hashed: not fetched
    with pytest.raises(ModelRefused, match="hashes no int8 model"):
        resolve_model(POINTER, s3=s3, cache_dir=tmp_path / "cache", with_int8=True)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"sha256": "0" * 63}, "no SHA-256"),
        ({"files": {"model.pt": "0" * 64}}, "'files' is not its 'sha256'"),
        ({"files": {"../model.pt": "0" * 64}}, "only plain names"),
        ({"files": ["model.pt"]}, "must map file names"),
    ],
)
def test_a_malformed_pointer_is_refused(s3, published, tmp_path, change, why):
    write_pointer(s3, {**pointer_body(s3), **change})
    with pytest.raises(ModelRefused, match=why):
        resolve_model(POINTER, s3=s3, cache_dir=tmp_path / "cache")


def test_a_pinned_hash_refuses_another_model_before_fetching_it(s3, published, tmp_path):
    pinned = sha(b"the model the stack was deployed with")

    with pytest.raises(ModelRefused, match=f"pins {pinned}"):
        resolve_model(POINTER, s3=s3, cache_dir=tmp_path / "cache", expected_sha256=pinned)
    assert not (tmp_path / "cache").exists()
    # and the pinned model itself is served
    ok = resolve_model(
        POINTER,
        s3=s3,
        cache_dir=tmp_path / "cache",
        expected_sha256=sha(published["model.pt"]).upper(),
    )
    assert ok.path.read_bytes() == published["model.pt"]


def test_the_worker_exits_non_zero_with_the_reason_when_the_pointer_is_not_the_pinned_model(
    s3, queues, published, tmp_path, monkeypatch, capsys
):
    from worker.__main__ import main

    pinned = sha(b"the model the stack was deployed with")
    monkeypatch.setenv("POSEFLEET_MODEL_SHA256", pinned)
    monkeypatch.setenv("POSEFLEET_MODEL_CACHE_DIR", str(tmp_path / "cache"))

    code = main(["--model", POINTER, "--queue-url", queues.queue_url])

    assert code != 0
    err = capsys.readouterr().err
    assert f"worker: refusing the model {POINTER}" in err
    assert f"pins {pinned}" in err and "POSEFLEET_MODEL_SHA256" in err


def test_the_pointer_round_trips(published, s3):
    body = pointer_body(s3)
    parsed = ModelPointer.parse(json.dumps(body).encode(), pointer_uri=POINTER)
    assert json.loads(parsed.to_json()) == body


def test_publish_refuses_a_location_that_is_not_s3(s3, tmp_path: Path):
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ModelRefused, match="s3:// location"):
        upload_model(s3, tmp_path / "model.pt", "https://example.com/models", version="v1")
