"""The local fleet: `python -m localfleet` as a user runs it, the producer's commands against it
from other processes, its buckets kept across restarts, and nothing left behind when it stops."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch

from localfleet.mirror import BucketMirror
from localfleet.watch import FolderWatch, LabelPrinter
from mappings import ClassMapping
from posefleet.aws import client
from posefleet.checkpoint import build_model, file_version
from posefleet.events import EventChannel, ImageLabelled, image_event_id
from posefleet.local import route_uploads, subscribe_queue
from posefleet.result import ErrorKind, ImageError, ResultLine
from posefleet.task import parse_message
from tests.conftest import INPUT
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

        # and the fleet samples both lanes' queues for its dashboard, which it writes
        wait_until(lambda: (state / "dashboard.html").exists(), "the dashboard page")
        samples = [json.loads(x) for x in (state / "logs" / "queues.emf").read_text().splitlines()]
        assert {s["QueueName"] for s in samples} == {
            "posefleet-tasks",
            "posefleet-tasks-dlq",
            "posefleet-live",
            "posefleet-live-dlq",
        }

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


def lines_of(path: Path, start: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith(start)]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_photo_dropped_into_the_watched_folder_is_labelled_printed_and_announced(
    tmp_path, monkeypatch
):
    # Given a watched folder that already holds one photo (the back catalogue) and a fleet of
    # one worker serving a seed-format model
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "old.jpg").write_bytes(jpeg((320, 240), seed=1))
    version = seed_checkpoint(tmp_path / "model")
    state, stdout, stderr = tmp_path / "state", tmp_path / "fleet.out", tmp_path / "fleet.err"
    fleet = subprocess.Popen(
        [
            *(sys.executable, "-m", "localfleet", "--photos", str(photos), "--watch"),
            *("--workers", "1", "--state", str(state)),
            *("--checkpoint", str(tmp_path / "model" / "pose_classifier.pth")),
        ],
        env=clean_env(
            POSEFLEET_FLEET_SAMPLE_SECONDS="0.5",
            POSEFLEET_FLEET_DRAIN_SECONDS="5",
            POSEFLEET_WAIT_TIME_SECONDS="1",  # the workers' long polls: a quicker drain
        ),
        stdout=stdout.open("wb"),
        stderr=stderr.open("wb"),
        cwd=tmp_path,
    )
    started: dict[int, list[str]] = {}
    try:
        exported = wait_for_exports(fleet, stdout, stderr)
        live = {"POSEFLEET_LIVE_QUEUE_URL", "POSEFLEET_EVENTS_TOPIC", "POSEFLEET_EVENTS_QUEUE_URL"}
        assert live <= set(exported)
        assert exported["POSEFLEET_LIVE_QUEUE_URL"].endswith("/posefleet-live")
        env_sh = (state / "env.sh").read_text()
        assert f"export POSEFLEET_EVENTS_TOPIC={exported['POSEFLEET_EVENTS_TOPIC']}" in env_sh
        log = state / "logs" / "worker-0.log"
        wait_until(lambda: "worker_started" in _text(log), "worker", timeout=120)

        # When a photo is dropped into the folder (a nested one, a space in its name), and a
        # file that is no photo
        (photos / "new").mkdir()
        (photos / "new" / "check in.jpg").write_bytes(jpeg((240, 320), seed=2))
        (photos / "notes.jpg").write_bytes(b"not a photo\n")

        # Then each one's label is printed as its event arrives
        new, bad = "s3://posefleet-input/new/check in.jpg", "s3://posefleet-input/notes.jpg"
        wait_until(lambda: len(lines_of(stdout, "s3://")) >= 2, "printed labels", timeout=60)
        printed = {line.split(": ", 1)[0]: line for line in lines_of(stdout, "s3://")}
        assert set(printed) == {new, bad}, stdout.read_text()
        assert printed[bad].startswith(f"{bad}: error not_an_image")
        assert "s after upload" in printed[new]

        # and `python -m producer label` answers from another shell with the same result
        shell = clean_env(**exported)

        def label(photo: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "producer", "label", photo, "--wait", "5"],
                env=shell,
                capture_output=True,
                text=True,
                timeout=60,
            )

        answer = label(new)
        assert answer.returncode == 0, answer.stderr
        line = json.loads(answer.stdout)
        assert (line["status"], line["model_version"]) == ("ok", version)
        assert printed[new].startswith(f"{new}: {line['predicted_class_name']} (")
        assert json.loads(label(bad).stdout)["error_kind"] == "not_an_image"
        # and the back catalogue was not sent to the live lane
        assert label("s3://posefleet-input/old.jpg").returncode == 3

        # and `python -m producer events` still has every event: the watch read its own queue
        events = subprocess.run(
            [sys.executable, "-m", "producer", "events"],
            env=shell,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert events.returncode == 0, events.stderr
        got = [json.loads(x) for x in events.stdout.splitlines()]
        assert sorted(f"s3://{e['bucket']}/{e['key']}" for e in got) == [new, bad]

        # and a body on the live queue that is no upload goes to the live dead-letter queue,
        # with its reason, where `redrive --peek` on the live lane finds it
        live_queue = exported["POSEFLEET_LIVE_QUEUE_URL"]
        for name, value in exported.items():
            monkeypatch.setenv(name, value)
        client("sqs").send_message(QueueUrl=live_queue, MessageBody="{not an upload")

        def dead_letters() -> list[dict]:
            peek = subprocess.run(
                [sys.executable, "-m", "producer", "redrive", "--peek", "--queue-url", live_queue],
                env=shell,
                capture_output=True,
                text=True,
                timeout=60,
            )
            return [json.loads(x) for x in peek.stdout.splitlines()]

        wait_until(lambda: len(dead_letters()) == 1, "a live dead letter", timeout=60)
        (letter,) = dead_letters()
        assert letter["body"] == "{not an upload" and "not JSON" in letter["reason"]

        # When it gets SIGTERM, it stops everything it started
        started = descendants(fleet.pid)
        fleet.send_signal(signal.SIGTERM)
        assert fleet.wait(timeout=60) == 0, stderr.read_text()[-3000:]
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.wait()
    assert {pid: cmd for pid, cmd in started.items() if alive(pid)} == {}


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_uploads_after_routing_go_to_the_live_lane_and_only_those(s3, sqs, queues):
    # Given a photo already in the bucket (back catalogue)

    s3.put_object(Bucket=INPUT, Key="before.jpg", Body=b"1")

    # When the bucket's uploads are routed to the live lane and a photo is uploaded
    route_uploads(s3, sqs, bucket=INPUT, queue_url=queues.live_queue_url)
    s3.put_object(Bucket=INPUT, Key="after/check in.jpg", Body=b"2")

    # Then the live queue holds S3's test event and that one upload, as a task the worker reads
    parsed = [
        parse_message(body, stream_job="stream", stream_results="s3://r/x")
        for body in bodies(sqs, queues.live_queue_url)
    ]
    assert sorted(p.kind for p in parsed) == ["s3_event", "s3_test_event"]
    (task,) = [t for p in parsed for t in p.tasks]
    assert (task.bucket, task.keys) == (INPUT, ("after/check in.jpg",))
    assert task.upload and task.enqueued_at  # the event's ETag and time: the event id, latency
    assert bodies(sqs, queues.queue_url) == []


def test_folder_watch_uploads_new_and_changed_files_once_settled(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "old.jpg").write_bytes(b"old")
    sent: list[tuple[str, bytes]] = []
    now = [time.time() + 10]  # every file written so far has settled
    watch = FolderWatch(
        folder=folder,
        prefix="in/",
        upload=lambda path, key: sent.append((key, path.read_bytes())),
        settle_seconds=0.3,
        clock=lambda: now[0],
    )
    assert watch.prime() == 1
    assert watch.poll() == []  # what was there at start is not uploaded again

    # a new file, a nested one, a hidden one
    (folder / "sub" / "a b.jpg").write_bytes(b"new")
    (folder / ".partial.jpg").write_bytes(b"hidden")
    (folder / "sub" / ".DS_Store").write_bytes(b"hidden")
    now[0] = time.time() + 10
    assert watch.poll() == ["in/sub/a b.jpg"]
    assert watch.poll() == []

    # a changed file is uploaded again, once it has been left alone for the settle time
    (folder / "old.jpg").write_bytes(b"changed, longer")
    now[0] = time.time()  # written just now: still being written, perhaps
    assert watch.poll() == []
    now[0] = time.time() + 1
    assert watch.poll() == ["in/old.jpg"]
    assert sent == [("in/sub/a b.jpg", b"new"), ("in/old.jpg", b"changed, longer")]

    # a file removed and put back is new again
    (folder / "old.jpg").unlink()
    assert watch.poll() == []
    (folder / "old.jpg").write_bytes(b"changed, longer")
    now[0] = time.time() + 10
    assert watch.poll() == ["in/old.jpg"]


def test_label_printer_prints_each_event_once_and_says_what_is_no_event(queues, sqs):
    # Given a queue of the printer's own on the events topic, and an event published twice
    # (delivery is at least once), a broken upload's event and a body that is no event

    sns = client("sns")
    mine = subscribe_queue(sqs, sns, topic_arn=queues.events_topic, queue_name="mine")
    up = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    ok = ResultLine(
        bucket=INPUT,
        key="a.jpg",
        status="ok",
        model_version="v1",
        predicted_class_index=0,
        predicted_class_id="1",
        predicted_class_name="front_double_biceps",
        confidence=0.931,
    )
    bad = ResultLine.error(INPUT, "b.jpg", ImageError(ErrorKind.TRUNCATED, "cut short"))

    def event(line: ResultLine) -> ImageLabelled:
        return ImageLabelled(
            id=image_event_id(INPUT, line.key, "etag", "v1"),
            bucket=INPUT,
            key=line.key,
            result=line,
            result_uri=f"s3://r/live/{INPUT}/{line.key}.json",
            uploaded_at=up,
            received_at=up + timedelta(seconds=0.2),
            labelled_at=up + timedelta(seconds=0.84),
        )

    channel = EventChannel(sns=sns, topic_arn=queues.events_topic)
    for e in (event(ok), event(ok), event(bad)):
        channel.publish(e)
    sqs.send_message(QueueUrl=mine, MessageBody='{"hello": 1}')

    # When the printer reads its queue
    out = io.StringIO()
    printer = LabelPrinter(sqs=sqs, queue_url=mine, out=out)
    while printer.once(wait_seconds=0):
        pass

    # Then each photo is printed once, with its pose or error and how long it took
    lines = out.getvalue().splitlines()
    assert sorted(lines) == sorted(
        [
            f"s3://{INPUT}/a.jpg: front_double_biceps (0.93), 0.84 s after upload",
            f"s3://{INPUT}/b.jpg: error truncated: cut short, 0.84 s after upload",
            next(x for x in lines if x.startswith("not a posefleet event")),
        ]
    )
    assert bodies(sqs, mine) == []  # read and deleted
    # and the fleet's events queue still has every event for `python -m producer events`
    assert len(bodies(sqs, queues.events_queue_url)) == 3


def bodies(sqs, url: str) -> list[str]:
    """Every message on the queue now, deleted."""
    out = []
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
        "Messages", []
    ):
        for message in got:
            out.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return out
