"""The live lane from the application's side: one photo's label, the events, urgent jobs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from posefleet.aws import client
from posefleet.events import EventChannel, ImageLabelled, image_event_id, parse_event
from posefleet.result import ErrorKind, ImageError, ResultLine, dump_lines
from posefleet.task import TaskMessage
from producer.live import read_label
from tests.conftest import INPUT, RESULTS
from tests.helpers import LOC, RESULTS_URI, drain, run, submit, upload

WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def ok(key: str) -> ResultLine:
    return ResultLine(
        bucket=INPUT,
        key=key,
        status="ok",
        model_version="v1",
        predicted_class_index=1,
        predicted_class_id="2",
        confidence=0.9,
    )


def test_label_prints_one_photos_line_or_says_there_is_none_yet(s3, queues, capsys):
    photo = f"s3://{INPUT}/uploads/a b.jpg"
    code, _, err = run(capsys, "label", photo, "--results", RESULTS_URI)
    assert code == 3 and "no label yet" in err and "live/pf-input/uploads/a b.jpg.json" in err

    # written while the command waits for it
    line = ok("uploads/a b.jpg")
    timer = threading.Timer(
        0.5,
        lambda: s3.put_object(
            Bucket=RESULTS, Key=LOC.live_key(INPUT, "uploads/a b.jpg"), Body=dump_lines([line])
        ),
    )
    timer.start()
    code, out, _ = run(capsys, "label", photo, "--results", RESULTS_URI, "--wait", "10")
    timer.join()
    assert code == 0 and ResultLine.model_validate(out) == line
    # a broken upload has its error line there too
    bad = ResultLine.error(INPUT, "uploads/x.jpg", ImageError(ErrorKind.TRUNCATED, "cut"))
    s3.put_object(Bucket=RESULTS, Key=LOC.live_key(INPUT, "uploads/x.jpg"), Body=dump_lines([bad]))
    assert read_label(s3, LOC, INPUT, "uploads/x.jpg") == bad
    code, _, err = run(capsys, "label", "not-a-uri", "--results", RESULTS_URI)
    assert code == 2 and "s3://bucket/key" in err


def test_events_prints_what_was_published_and_consumes_it_unless_kept(queues, capsys):
    channel = EventChannel(sns=client("sns"), topic_arn=queues.events_topic)
    sent = [
        ImageLabelled(
            id=image_event_id(INPUT, f"u/{i}.jpg", "e", "v1"),
            bucket=INPUT,
            key=f"u/{i}.jpg",
            result=ok(f"u/{i}.jpg"),
            result_uri=f"s3://{RESULTS}/{LOC.live_key(INPUT, f'u/{i}.jpg')}",
            received_at=WHEN,
            labelled_at=WHEN,
        )
        for i in range(3)
    ]
    for event in sent:
        channel.publish(event)
    args = ("events", "--events-queue-url", queues.events_queue_url)
    code, out, _ = run(capsys, *args, "--keep")
    assert code == 0
    assert sorted(parse_event(s).key for s in out.splitlines()) == ["u/0.jpg", "u/1.jpg", "u/2.jpg"]
    code, out, _ = run(capsys, *args)  # kept: still there, now consumed
    assert sorted((parse_event(s) for s in out.splitlines()), key=lambda e: e.id) == sorted(
        sent, key=lambda e: e.id
    )
    code, out, _ = run(capsys, *args)
    assert (code, out) == (0, "")


def test_an_urgent_job_goes_to_the_live_lane(s3, sqs, queues, capsys):
    upload(s3, ["p/a.jpg", "p/b.jpg"])
    code, out, _ = submit(capsys, queues, "--job-id", "urgent", "--lane", "live")
    assert code == 0 and out["images"] == 2
    assert drain(sqs, queues.queue_url) == []
    tasks = drain(sqs, queues.live_queue_url)
    assert [t.keys for t in tasks] == [("p/a.jpg", "p/b.jpg")]
    assert isinstance(tasks[0], TaskMessage) and tasks[0].job_id == "urgent"
