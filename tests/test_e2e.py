"""End to end: moto's server, the real producer and real worker processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from posefleet.layout import ResultsLocation
from posefleet.resources import QueueSpec
from posefleet.result import load_lines
from tests.conftest import Stack
from tests.helpers import all_lines, produce, upload
from tests.images import good_variants, jpeg

pytestmark = pytest.mark.e2e


def test_pipeline_classifies_every_image_once_and_isolates_bad_input(
    stack, processes, checkpoint_path
):
    # Given photos of every kind, two broken files and a message that is no task
    files = {f"job/good/{name}": data for name, data in good_variants().items()}
    files.update({f"job/synthetic/{i:03d}.jpg": jpeg((480, 640), seed=i) for i in range(12)})
    files["job/bad/corrupt.jpg"] = files["job/good/plain.jpg"][:300]
    files["job/bad/notes.png"] = b"<html>Service Unavailable</html>"
    keys = upload(stack.s3, bucket=stack.input, files=files)
    stack.sqs.send_message(QueueUrl=stack.queues.queue_url, MessageBody="{not a task")

    # When the producer enqueues the prefix and three workers serve it, racing to finish it
    env = stack.env(POSEFLEET_MODEL=str(checkpoint_path), POSEFLEET_BATCH_SIZE="8")
    workers = [processes.worker(f"w{i}", env, "--exit-when-idle", "4") for i in range(3)]
    produce(stack, "job/", "e2e")
    for w in workers:
        assert w.popen.wait(timeout=240) == 0

    # Then every image has exactly one line, naming its key
    lines = all_lines(stack, "e2e")
    assert sorted(line.key for line in lines) == keys
    by_key = {line.key: line for line in lines}
    assert by_key["job/bad/corrupt.jpg"].error_kind == "truncated"
    assert by_key["job/bad/notes.png"].error_kind == "not_an_image"
    good = [line for line in lines if "/bad/" not in line.key]
    assert [x.error_message for x in good if x.status != "ok"] == []
    assert by_key["job/good/phone-4032x3024.jpg"].original_size == (4032, 3024)
    assert all(abs(sum(line.all_probabilities.values()) - 1) < 1e-3 for line in good)
    # the queue is empty, the poison message is in the dead-letter queue, nothing else is
    assert stack.count(stack.queues.queue_url) == 0
    dead = stack.sqs.receive_message(QueueUrl=stack.queues.dlq_url, MaxNumberOfMessages=10)[
        "Messages"
    ]
    assert [m["Body"] for m in dead] == ["{not a task"]
    # and the EMF metrics the workers printed account for every image
    processed = sum(doc.get("ImagesProcessed", 0) for w in workers for doc in w.emf())
    assert processed == len(keys)
    # and exactly one of the three told the application the job is done, with its counts
    from posefleet.events import JobFinished, parse_event

    got = stack.sqs.receive_message(
        QueueUrl=stack.queues.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", [])
    finished = [e for e in (parse_event(m["Body"]) for m in got) if isinstance(e, JobFinished)]
    assert [(e.job_id, e.state, e.images_ok, e.images_failed) for e in finished] == [
        ("e2e", "complete", len(keys) - 2, 2)
    ]
    assert sum(1 for w in workers if w.events("job_finished")) == 1


def test_sigterm_drains_within_the_grace_and_hands_the_rest_back_at_once(
    moto_server, processes, resnet50_path
):
    # Given a long visibility timeout, so waiting for it would fail this test
    stack = Stack(
        moto_server, QueueSpec(visibility_timeout=600, max_receive_count=5, receive_wait_seconds=1)
    )
    keys = upload(
        stack.s3,
        bucket=stack.input,
        files={f"term/{i:03d}.jpg": jpeg((640, 480), seed=i) for i in range(120)},
    )
    env = stack.env(
        POSEFLEET_MODEL=str(resnet50_path),
        POSEFLEET_VISIBILITY_TIMEOUT="600",
        POSEFLEET_DRAIN_SECONDS="2",
        POSEFLEET_BATCH_SIZE="4",
        # Hold 60 images (about 5 s of work here), more than the grace can finish: with the
        # default work bound (2 batches) an idle machine drained all of it and released none.
        POSEFLEET_PREFETCH_BATCHES="15",
    )
    first = processes.worker("first", env)
    produce(stack, "term/", "drain", task_size=4)
    first.wait_for("task_done", timeout=120)

    # When it gets SIGTERM in the middle of its work
    sent = time.monotonic()
    first.popen.send_signal(signal.SIGTERM)
    code = first.popen.wait(timeout=30)
    took = time.monotonic() - sent

    # Then it exits 0 within the grace, having released what it held
    assert code == 0
    assert took < 2 + 10, f"took {took:.1f}s"
    (stopped,) = first.events("worker_stopped")
    assert stopped["released_at_stop"] > 0
    # and another worker finishes the job long before the 600 s visibility timeout
    second = processes.worker("second", env, "--exit-when-idle", "3")
    assert second.popen.wait(timeout=240) == 0
    lines = all_lines(stack, "drain")
    assert sorted(line.key for line in lines) == keys
    assert stack.count(stack.queues.queue_url) == 0


def test_worker_memory_stays_bounded_on_phone_photos(stack, processes, checkpoint_path):
    files = {
        f"mem/{i:03d}.jpg": jpeg((4032, 3024) if i % 3 == 0 else (1080, 1920), seed=i)
        for i in range(60)
    }
    upload(stack.s3, bucket=stack.input, files=files)
    env = stack.env(POSEFLEET_MODEL=str(checkpoint_path))
    worker = processes.worker("mem", env, "--exit-when-idle", "3")
    produce(stack, "mem/", "mem", task_size=10)
    assert worker.popen.wait(timeout=240) == 0
    (stopped,) = worker.events("worker_stopped")
    peak = stopped["peak_rss_mib"]
    print(f"\npeak RSS of a worker over {len(files)} images (1 in 3 at 12 MP): {peak} MiB")
    assert stopped["images"] == len(files)
    assert stopped["peak_rss_mib"] < 2048


def test_make_demo_accounts_for_every_image(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "localfleet.demo", "--images", "24", "--model", "untrained"],
        cwd=tmp_path,
        env={k: v for k, v in __import__("os").environ.items() if not k.startswith("AWS_")}
        | {"PYTHONPATH": str(__import__("pathlib").Path.cwd())},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "every image once   yes" in out.stdout
    assert "result lines       26 (24 ok, 2 errors)" in out.stdout
    for name in ("results.csv", "report.html", "dashboard.html"):  # left behind, and named
        assert (tmp_path / ".demo" / name).stat().st_size > 0
        assert f".demo/{name}" in out.stdout
    assert len((tmp_path / ".demo" / "results.csv").read_text().splitlines()) == 1 + 26


def test_an_upload_during_a_backfill_is_labelled_first_and_the_application_told(
    stack, processes, checkpoint_path
):
    from posefleet.events import ImageLabelled, parse_event

    # Given uploads under uploads/ routed to the live lane, as infra/ routes them
    live_arn = stack.sqs.get_queue_attributes(
        QueueUrl=stack.queues.live_queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    stack.s3.put_bucket_notification_configuration(
        Bucket=stack.input,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": live_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}},
                }
            ]
        },
    )
    # and a worker busy with a backfill job
    keys = upload(
        stack.s3,
        bucket=stack.input,
        files={f"old/{i:03d}.jpg": jpeg((320, 240), seed=i) for i in range(56)},
    )
    env = stack.env(POSEFLEET_MODEL=str(checkpoint_path), POSEFLEET_BATCH_SIZE="8")
    worker = processes.worker("w", env, "--exit-when-idle", "4")
    produce(stack, "old/", "backfill", task_size=8)
    worker.wait_for("task_done", timeout=180)

    # When a photo, a broken one and a body that is no event arrive on the live lane
    upload(stack.s3, bucket=stack.input, files={"uploads/new photo.jpg": jpeg(seed=99)})
    upload(
        stack.s3, bucket=stack.input, files={"uploads/broken.jpg": b"\xff\xd8\xff\xe0 not really"}
    )
    stack.sqs.send_message(QueueUrl=stack.queues.live_queue_url, MessageBody="{not an event")
    assert worker.popen.wait(timeout=240) == 0

    # Then each upload has its result at its own key, ahead of the backfill's end
    loc = ResultsLocation.parse(stack.results_uri)
    (ok,) = load_lines(
        stack.s3.get_object(
            Bucket=stack.results, Key=loc.live_key(stack.input, "uploads/new photo.jpg")
        )["Body"].read()
    )
    (bad,) = load_lines(
        stack.s3.get_object(
            Bucket=stack.results, Key=loc.live_key(stack.input, "uploads/broken.jpg")
        )["Body"].read()
    )
    assert (ok.status, bad.error_kind) == ("ok", "truncated")
    done = worker.events("task_done")
    order = [e["job"] for e in done]
    assert order.count("backfill") == 7 and order.count("stream") == 2
    assert order.index("stream") < len(order) - 3, order  # not behind the whole backlog
    assert sorted(line.key for line in all_lines(stack, "backfill")) == keys
    # and the application heard of both, with their result lines inline
    got = stack.sqs.receive_message(
        QueueUrl=stack.queues.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2
    )["Messages"]
    events = {
        e.key: e for e in (parse_event(m["Body"]) for m in got) if isinstance(e, ImageLabelled)
    }
    assert sorted(events) == ["uploads/broken.jpg", "uploads/new photo.jpg"]
    assert events["uploads/broken.jpg"].result.error_kind == "truncated"
    assert events["uploads/new photo.jpg"].result == ok
    # the body that was no event is in the live lane's dead-letter queue, with its reason
    (dead,) = stack.sqs.receive_message(
        QueueUrl=stack.queues.live_dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    assert dead["Body"] == "{not an event"
    assert "not JSON" in dead["MessageAttributes"]["posefleet-reason"]["StringValue"]
