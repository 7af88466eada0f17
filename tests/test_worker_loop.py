"""The worker loop in this process against in-process moto, with a real ResNet."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError

from posefleet import metric_names
from posefleet.attempts import AttemptMarker, attempts_key
from posefleet.deadletter import REASON_ATTRIBUTE, dead_letter_url
from posefleet.result import load_lines
from posefleet.settings import WorkerSettings
from posefleet.task import TaskMessage
from tests.conftest import INPUT, RESULTS
from tests.helpers import LOC, RESULTS_URI
from tests.images import jpeg
from worker.loop import Worker
from worker.metrics import Metrics
from worker.model import Classifier
from worker.sqs import TaskQueue


@pytest.fixture(scope="module")
def classifier(checkpoint_path) -> Classifier:
    return Classifier.from_file(checkpoint_path, device="cpu", threads=2)


class FaultyS3:
    """The real (moto) client, except for keys with a marker: a handler that fails on purpose.
    ``flaky/`` keys answer 503 SlowDown ``flaky_failures`` times each (forever if None)."""

    def __init__(self, real: Any, *, flaky_failures: int | None = None) -> None:
        self.real = real
        self.gets: list[str] = []
        self.flaky_failures = flaky_failures

    def get_object(self, *, Bucket: str, Key: str) -> Any:
        self.gets.append(Key)
        if "denied/" in Key:
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject"
            )
        if "flaky/" in Key and (
            self.flaky_failures is None or self.gets.count(Key) <= self.flaky_failures
        ):
            raise ClientError(
                {
                    "Error": {"Code": "SlowDown", "Message": "Reduce your request rate"},
                    "ResponseMetadata": {"HTTPStatusCode": 503},
                },
                "GetObject",
            )
        return self.real.get_object(Bucket=Bucket, Key=Key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class SpyQueue(TaskQueue):
    def __init__(self, *, on_delete=None, heartbeat_fails: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.on_delete = on_delete
        self.heartbeat_fails = heartbeat_fails
        self.visibility_calls: list[tuple[int, int]] = []

    def delete(self, messages):
        if self.on_delete:
            self.on_delete(messages)
        return super().delete(messages)

    def change_visibility(self, messages, timeout):
        self.visibility_calls.append((len(messages), timeout))
        if self.heartbeat_fails and timeout > 0:
            return {m.message_id: "ReceiptHandleIsInvalid" for m in messages}
        return super().change_visibility(messages, timeout)


def settings(queue_url: str, **kw: Any) -> WorkerSettings:
    base = dict(
        queue_url=queue_url,
        results=RESULTS_URI,
        wait_time_seconds=1,
        visibility_timeout=30,
        batch_size=8,
        batch_wait_ms=300,
        fetch_threads=4,
        drain_seconds=5,
        retry_delay_seconds=0,
    )
    return WorkerSettings(**{**base, **kw})


def run_worker(
    s3,
    sqs,
    queue_url,
    classifier,
    *,
    idle: float = 1.5,
    queue=None,
    shutdown=None,
    live_queue=None,
    hooks=(),
    jobs=None,
    **kw,
):
    out = io.StringIO()
    worker = Worker(
        settings=settings(queue_url, **kw),
        tasks_queue=queue
        or TaskQueue(sqs=sqs, url=queue_url, dlq_url=dead_letter_url(sqs, queue_url)),
        s3=s3,
        classifier=classifier,
        metrics=Metrics(service="test", out=out),
        shutdown=shutdown or threading.Event(),
        decode_threads=2,
        exit_when_idle=idle,
        live_queue=live_queue,
        hooks=hooks,
        jobs=jobs,
    )
    assert worker.run() == 0
    return worker, [json.loads(line) for line in out.getvalue().splitlines()]


def batch_sizes(emf: list[dict]) -> list[int]:
    """The size of every batch the worker's metrics recorded."""
    return [
        v
        for doc in emf
        if metric_names.BATCH_SIZE in doc
        for v in (
            doc[metric_names.BATCH_SIZE]
            if isinstance(doc[metric_names.BATCH_SIZE], list)
            else [doc[metric_names.BATCH_SIZE]]
        )
    ]


