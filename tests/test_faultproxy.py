"""The fault proxy (benchmarks/faults/proxy.py): each fault as a boto3 caller sees it.

Clients here make one attempt per call (``total_max_attempts=1``), so a fault reaches the
caller as it happened; the retry tests give botocore's ``standard`` mode more, to show it
takes each injected error as a retryable one.
"""

from __future__ import annotations

import contextlib
import http.client
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ConnectionClosedError

from benchmarks.faults.proxy import OUTAGE, PASSED, Fault, FaultPlan, FaultProxy
from posefleet.local import LocalAWS


def boto(service: str, url: str, *, attempts: int = 1, app: str | None = None) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            retries={"mode": "standard", "total_max_attempts": attempts},
            user_agent_appid=app,
            max_pool_connections=32,
        ),
    )


@pytest.fixture
def proxy(moto_server: LocalAWS):
    with FaultProxy(moto_server.url) as p:
        yield p


@pytest.fixture
def bucket(moto_server: LocalAWS) -> str:
    name = f"fp-{uuid.uuid4().hex[:8]}"
    boto("s3", moto_server.url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def queue(moto_server: LocalAWS) -> str:
    return boto("sqs", moto_server.url).create_queue(QueueName=f"fp-{uuid.uuid4().hex[:8]}")[
        "QueueUrl"
    ]


def signed(method: str, proxy: FaultProxy, path: str) -> dict[str, str]:
    """SigV4 headers for a raw S3 request (the payload left unsigned, so it can stream)."""
    request = AWSRequest(
        method=method, url=proxy.url + path, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
    )
    SigV4Auth(Credentials("testing", "testing"), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def error_of(call) -> dict:
    with pytest.raises(ClientError) as caught:
        call()
    return {
        "code": caught.value.response["Error"]["Code"],
        "status": caught.value.response["ResponseMetadata"]["HTTPStatusCode"],
        "retries": caught.value.response["ResponseMetadata"].get("RetryAttempts", 0),
    }


def test_untouched_calls_pass_with_streamed_bodies_keep_alive_and_concurrency(
    proxy, bucket, moto_server
):
    s3 = boto("s3", proxy.url)
    big = bytes(range(256)) * (6 * 4096)  # 6 MiB
    s3.put_object(Bucket=bucket, Key="big.bin", Body=big)
    assert (
        boto("s3", moto_server.url).get_object(Bucket=bucket, Key="big.bin")["Body"].read() == big
    )
    with ThreadPoolExecutor(16) as pool:
        got = list(
            pool.map(
                lambda _: s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read(), range(24)
            )
        )
    assert all(body == big for body in got)
    assert s3.head_object(Bucket=bucket, Key="big.bin")["ContentLength"] == len(big)

    # a chunked request body, and three requests on one kept-alive connection
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    path = f"/{bucket}/chunked.txt"
    conn.request("PUT", path, body=iter([b"hello ", b"world"]), headers=signed("PUT", proxy, path))
    assert conn.getresponse().read() == b""
    for _ in range(2):
        conn.request("GET", path, headers=signed("GET", proxy, path))
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello world")
    conn.close()
    assert proxy.counts().total(PASSED) == proxy.counts().total() == 1 + 24 + 1 + 3


def test_an_error_is_the_retryable_one_of_each_protocol(proxy, bucket, queue):
    # Given every call answered with an error
    proxy.set_plan(FaultPlan(error=1.0))
    s3, sqs = boto("s3", proxy.url), boto("sqs", proxy.url)

    # Then S3 (REST-XML) says 503 SlowDown and SQS (JSON 1.0) 500 InternalError
    assert error_of(lambda: s3.get_object(Bucket=bucket, Key="k")) == {
        "code": "SlowDown",
        "status": 503,
        "retries": 0,
    }
    assert error_of(lambda: sqs.send_message(QueueUrl=queue, MessageBody="m")) == {
        "code": "InternalError",
        "status": 500,
        "retries": 0,
    }
    # DynamoDB (JSON 1.0) and SNS (query, XML) too: the proxy answers, moto never sees them
    dynamo, sns = boto("dynamodb", proxy.url), boto("sns", proxy.url)
    item = {"id": {"S": "x"}}
    assert error_of(lambda: dynamo.put_item(TableName="t", Item=item))["code"] == (
        "InternalServerError"
    )
    arn = "arn:aws:sns:us-east-1:123456789012:t"
    assert error_of(lambda: sns.publish(TopicArn=arn, Message="m"))["code"] == "InternalError"

    # and botocore's standard mode retries each of them (RetryAttempts = attempts - 1)
    assert error_of(lambda: boto("sqs", proxy.url, attempts=3).list_queues())["retries"] == 2
    assert error_of(lambda: boto("sns", proxy.url, attempts=3).list_topics())["retries"] == 2
    assert error_of(lambda: boto("s3", proxy.url, attempts=2).list_buckets())["retries"] == 1
    counts = proxy.counts()
    assert counts.total(Fault.ERROR) == counts.total() == 4 + 3 + 3 + 2
    assert counts.total(Fault.ERROR, service="dynamodb", operation="PutItem") == 1
    assert counts.total(Fault.ERROR, service="sns", operation="Publish") == 1
    assert counts.total(service="sqs", operation="ListQueues") == 3


def test_a_reset_before_forwarding_never_reaches_moto(proxy, bucket, moto_server):
    proxy.set_plan(FaultPlan(reset_before=1.0))
    s3 = boto("s3", proxy.url)
    with pytest.raises(ConnectionClosedError):
        s3.put_object(Bucket=bucket, Key="never", Body=b"x")
    listing = boto("s3", moto_server.url).list_objects_v2(Bucket=bucket)
    assert listing["KeyCount"] == 0
    assert proxy.counts().total(Fault.RESET_BEFORE, operation="PutObject") == 1


def test_a_reset_after_forwarding_took_effect_though_the_caller_saw_a_reset(
    proxy, bucket, queue, moto_server
):
    direct_s3, direct_sqs = boto("s3", moto_server.url), boto("sqs", moto_server.url)
    direct_s3.put_object(Bucket=bucket, Key="doomed", Body=b"x")
    direct_sqs.send_message(QueueUrl=queue, MessageBody="m")
    held = direct_sqs.receive_message(QueueUrl=queue, VisibilityTimeout=60)["Messages"][0]
    proxy.set_plan(FaultPlan(reset_after=1.0))
    s3, sqs = boto("s3", proxy.url), boto("sqs", proxy.url)

    # When a PUT, a delete and an SQS delete are each answered with a reset
    for call in (
        lambda: s3.put_object(Bucket=bucket, Key="written", Body=b"y"),
        lambda: s3.delete_object(Bucket=bucket, Key="doomed"),
        lambda: sqs.delete_message(QueueUrl=queue, ReceiptHandle=held["ReceiptHandle"]),
    ):
        with pytest.raises(ConnectionClosedError):
            call()

    # Then moto did each of them
    keys = [o["Key"] for o in direct_s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["written"]
    attrs = direct_sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (
        attrs["ApproximateNumberOfMessages"],
        attrs["ApproximateNumberOfMessagesNotVisible"],
    ) == (
        "0",
        "0",
    )
    assert proxy.counts().total(Fault.RESET_AFTER) == 3


def test_a_delay_holds_the_call_then_it_succeeds(proxy, bucket):
    proxy.set_plan(FaultPlan(delay=1.0, delay_seconds=(0.6, 0.7)))
    s3 = boto("s3", proxy.url)
    started = time.monotonic()
    s3.put_object(Bucket=bucket, Key="late", Body=b"z")
    took = time.monotonic() - started
    assert 0.6 <= took < 3, took
    assert s3.get_object(Bucket=bucket, Key="late")["Body"].read() == b"z"  # delayed too
    assert proxy.counts().total(Fault.DELAY) == 2


@pytest.mark.parametrize("refusal", ["error", "reset"])
def test_an_outage_refuses_every_call_then_ends(moto_server, bucket, queue, refusal):
    with FaultProxy(moto_server.url, refusal=refusal) as proxy:
        s3, sqs = boto("s3", proxy.url), boto("sqs", proxy.url)
        proxy.outage(0.8)
        assert proxy.in_outage
        refused = []
        for call in (
            lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x"),
            lambda: sqs.send_message(QueueUrl=queue, MessageBody="m"),
        ):
            try:
                call()
            except ClientError as e:
                refused.append(e.response["Error"]["Code"])
            except ConnectionClosedError:
                refused.append("reset")
        expected = ["ServiceUnavailable", "InternalError"] if refusal == "error" else ["reset"] * 2
        assert refused == expected
        time.sleep(0.9)
        assert not proxy.in_outage
        s3.put_object(Bucket=bucket, Key="k", Body=b"x")
        sqs.send_message(QueueUrl=queue, MessageBody="m")
        # an open-ended one, ended at run time
        proxy.outage()
        with pytest.raises((ClientError, ConnectionClosedError)):
            s3.head_object(Bucket=bucket, Key="k")
        proxy.end_outage()
        s3.head_object(Bucket=bucket, Key="k")
        counts = proxy.counts()
        assert (counts.total(OUTAGE), counts.total(PASSED)) == (3, 3)


def test_the_same_seed_gives_the_same_faults(proxy, bucket):
    s3 = boto("s3", proxy.url)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")

    def run(seed: int) -> list[str]:
        proxy.reset_counts()
        proxy.set_plan(
            FaultPlan(error=0.2, reset_before=0.2, reset_after=0.2, seed=seed, services={"s3"})
        )
        for _ in range(30):
            with contextlib.suppress(ClientError, ConnectionClosedError):
                s3.head_object(Bucket=bucket, Key="k")
        return [decision.outcome for decision in proxy.history()]

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first != other
    assert set(first) == {"error", "reset_before", "reset_after", "passed"}


def test_counts_follow_the_rates_and_the_scope(proxy, bucket, queue):
    # Given a third of S3 GETs faulted, nothing else, and the "producer" spared
    proxy.set_plan(
        FaultPlan(
            error=1 / 3,
            seed=3,
            services={"s3"},
            operations={"GetObject"},
            spare_clients={"producer"},
        )
    )
    s3, spared = boto("s3", proxy.url, app="worker-1"), boto("s3", proxy.url, app="producer")
    sqs = boto("sqs", proxy.url, app="worker-1")
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")

    # When 150 GETs, 20 spared GETs, 20 HEADs and 20 SQS sends go through
    failed = 0
    for _ in range(150):
        try:
            s3.get_object(Bucket=bucket, Key="k")["Body"].read()
        except ClientError:
            failed += 1
    for _ in range(20):
        spared.get_object(Bucket=bucket, Key="k")["Body"].read()
        s3.head_object(Bucket=bucket, Key="k")
        sqs.send_message(QueueUrl=queue, MessageBody="m")

    # Then only the workers' GETs were faulted, about a third of them, each counted once
    counts = proxy.counts()
    assert counts.total(Fault.ERROR) == counts.total(Fault.ERROR, operation="GetObject") == failed
    assert 30 <= failed <= 70
    assert counts.total(Fault.ERROR, client="producer") == 0
    assert counts.total(client="worker-1", operation="GetObject") == 150
    assert counts.total(PASSED, operation="HeadObject") == 20
    assert counts.total(PASSED, service="sqs", operation="SendMessage") == 20
    assert counts.total() == 1 + 150 + 60
    summary = counts.as_dict()
    assert summary["operations"]["s3.GetObject"] == {"error": failed, "passed": 170 - failed}
    assert summary["clients"]["producer"] == {"passed": 20}


def test_a_plan_checks_its_rates():
    with pytest.raises(ValueError, match="sum to at most 1"):
        FaultPlan(error=0.6, delay=0.6)
    assert FaultPlan.spread(0.5).rates() == dict.fromkeys(Fault, 0.125)
