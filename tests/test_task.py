import json

import pytest

from posefleet.task import InvalidMessage, TaskMessage, make_task_id, parse_message, plan_tasks

RESULTS = "s3://out/results"


def parse(body: str):
    return parse_message(body, stream_job="stream", stream_results=RESULTS)


def test_task_round_trips_through_its_body():
    task = TaskMessage(
        job_id="j1",
        task_id="000001-abc",
        bucket="photos",
        keys=("a.jpg", "b c.jpg"),
        results=RESULTS,
        enqueued_at=1.5,
    )
    parsed = parse(task.to_body())
    assert parsed.kind == "task"
    assert parsed.tasks == (task,)


def test_task_ids_are_deterministic_for_the_job_and_depend_on_the_keys():
    keys = [f"k/{i}.jpg" for i in range(45)]
    first = list(plan_tasks(job_id="j", bucket="bkt", keys=keys, task_size=20, results=RESULTS))
    again = list(plan_tasks(job_id="j", bucket="bkt", keys=keys, task_size=20, results=RESULTS))
    assert [t.task_id for t in first] == [t.task_id for t in again]
    assert [len(t.keys) for t in first] == [20, 20, 5]
    assert [k for t in first for k in t.keys] == keys
    assert make_task_id(0, ["a"]) != make_task_id(0, ["b"])
    assert first[0].task_id.startswith("000000-")


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("photos/my+check-in.jpg", "photos/my check-in.jpg"),
        ("photos/plus%2Bsign.jpg", "photos/plus+sign.jpg"),
        ("photos/100%25+done.jpg", "photos/100% done.jpg"),
        ("photos/%C3%A9t%C3%A9.jpg", "photos/été.jpg"),
        ("photos/percent%252B.jpg", "photos/percent%2B.jpg"),  # decoded once, not twice
    ],
)
def test_s3_event_keys_are_url_decoded_exactly_once(raw, decoded):
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "eventTime": "2026-11-23T10:00:00.000Z",
                    "s3": {"bucket": {"name": "uploads"}, "object": {"key": raw, "size": 10}},
                }
            ]
        }
    )
    parsed = parse(body)
    assert parsed.kind == "s3_event"
    (task,) = parsed.tasks
    assert task.keys == (decoded,)
    assert task.bucket == "uploads"
    assert task.job_id == "stream"
    assert task.results == RESULTS
    assert task.enqueued_at == pytest.approx(1795428000.0)


def test_s3_event_for_the_same_object_maps_to_the_same_result_key():
    def event(key: str) -> str:
        return json.dumps(
            {"Records": [{"s3": {"bucket": {"name": "uploads"}, "object": {"key": key}}}]}
        )

    assert parse(event("a.jpg")).tasks[0].result_key == parse(event("a.jpg")).tasks[0].result_key
    assert parse(event("a.jpg")).tasks[0].result_key != parse(event("b.jpg")).tasks[0].result_key


def test_an_uploads_result_is_its_photos_live_result_named_by_its_etag():
    body = json.dumps(
        {
            "Records": [
                {
                    "eventTime": "2026-12-01T10:00:00.000Z",
                    "s3": {
                        "bucket": {"name": "uploads"},
                        "object": {"key": "in/a+b.jpg", "eTag": "0cc175b9", "sequencer": "0A1"},
                    },
                }
            ]
        }
    )
    (task,) = parse(body).tasks
    assert task.upload == "0cc175b9"
    assert task.result_key == task.location.live_key("uploads", "in/a b.jpg")
    assert task.enqueued_at == 1796119200.0  # the upload: 2026-12-01T10:00Z


def test_s3_test_event_asks_for_nothing():
    parsed = parse(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "u"}))
    assert parsed.kind == "s3_test_event"
    assert parsed.tasks == ()


def test_s3_removal_events_are_ignored():
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectRemoved:Delete",
                    "s3": {"bucket": {"name": "u"}, "object": {"key": "a.jpg"}},
                }
            ]
        }
    )
    assert parse(body).tasks == ()


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        "[1, 2, 3]",
        json.dumps({"job_id": "j"}),
        json.dumps(
            {
                "v": 2,
                "job_id": "j",
                "task_id": "t",
                "bucket": "bbb",
                "keys": ["a"],
                "results": RESULTS,
            }
        ),
        json.dumps(
            {
                "job_id": "../../etc",
                "task_id": "t",
                "bucket": "bbb",
                "keys": ["a"],
                "results": RESULTS,
            }
        ),
        json.dumps(
            {"job_id": "j", "task_id": "t", "bucket": "bbb", "keys": [], "results": RESULTS}
        ),
        json.dumps(
            {"job_id": "j", "task_id": "t", "bucket": "bbb", "keys": ["a"], "results": "/tmp/x"}
        ),
        json.dumps({"Records": []}),
        json.dumps({"Records": [{"s3": {}}]}),
    ],
)
def test_invalid_bodies_are_refused_with_a_reason(body):
    with pytest.raises(InvalidMessage) as info:
        parse(body)
    assert str(info.value)
