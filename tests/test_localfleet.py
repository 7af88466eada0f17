"""The local fleet: `python -m localfleet` as a user runs it, the producer's commands against it
from other processes, its buckets kept across restarts, and nothing left behind when it stops."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from localfleet.mirror import BucketMirror
from mappings import ClassMapping
from posefleet.checkpoint import build_model, file_version
from tests.images import jpeg
from tests.processes import descendants

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without AWS or posefleet settings: what a new shell has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POSEFLEET_"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def seed_checkpoint(folder: Path) -> str:
    """A small model in the seed's format: a bare state_dict and class_mapping.json beside it."""
    torch.manual_seed(0)
    mapping = ClassMapping.for_poses()
    folder.mkdir(parents=True)
    weights, mapping_file = folder / "pose_classifier.pth", folder / "class_mapping.json"
    torch.save(build_model("resnet18", len(mapping.classes)).state_dict(), weights)
    mapping_file.write_text(json.dumps(mapping.to_json()))
    return file_version(weights, mapping_file)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for_exports(fleet: subprocess.Popen[bytes], stdout: Path, stderr: Path) -> dict[str, str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = stdout.read_text().splitlines()
        if any(line.startswith("export POSEFLEET_MODEL=") for line in lines):
            return dict(
                shlex.split(line.removeprefix("export "))[0].split("=", 1)
                for line in lines
                if line.startswith("export ")
            )
        assert fleet.poll() is None, f"the fleet exited:\n{stderr.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"the fleet printed no environment:\n{stderr.read_text()[-3000:]}")


@pytest.mark.e2e
@pytest.mark.slow
def test_local_fleet_serves_a_folder_with_a_seed_checkpoint_and_stops_clean(tmp_path):
    # Given a folder of real JPEG photos (nested, a space in a name) and a seed-format model
    photos = tmp_path / "my photos"
    keys = []
    for i in range(10):
        rel = f"athlete-{i % 3}/check in {i}.jpg" if i % 2 else f"{i:02d}.jpg"
        (photos / rel).parent.mkdir(parents=True, exist_ok=True)
        (photos / rel).write_bytes(jpeg((320, 240) if i % 2 else (240, 320), seed=i))
        keys.append(rel)
    (photos / ".DS_Store").write_bytes(b"hidden: not uploaded")
    version = seed_checkpoint(tmp_path / "model")
    state = tmp_path / "state"

    # When the fleet starts with them, one worker, short periods
    stdout, stderr = tmp_path / "fleet.out", tmp_path / "fleet.err"
    fleet = subprocess.Popen(
        [
            *(sys.executable, "-m", "localfleet", "--photos", str(photos), "--workers", "1"),
            *("--checkpoint", str(tmp_path / "model" / "pose_classifier.pth")),
            *("--state", str(state)),
        ],
        env=clean_env(
            POSEFLEET_FLEET_SAMPLE_SECONDS="0.5",
            POSEFLEET_FLEET_SYNC_SECONDS="1",
            POSEFLEET_FLEET_DRAIN_SECONDS="5",
        ),
        stdout=stdout.open("wb"),
        stderr=stderr.open("wb"),
        cwd=tmp_path,
    )
    try:
        exported = wait_for_exports(fleet, stdout, stderr)
        assert exported["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")

        # and another process submits, waits and exports with only the printed environment
        shell = clean_env(**exported)
        submit = subprocess.run(
            [
                *(sys.executable, "-m", "producer", "--bucket", "posefleet-input"),
                *("--job-id", "mine", "--task-size", "4", "--wait", "--timeout", "240"),
            ],
            env=shell,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert submit.returncode == 0, submit.stderr[-3000:]
        out = tmp_path / "mine.csv"
        export = subprocess.run(
            [sys.executable, "-m", "producer", "export", "mine", "--out", str(out)],
            env=shell,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert export.returncode == 0, export.stderr[-3000:]

        # Then every photo has one result line, classified by the seed model's version
        rows = list(csv.DictReader(out.open(newline="")))
        assert sorted(r["key"] for r in rows) == sorted(keys)
        assert {r["status"] for r in rows} == {"ok"}
        assert {r["model_version"] for r in rows} == {version}

        # and the fleet samples both queues for its dashboard, which it writes
        wait_until(lambda: (state / "dashboard.html").exists(), "the dashboard page")
        samples = [json.loads(x) for x in (state / "logs" / "queues.emf").read_text().splitlines()]
        assert {s["QueueName"] for s in samples} == {"posefleet-tasks", "posefleet-tasks-dlq"}

        # When it gets SIGTERM, it stops everything it started and keeps the results
        started = descendants(fleet.pid)
        record = json.loads((state / "fleet.json").read_text())
        assert {record["moto_pid"], *record["worker_pids"]} <= set(started)
        assert any("posefleet.moto_server" in " ".join(c) for c in started.values())
        assert sum("-m worker" in " ".join(c) for c in started.values()) == 1
        fleet.send_signal(signal.SIGTERM)
        assert fleet.wait(timeout=120) == 0, stderr.read_text()[-3000:]
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.wait()
    left = {pid: cmd for pid, cmd in started.items() if alive(pid)}
    assert left == {}, f"left behind: {left}"
    kept = list((state / "s3" / "posefleet-results" / "results" / "mine" / "tasks").glob("*.jsonl"))
    assert len(kept) == 3  # 10 photos in tasks of 4

    # When it starts again (no workers needed), the job's results are there, on the same port
    again = subprocess.Popen(
        [sys.executable, "-m", "localfleet", "--workers", "0", "--state", str(state)],
        env=clean_env(),
        stdout=stdout.open("wb"),
        stderr=stderr.open("wb"),
        cwd=tmp_path,
    )
    try:
        assert wait_for_exports(again, stdout, stderr) == exported
        status = subprocess.run(
            [sys.executable, "-m", "producer", "status", "mine"],
            env=clean_env(**exported),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0, status.stderr[-3000:]
        assert json.loads(status.stdout)["images_done"] == len(keys)
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=60) == 0
    finally:
        if again.poll() is None:
            again.kill()
            again.wait()


def wait_until(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.2)


def test_bucket_mirror_brings_back_results_after_a_restart(tmp_path, monkeypatch):
    # Given a bucket with results, odd keys among them, copied into the state folder
    from moto import mock_aws

    from posefleet.aws import client
    from tests.conftest import FAKE_AWS

    for k, v in FAKE_AWS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    objects = {
        "results/job/tasks/a.jsonl": b'{"key": "a"}\n',
        "results/job/manifest.json": b"{}",
        "odd//double slash": b"1",
        "../escape": b"2",
        "folder/": b"",
    }
    root = tmp_path / "s3"
    with mock_aws():
        s3 = client("s3")
        s3.create_bucket(Bucket="kept")
        for key, body in objects.items():
            s3.put_object(Bucket="kept", Key=key, Body=body)
        mirror = BucketMirror(s3=s3, bucket="kept", root=root)
        assert mirror.sync() == (5, 0)
        assert mirror.sync() == (0, 0)  # nothing changed: nothing fetched
        s3.delete_object(Bucket="kept", Key="results/job/manifest.json")
        s3.put_object(Bucket="kept", Key="results/job/tasks/a.jsonl", Body=b'{"key": "b"}\n')
        assert mirror.sync() == (1, 1)
    assert (root / "kept" / "results" / "job" / "tasks" / "a.jsonl").read_bytes() == (
        b'{"key": "b"}\n'
    )
    assert not (root / "kept" / "results" / "job" / "manifest.json").exists()
    assert all(p.resolve().is_relative_to(root) for p in root.rglob("*"))

    # When a new, empty server starts and the copy is restored
    with mock_aws():
        s3 = client("s3")
        s3.create_bucket(Bucket="kept")
        assert BucketMirror(s3=s3, bucket="kept", root=root).restore() == 4

        # Then every object is back with its content
        listed = {o["Key"] for o in s3.list_objects_v2(Bucket="kept")["Contents"]}
        assert listed == set(objects) - {"results/job/manifest.json"}
        body = s3.get_object(Bucket="kept", Key="results/job/tasks/a.jsonl")["Body"].read()
        assert body == b'{"key": "b"}\n'
        assert s3.get_object(Bucket="kept", Key="../escape")["Body"].read() == b"2"