def send_task(sqs, queue_url, keys, task_id="000000-t", job="job1") -> TaskMessage:
    task = TaskMessage(
        job_id=job, task_id=task_id, bucket=INPUT, keys=tuple(keys), results=RESULTS_URI
    )
    sqs.send_message(QueueUrl=queue_url, MessageBody=task.to_body())
    return task


def result(s3, task: TaskMessage):
    return load_lines(s3.get_object(Bucket=RESULTS, Key=task.result_key)["Body"].read())


def depth(sqs, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def put(s3, key: str, data: bytes) -> str:
    s3.put_object(Bucket=INPUT, Key=key, Body=data)
    return key


def test_a_task_gets_one_line_per_image_and_is_deleted_after_its_result_exists(
    s3, sqs, queues, classifier
):
    keys = [put(s3, f"p/{i}.jpg", jpeg(seed=i)) for i in range(3)]
    keys.insert(1, put(s3, "p/broken.jpg", b"\xff\xd8\xff\xe0 not really"))
    keys.append("p/deleted-before-fetch.jpg")
    task = send_task(sqs, queues.queue_url, keys)
    seen_at_delete: list[bool] = []

    def check(messages):
        seen_at_delete.append(
            s3.list_objects_v2(Bucket=RESULTS, Prefix=task.result_key)["KeyCount"] == 1
        )

    spy = SpyQueue(sqs=sqs, url=queues.queue_url, on_delete=check)
    worker, _ = run_worker(s3, sqs, queues.queue_url, classifier, queue=spy)

    lines = result(s3, task)
    assert [line.key for line in lines] == keys
    assert [line.status for line in lines] == ["ok", "error", "ok", "ok", "error"]
    assert lines[1].error_kind == "truncated"
    assert lines[4].error_kind == "not_found"
    assert lines[0].original_size == (640, 480)
    assert lines[0].model_version == classifier.version
    assert seen_at_delete == [True]
    assert depth(sqs, queues.queue_url) == 0
    assert worker.stats["tasks"] == 1 and worker.stats["images"] == 5


def test_batches_are_built_across_tasks(s3, sqs, queues, classifier):
    tasks = [
        send_task(
            sqs,
            queues.queue_url,
            [put(s3, f"b/{t}-{i}.jpg", jpeg((320, 240), seed=i)) for i in range(3)],
            task_id=f"00000{t}-x",
        )
        for t in range(2)
    ]
    _, emf = run_worker(s3, sqs, queues.queue_url, classifier, batch_size=8, batch_wait_ms=1500)
    sizes = batch_sizes(emf)
    assert max(sizes) > 3, f"no batch spanned two tasks: {sizes}"
    assert all(len(result(s3, t)) == 3 for t in tasks)


@pytest.mark.slow
def test_a_cpu_worker_left_to_its_device_takes_batches_of_8(s3, sqs, queues, classifier):
    # Given 20 images in one task, and settings that leave the batch size to the device
    keys = [put(s3, f"cpu/{i:02d}.jpg", jpeg((96, 72), seed=i)) for i in range(20)]
    task = send_task(sqs, queues.queue_url, keys)
    # When a CPU worker serves it with time enough to fill any batch
    worker, emf = run_worker(
        s3, sqs, queues.queue_url, classifier, batch_size=0, batch_wait_ms=1500
    )
    # Then it took batches of 8 (a GPU's would be 32), and every image has its line
    sizes = batch_sizes(emf)
    assert worker.settings.batch_size == 8 and max(sizes) == 8, sizes
    assert len(result(s3, task)) == 20


def test_access_denied_is_an_error_line_and_a_transient_fault_is_retried_in_place(
    s3, sqs, queues, classifier
):
    ok_task = send_task(
        sqs,
        queues.queue_url,
        [put(s3, "x/ok.jpg", jpeg()), put(s3, "denied/x.jpg", jpeg())],
        task_id="000000-a",
    )
    flaky_task = send_task(
        sqs,
        queues.queue_url,
        [put(s3, "y/ok.jpg", jpeg()), put(s3, "flaky/y.jpg", jpeg())],
        task_id="000001-b",
    )
    spy = FaultyS3(s3, flaky_failures=3)
    worker, _ = run_worker(spy, sqs, queues.queue_url, classifier, retry_delay_seconds=600, idle=2)

    lines = result(s3, ok_task)
    assert [(line.status, line.error_kind) for line in lines] == [
        ("ok", None),
        ("error", "access_denied"),
    ]
    # the flaky image was fetched again while the message stayed held: done on its first receive
    assert [line.status for line in result(s3, flaky_task)] == ["ok", "ok"]
    assert spy.gets.count("flaky/y.jpg") == 4
    assert worker.stats["released"] == 0 and worker.stats["messages"] == 2
    assert depth(sqs, queues.queue_url) == 0


def test_a_fault_that_outlasts_its_budget_hands_the_message_back_as_new(
    s3, sqs, queues, classifier
):
    flaky_task = send_task(sqs, queues.queue_url, [put(s3, "flaky/z.jpg", jpeg())])
    worker, _ = run_worker(
        FaultyS3(s3),
        sqs,
        queues.queue_url,
        classifier,
        retry_delay_seconds=2,
        fault_budget_seconds=1,
        idle=1,
    )
    with pytest.raises(s3.exceptions.NoSuchKey):
        result(s3, flaky_task)
    assert worker.stats["released"] == 1
    # sent again with the retry delay, the old copy deleted: it comes back as new, not as a
    # crash suspect (a receive count of 1), so it is not taken image by image
    (again,) = sqs.receive_message(
        QueueUrl=queues.queue_url,
        WaitTimeSeconds=5,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )["Messages"]
    assert again["Body"] == flaky_task.to_body()
    assert again["Attributes"]["ApproximateReceiveCount"] == "1"


def test_invalid_messages_are_dead_lettered_at_once_with_their_reason(s3, sqs, queues, classifier):
    sqs.send_message(QueueUrl=queues.queue_url, MessageBody="{not json")
    good = send_task(sqs, queues.queue_url, [put(s3, "g/1.jpg", jpeg())])
    worker, emf = run_worker(s3, sqs, queues.queue_url, classifier, idle=2)
    assert len(result(s3, good)) == 1
    assert worker.stats["invalid_messages"] == 1  # judged on its first receive
    assert worker.stats["dead_lettered"] == 1
    assert depth(sqs, queues.queue_url) == 0
    (dead,) = sqs.receive_message(
        QueueUrl=queues.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    assert dead["Body"] == "{not json"
    assert "not JSON" in dead["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"]
    assert sum(doc.get(metric_names.MESSAGES_INVALID, 0) for doc in emf) == 1


def test_without_a_dead_letter_queue_invalid_messages_are_left_to_the_redrive_policy(
    s3, sqs, queues, classifier
):
    # A worker that found no RedrivePolicy: the message is made visible again at once
    sqs.send_message(QueueUrl=queues.queue_url, MessageBody="{not json")
    no_dlq = TaskQueue(sqs=sqs, url=queues.queue_url, dlq_url=None)
    worker, _ = run_worker(s3, sqs, queues.queue_url, classifier, idle=2, queue=no_dlq)
    assert worker.stats["invalid_messages"] >= 2  # received maxReceiveCount (2) times
    assert worker.stats["dead_lettered"] == 0
    dead = sqs.receive_message(
        QueueUrl=queues.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    assert [(m["Body"], m.get("MessageAttributes")) for m in dead] == [("{not json", None)]


def came_back(sqs, queue_url: str) -> None:
    """Receive every message once and hand it back: the worker's receive is the second."""
    got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    assert got.get("Messages")


def marker(s3, task: TaskMessage) -> AttemptMarker:
    key = attempts_key(task.location, task.job_id, task.task_id)
    return AttemptMarker.model_validate_json(s3.get_object(Bucket=RESULTS, Key=key)["Body"].read())


def test_a_message_that_came_back_is_taken_image_by_image_behind_an_attempt_marker(
    s3, sqs, queues, classifier
):
    keys = [put(s3, f"back/{i}.jpg", jpeg(seed=i)) for i in range(3)]
    keys.append("back/missing.jpg")
    task = send_task(sqs, queues.queue_url, keys)
    s3.put_object(  # an earlier crash on keys[1], not yet at crash_attempts
        Bucket=RESULTS,
        Key=attempts_key(task.location, task.job_id, task.task_id),
        Body=AttemptMarker(job_id="job1", task_id=task.task_id, attempts={keys[1]: 2}).to_body(),
    )
    came_back(sqs, queues.queue_url)
    puts: list[str] = []

    class SpyS3(FaultyS3):
        def put_object(self, **kw: Any) -> Any:
            puts.append(kw["Key"])
            return self.real.put_object(**kw)

    worker, _ = run_worker(SpyS3(s3), sqs, queues.queue_url, classifier)

    lines = result(s3, task)
    assert [(line.key, line.status) for line in lines] == [
        (keys[0], "ok"),
        (keys[1], "ok"),
        (keys[2], "ok"),
        (keys[3], "error"),
    ]
    assert worker.stats["isolated_messages"] == 1 and worker.stats["isolated_images"] == 3
    # a marker before each image decoded, one at the end; the result last
    marker_key = attempts_key(task.location, task.job_id, task.task_id)
    assert puts == [marker_key] * 4 + [task.result_key]
    assert marker(s3, task).attempts == {}  # keys[1] finished: it was not the killer
    assert depth(sqs, queues.queue_url) == 0


def test_a_message_caught_in_a_crash_is_first_tried_as_one_group(s3, sqs, queues, classifier):
    keys = [put(s3, f"group/{i}.jpg", jpeg(seed=i)) for i in range(3)]
    task = send_task(sqs, queues.queue_url, keys)
    came_back(sqs, queues.queue_url)
    markers: list[AttemptMarker] = []

    class SpyS3(FaultyS3):
        def put_object(self, **kw: Any) -> Any:
            if "/attempts/" in kw["Key"]:
                markers.append(AttemptMarker.model_validate_json(kw["Body"]))
            return self.real.put_object(**kw)

    worker, _ = run_worker(SpyS3(s3), sqs, queues.queue_url, classifier)

    assert [line.status for line in result(s3, task)] == ["ok"] * 3
    # one trial naming the whole group, then cleared: no image was counted alone
    assert [(m.trial, m.attempts) for m in markers] == [(keys, {}), ([], {})]
    assert worker.stats["isolated_images"] == 3


def test_an_image_that_stopped_workers_crash_attempts_times_is_not_fetched_again(
    s3, sqs, queues, classifier
):
    keys = [put(s3, "mates/a.jpg", jpeg(seed=1)), "killer/x.jpg", put(s3, "mates/b.jpg", jpeg())]
    put(s3, keys[1], jpeg(seed=2))
    task = send_task(sqs, queues.queue_url, keys)
    s3.put_object(
        Bucket=RESULTS,
        Key=attempts_key(task.location, task.job_id, task.task_id),
        Body=AttemptMarker(job_id="job1", task_id=task.task_id, attempts={keys[1]: 3}).to_body(),
    )
    came_back(sqs, queues.queue_url)
    spy = FaultyS3(s3)

    worker, emf = run_worker(spy, sqs, queues.queue_url, classifier, crash_attempts=3)

    ok_a, killer, ok_b = result(s3, task)
    assert (killer.status, killer.error_kind) == ("error", "crashed_worker")
    assert "3 times" in killer.error_message
    assert (ok_a.status, ok_b.status) == ("ok", "ok")
    assert keys[1] not in spy.gets  # never fetched, so never decoded again
    assert marker(s3, task).attempts == {keys[1]: 3}  # a stable outcome for a re-run too
    assert worker.stats["crashed_worker_images"] == 1
    failed = [doc for doc in emf if doc.get("ErrorKind") == "crashed_worker"]
    assert sum(doc[metric_names.IMAGES_FAILED] for doc in failed) == 1


def test_s3_events_are_one_key_tasks_and_test_events_are_acknowledged(s3, sqs, queues, classifier):
    key = put(s3, "uploads/new check in+1.jpg", jpeg())
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": INPUT}, "object": {"key": "uploads/new+check+in%2B1.jpg"}},
    }
    sqs.send_message(QueueUrl=queues.queue_url, MessageBody=json.dumps({"Records": [record]}))
    sqs.send_message(
        QueueUrl=queues.queue_url,
        MessageBody=json.dumps({"Event": "s3:TestEvent", "Bucket": INPUT}),
    )
    run_worker(s3, sqs, queues.queue_url, classifier)
    # the photo's result is where its key alone says, and nowhere else
    objects = s3.list_objects_v2(Bucket=RESULTS, Prefix="results/")["Contents"]
    assert [o["Key"] for o in objects] == [LOC.live_key(INPUT, key)]
    (line,) = load_lines(s3.get_object(Bucket=RESULTS, Key=objects[0]["Key"])["Body"].read())
    assert (line.key, line.status) == (key, "ok")
    assert depth(sqs, queues.queue_url) == 0


def test_heartbeat_extends_visibility_and_a_lost_heartbeat_abandons_without_deleting(
    s3, sqs, queues, classifier
):
    class Slow(Classifier):
        def predict(self, images):
            import time

            time.sleep(1.0)
            return super().predict(images)

    slow = Slow(classifier.checkpoint, device="cpu")
    slow.model = classifier.model
    task = send_task(sqs, queues.queue_url, [put(s3, "h/1.jpg", jpeg())])
    deleted: list[int] = []
    spy = SpyQueue(
        sqs=sqs,
        url=queues.queue_url,
        heartbeat_fails=True,
        on_delete=lambda m: deleted.append(len(m)),
    )
    worker, _ = run_worker(
        s3, sqs, queues.queue_url, slow, queue=spy, heartbeat_seconds=0.2, idle=1.5
    )
    assert (1, 30) in spy.visibility_calls  # the heartbeat asked for the full visibility again
    assert worker.stats["heartbeat_lost"] == 1
    assert deleted == []
    with pytest.raises(s3.exceptions.NoSuchKey):
        result(s3, task)


def test_shutdown_hands_unfinished_tasks_back_at_once_as_new(s3, sqs, queues, classifier):
    class Stuck(Classifier):
        def predict(self, images):
            stop.set()  # SIGTERM arrives mid-batch
            import time

            time.sleep(2)
            return super().predict(images)

    stop = threading.Event()
    stuck = Stuck(classifier.checkpoint, device="cpu")
    stuck.model = classifier.model
    task = send_task(sqs, queues.queue_url, [put(s3, "s/1.jpg", jpeg())])
    worker, _ = run_worker(
        s3, sqs, queues.queue_url, stuck, shutdown=stop, drain_seconds=0.5, idle=None
    )
    # (a receive still in its long poll may take it again and hand it straight back)
    assert worker.stats["released"] >= 1
    again = sqs.receive_message(
        QueueUrl=queues.queue_url,
        WaitTimeSeconds=0,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )["Messages"]
    # visible again without waiting for the visibility timeout, and not a crash suspect
    assert [(m["Body"], m["Attributes"]["ApproximateReceiveCount"]) for m in again] == [
        (task.to_body(), "1")
    ]


@pytest.mark.slow
def test_every_bad_input_fails_alone_and_its_task_mate_succeeds(s3, sqs, queues, classifier):
    from tests.images import bad_variants, good_variants

    # Given one task per bad input, each with a good photo as its task-mate
    limit = 5 * 1024 * 1024
    bad = {name: data for name, (data, _) in bad_variants().items()}
    bad["huge.jpg"] = b"\xff" * (limit + 1)  # refused from its size, before download
    expected = {name: kind for name, (_, kind) in bad_variants().items()}
    expected |= {"huge.jpg": "too_large", "gone.jpg": "not_found"}
    good = list(good_variants().items())
    tasks = {}
    for i, name in enumerate(sorted(expected)):
        if name in bad:
            put(s3, f"bad/{name}", bad[name])
        mate_name, mate = good[i % len(good)]
        mate_key = put(s3, f"mates/{i}-{mate_name}", mate)
        tasks[name] = send_task(
            sqs, queues.queue_url, [f"bad/{name}", mate_key], task_id=f"{i:06d}-b"
        )

    # When the worker serves them
    run_worker(s3, sqs, queues.queue_url, classifier, idle=2, max_image_bytes=limit, batch_size=16)

    # Then each bad input has its stable kind, and its task-mate was classified
    for name, task in tasks.items():
        bad_line, mate_line = result(s3, task)
        assert (bad_line.status, bad_line.error_kind) == ("error", expected[name]), name
        assert bad_line.error_message
        assert mate_line.status == "ok" and mate_line.model_version == classifier.version, name
    assert depth(sqs, queues.queue_url) == 0


def test_scale_in_protection_is_set_while_holding_work_and_cleared_when_idle():
    import http.server
    import threading as th

    from worker.protection import ScaleInProtection

    calls = []

    class Agent(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            calls.append(
                (self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            )
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Agent)
    thread = th.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        protection = ScaleInProtection(
            f"http://127.0.0.1:{server.server_port}/v1", expires_minutes=30
        )
        protection.set(True)
        protection.set(True)  # unchanged: no second call
        protection.set(False)
    finally:
        server.shutdown()
        server.server_close()
    assert calls == [
        ("/v1/task-protection/v1/state", {"ProtectionEnabled": True, "ExpiresInMinutes": 30}),
        ("/v1/task-protection/v1/state", {"ProtectionEnabled": False}),
    ]
    ScaleInProtection(None).set(True)  # off ECS: nothing to call, nothing raised


@pytest.mark.slow
def test_a_receive_stage_that_crashes_is_restarted_and_the_work_gets_done(
    s3, sqs, queues, classifier
):
    class Glitchy(TaskQueue):
        crashes = 0

        def receive(self, **kw):
            if self.crashes < 2:  # a bug, not AWS: no retry would help, a restart does
                self.crashes += 1
                raise KeyError("Messages")
            return super().receive(**kw)

    task = send_task(sqs, queues.queue_url, [put(s3, "r/1.jpg", jpeg())])
    glitchy = Glitchy(sqs=sqs, url=queues.queue_url, dlq_url=queues.dlq_url)
    worker, _ = run_worker(s3, sqs, queues.queue_url, classifier, queue=glitchy, idle=5)
    assert [line.status for line in result(s3, task)] == ["ok"]
    assert worker.supervisor.crashes["receive"] == 2


def test_a_worker_whose_receive_keeps_crashing_drains_and_exits_1(s3, sqs, queues, classifier):
    class Broken(TaskQueue):
        def receive(self, **kw):
            raise ClientError({"Error": {"Code": "AccessDenied"}}, "ReceiveMessage")

    broken = Broken(sqs=sqs, url=queues.queue_url, dlq_url=queues.dlq_url)
    worker = Worker(
        settings=settings(queues.queue_url, stage_max_crashes=3),
        tasks_queue=broken,
        s3=s3,
        classifier=classifier,
        metrics=Metrics(service="test", out=io.StringIO()),
        shutdown=threading.Event(),
        decode_threads=1,
        exit_when_idle=None,  # it would run forever but for the failure
    )
    assert worker.run() == 1
    assert worker.supervisor.crashes["receive"] == 3


def upload_event(key: str, etag: str = "e1") -> str:
    record = {
        "eventName": "ObjectCreated:Put",
        "eventTime": "2026-12-01T10:00:00.000Z",
        "s3": {"bucket": {"name": INPUT}, "object": {"key": key, "eTag": etag}},
    }
    return json.dumps({"Records": [record]})


@pytest.mark.slow
def test_the_live_lane_goes_first_and_the_application_is_told(s3, sqs, queues, classifier):
    from posefleet.aws import client
    from posefleet.events import EventChannel, ImageLabelled, parse_event
    from worker.announce import Announcer

    # Given a backlog of backfill tasks, and a worker holding eight batches of it
    backfill = [
        send_task(
            sqs,
            queues.queue_url,
            [put(s3, f"old/{t}-{i}.jpg", jpeg((320, 240), seed=i)) for i in range(8)],
            task_id=f"{t:06d}-bf",
        )
        for t in range(14)
    ]
    new = put(s3, "uploads/new.jpg", jpeg(seed=9))
    broken = put(s3, "uploads/broken.jpg", b"\xff\xd8\xff\xe0 not really")
    order: list[str] = []

    class SpyS3(FaultyS3):
        def put_object(self, **kw: Any) -> Any:
            order.append(kw["Key"])
            if len(order) == 1:  # when the first backfill task is written, two uploads land
                for key in (new, broken):
                    sqs.send_message(QueueUrl=queues.live_queue_url, MessageBody=upload_event(key))
            return self.real.put_object(**kw)

    live = TaskQueue(sqs=sqs, url=queues.live_queue_url, dlq_url=queues.live_dlq_url)
    out = io.StringIO()
    announcer = Announcer(
        channel=EventChannel(sns=client("sns"), topic_arn=queues.events_topic),
        metrics=Metrics(service="test", out=out),
    )

    # When it serves both lanes
    worker, _ = run_worker(
        SpyS3(s3),
        sqs,
        queues.queue_url,
        classifier,
        live_queue=live,
        hooks=[("announce", announcer)],
        batch_size=8,
        batch_wait_ms=50,
        prefetch_batches=8,
        idle=2,
    )

    # Then the uploads jumped what it held: at most the batch in the model and a task or two
    # it finished went first (in arrival order they would wait for all eight), each at its
    # photo's own key
    live_keys = [LOC.live_key(INPUT, new), LOC.live_key(INPUT, broken)]
    backfill_keys = [t.result_key for t in backfill]
    assert sorted(order) == sorted(live_keys + backfill_keys)
    waited_for = max(order.index(k) for k in live_keys) - 1 - 1  # minus the first, the other
    assert waited_for <= 3, order
    ((ok,), (bad,)) = (
        load_lines(s3.get_object(Bucket=RESULTS, Key=k)["Body"].read()) for k in live_keys
    )
    assert (ok.key, ok.status) == (new, "ok")
    assert (bad.key, bad.error_kind) == (broken, "truncated")
    # and an event for each, its result inline, its id stable for the upload and model
    got = sqs.receive_message(QueueUrl=queues.events_queue_url, MaxNumberOfMessages=10)
    events = sorted(
        (parse_event(m["Body"]) for m in got["Messages"]),
        key=lambda e: e.key,  # type: ignore
    )
    assert [type(e) for e in events] == [ImageLabelled, ImageLabelled]
    assert [(e.key, e.result.status) for e in events] == [(broken, "error"), (new, "ok")]
    assert events[1].result_uri == f"s3://{RESULTS}/{live_keys[0]}"
    assert events[1].uploaded_at.isoformat() == "2026-12-01T10:00:00+00:00"
    assert events[1].uploaded_at < events[1].received_at <= events[1].labelled_at
    assert worker.stats["tasks"] == len(backfill) + 2
    assert depth(sqs, queues.live_queue_url) == 0 and depth(sqs, queues.queue_url) == 0


@pytest.mark.slow
def test_the_worker_counts_each_task_in_its_job_and_skips_a_cancelled_jobs_tasks(
    s3, sqs, queues, classifier, capsys
):
    from posefleet.aws import client
    from posefleet.events import EventChannel, JobFinished, parse_event
    from posefleet.resources import DEFAULT_JOBS_TABLE
    from tests.helpers import run, upload
    from worker.jobs import JobTracker

    # Given two jobs submitted by the producer, one of them cancelled at once
    for job in ("keep", "stop"):
        keys = [f"{job}/{i}.jpg" for i in range(6)]
        upload(s3, {k: jpeg(seed=i) for i, k in enumerate(keys)})
        code, _, err = run(
            capsys,
            *("--bucket", INPUT, "--prefix", f"{job}/", "--job-id", job, "--task-size", "2"),
            *("--queue-url", queues.queue_url, "--results", RESULTS_URI),
        )
        assert code == 0, err
    assert run(capsys, "cancel", "stop")[1]["state"] == "cancelling"
    channel = EventChannel(sns=client("sns"), topic_arn=queues.events_topic)
    jobs = JobTracker(dynamodb=client("dynamodb"), table=DEFAULT_JOBS_TABLE, events=channel)

    # When a worker with the job records serves the queue
    worker, _ = run_worker(s3, sqs, queues.queue_url, classifier, jobs=jobs, idle=2)

    # Then the running job completed, counted once a task, and the cancelled one got no work
    listed = s3.list_objects_v2(Bucket=RESULTS, Prefix="results/")["Contents"]
    written = {o["Key"].split("/")[1] for o in listed if "/tasks/" in o["Key"]}
    assert written == {"keep"}
    assert worker.stats["cancelled_messages"] == 3 and worker.stats["tasks"] == 3
    states = {}
    for job in ("keep", "stop"):
        code, out, _ = run(capsys, "status", job, "--results", RESULTS_URI)
        states[job] = (out["state"], out["tasks_done"], out["tasks_cancelled"])
    assert states == {"keep": ("complete", 3, 0), "stop": ("cancelled", 0, 3)}
    got = sqs.receive_message(QueueUrl=queues.events_queue_url, MaxNumberOfMessages=10)
    finished = sorted(
        (
            e
            for e in (parse_event(m["Body"]) for m in got["Messages"])
            if isinstance(e, JobFinished)
        ),
        key=lambda e: e.job_id,
    )
    assert [(e.job_id, e.state) for e in finished] == [("keep", "complete"), ("stop", "cancelled")]
    assert depth(sqs, queues.queue_url) == 0
