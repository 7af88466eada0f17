"""The benchmark's simulator answers botocore as S3 and SQS would (so bench-scale's figures
mean something): listing order and paging, delimiters, start-after, and the exactly-once check."""

from __future__ import annotations

import json
import threading

import boto3
import pytest
from botocore.config import Config

from benchmarks.scale.simulator import INPUT_BUCKET, QUEUE, Simulator, serve, virtual_key
from posefleet.local import free_port


@pytest.fixture
def sim(monkeypatch):
    port = free_port()
    simulator = Simulator(keys=2500, list_ms=0, get_ms=0, put_ms=0, sqs_ms=0)
    server = serve(simulator, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}.items():
        monkeypatch.setenv(k, v)
    url = f"http://127.0.0.1:{port}"
    config = Config(retries={"max_attempts": 1})
    clients = {
        s: boto3.client(s, endpoint_url=url, region_name="us-east-1", config=config)
        for s in ("s3", "sqs")
    }
    try:
        yield simulator, clients, url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_listing_pages_every_key_in_order_with_delimiters_and_start_after(sim):
    _, c, _ = sim
    s3 = c["s3"]
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=INPUT_BUCKET, Prefix="photos/"
        )
        for o in page.get("Contents", [])
    ]
    assert keys == [virtual_key(i) for i in range(2500)]
    top = s3.list_objects_v2(Bucket=INPUT_BUCKET, Prefix="photos/", Delimiter="/", MaxKeys=2)
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["photos/u000000/", "photos/u000001/"]
    rest = s3.list_objects_v2(
        Bucket=INPUT_BUCKET,
        Prefix="photos/",
        Delimiter="/",
        ContinuationToken=top["NextContinuationToken"],
    )
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["photos/u000002/"]
    after = s3.list_objects_v2(Bucket=INPUT_BUCKET, Prefix="photos/", StartAfter=virtual_key(2497))
    assert [o["Key"] for o in after["Contents"]] == [virtual_key(i) for i in (2498, 2499)]


def test_sent_keys_are_counted_exactly_once(sim):
    simulator, c, _ = sim
    queue = c["sqs"].get_queue_url(QueueName=QUEUE)["QueueUrl"]
    bodies = [
        {"keys": [virtual_key(i) for i in range(j, min(j + 500, 2500))]}
        for j in range(0, 2500, 500)
    ]
    entries = [{"Id": str(i), "MessageBody": json.dumps(b)} for i, b in enumerate(bodies)]
    c["sqs"].send_message_batch(QueueUrl=queue, Entries=entries)
    assert simulator.stats()["exactly_once"] is True
    c["sqs"].send_message_batch(QueueUrl=queue, Entries=entries[:1])
    stats = simulator.stats()
    assert (stats["exactly_once"], stats["duplicates"]) == (False, 500)
