"""The events contract: versioned bodies with stable ids, published on one SNS topic."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from posefleet.aws import client
from posefleet.events import (
    TYPE_ATTRIBUTE,
    EventChannel,
    ImageLabelled,
    JobFinished,
    image_event_id,
    job_event_id,
    parse_event,
)
from posefleet.result import ErrorKind, ImageError, ResultLine

WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def labelled(**extra) -> ImageLabelled:
    line = ResultLine.error("b", "k.jpg", ImageError(ErrorKind.TRUNCATED, "cut short"))
    return ImageLabelled(
        id=image_event_id("b", "k.jpg", '"etag"', "v1"),
        bucket="b",
        key="k.jpg",
        result=line,
        result_uri="s3://r/live/b/k.jpg.json",
        received_at=WHEN,
        labelled_at=WHEN,
        **extra,
    )


def test_ids_are_stable_for_the_same_upload_and_model_and_differ_otherwise():
    assert image_event_id("b", "k", "e1", "v1") == image_event_id("b", "k", "e1", "v1")
    assert image_event_id("b", "k", "e1", "v1") != image_event_id("b", "k", "e2", "v1")
    assert image_event_id("b", "k", "e1", "v1") != image_event_id("b", "k", "e1", "v2")
    assert job_event_id("j", "complete", "r1") != job_event_id("j", "cancelled", "r1")
    assert job_event_id("j", "complete", "r1") != job_event_id("j", "complete", "r2")


def test_both_kinds_round_trip_through_their_bodies():
    image = labelled(uploaded_at=WHEN)
    job = JobFinished(
        id=job_event_id("j", "complete", "r"),
        job_id="j",
        state="complete",
        tasks_total=3,
        tasks_done=3,
        images_ok=50,
        images_failed=2,
        errors={"truncated": 2},
        results="s3://r/results/j/",
        manifest="s3://r/results/j/manifest.json",
        created_at=WHEN,
        finished_at=WHEN,
    )
    assert parse_event(image.to_json()) == image
    assert parse_event(job.to_json()) == job
    with pytest.raises(ValidationError):
        parse_event(json.dumps({"v": 1, "type": "image.deleted", "id": "x"}))


def test_the_channel_publishes_the_body_with_its_kind_as_an_attribute(aws):
    sns, sqs = client("sns"), client("sqs")
    topic = sns.create_topic(Name="events")["TopicArn"]
    url = sqs.create_queue(QueueName="app")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    EventChannel(sns=sns, topic_arn=topic).publish(labelled())
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"][0]
    assert parse_event(got["Body"]) == labelled()
    assert got["MessageAttributes"][TYPE_ATTRIBUTE]["StringValue"] == "image.labelled"
