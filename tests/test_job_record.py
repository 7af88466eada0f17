"""The job record through the producer's command line (moto in-process) and the worker's
JobTracker: states, counts exactly once, cancel, resume, the job.finished event, `jobs`."""

from __future__ import annotations

import json
import time

import pytest

from posefleet.aws import client
from posefleet.events import EventChannel, JobFinished, parse_event
from posefleet.job_record import COUNTER_SHARDS, TRANSITIONS, counter_id
from posefleet.resources import DEFAULT_JOBS_TABLE
from posefleet.result import ResultLine
from posefleet.task import TaskMessage
from tests.conftest import INPUT, RESULTS
from tests.helpers import RESULTS_URI, drain, run, upload, write_results
from tests.v2jobs import line
from worker.jobs import JobTracker


@pytest.fixture
def events(aws, monkeypatch) -> str:
    """The events topic with a queue subscribed (raw delivery); returns the queue's URL."""
    sns, sqs = client("sns"), client("sqs")
    topic = sns.create_topic(Name="posefleet-events")["TopicArn"]
    url = sqs.create_queue(QueueName="app")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    monkeypatch.setenv("POSEFLEET_EVENTS_TOPIC", topic)
    return url


def finished(url: str) -> list[JobFinished]:
    got = client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [parse_event(m["Body"]) for m in got.get("Messages", [])]  # type: ignore[misc]


def tracker(events_topic: str | None = None, **kw) -> JobTracker:
    channel = EventChannel(sns=client("sns"), topic_arn=events_topic) if events_topic else None
    return JobTracker(dynamodb=client("dynamodb"), table=DEFAULT_JOBS_TABLE, events=channel, **kw)


def submit(capsys, queues, job: str, *extra: str):
    return run(
        capsys,
        *("--bucket", INPUT, "--prefix", "p/", "--job-id", job, "--task-size", "2"),
        *("--queue-url", queues.queue_url, "--results", RESULTS_URI, *extra),
    )


def status(capsys, job: str, *extra: str) -> dict:
    code, out, err = run(capsys, "status", job, "--results", RESULTS_URI, *extra)
    assert code == 0, err
    return out


def json_lines(out: str | dict) -> list[dict]:
    """A JSON Lines answer (``run`` parses a one-line answer already)."""
    return [out] if isinstance(out, dict) else [json.loads(x) for x in out.splitlines()]


def lines_of(task: TaskMessage, broken: frozenset[str] = frozenset()) -> list[ResultLine]:
    return [line(k, error=k in broken, bucket=task.bucket) for k in task.keys]


def test_the_transitions_are_one_table_of_the_six_states():
    assert set(TRANSITIONS) == {
        "submitting",
        "running",
        "cancelling",
        "cancelled",
        "complete",
        "failed",
    }
    assert all(targets <= set(TRANSITIONS) for targets in TRANSITIONS.values())
    assert "running" not in TRANSITIONS["cancelling"]  # a cancel is not taken back


def test_a_job_runs_counts_each_task_once_and_publishes_one_finished_event(
    s3, sqs, queues, events, capsys
):
    # Given a job of 3 tasks (5 images), submitted
    upload(s3, [f"p/{i}.jpg" for i in range(5)])
    code, out, _ = submit(capsys, queues, "counted")
    assert code == 0 and out["tasks"] == 3
    assert status(capsys, "counted")["state"] == "running"
    tasks = sorted(drain(sqs, queues.queue_url), key=lambda t: t.task_id)
    topic = client("sns").list_topics()["Topics"][0]["TopicArn"]
    workers = [tracker(topic), tracker(topic)]
    # When two workers finish them, every task delivered twice (one image failed)
    for task in tasks:
        for w in workers:
            w.task_finished(task, lines_of(task, frozenset({"p/1.jpg"})))
    # Then the counts are exact, the job is complete, and one event says so
    shown = status(capsys, "counted")
    assert shown["state"] == "complete" and shown["complete"] is True
    assert (shown["tasks_done"], shown["tasks_total"], shown["images_done"]) == (3, 3, 5)
    assert (shown["images_ok"], shown["failed"], shown["error_kinds"]) == (4, 1, {"truncated": 1})
    (event,) = finished(events)
    assert (event.job_id, event.state, event.tasks_done, event.images_failed) == (
        "counted",
        "complete",
        3,
        1,
    )
    assert event.results == f"{RESULTS_URI}/counted/" and event.errors == {"truncated": 1}
    assert finished(events) == []


def test_status_reads_the_record_and_the_queues_in_at_most_five_calls(s3, sqs, queues, capsys):
    from tests.v2jobs import Counting

    upload(s3, [f"p/{i}.jpg" for i in range(5)])
    submit(capsys, queues, "few")
    calls: list[Counting] = []
    real = client

    def counting(service: str, **kw):
        calls.append(Counting(real(service, **kw)))
        return calls[-1]

    import producer.__main__ as cli

    monkey = pytest.MonkeyPatch()
    monkey.setattr(cli, "client", counting)
    monkey.setattr("producer.listing.client", counting, raising=False)
    try:
        shown = status(capsys, "few", "--queue-url", queues.queue_url)
    finally:
        monkey.undo()
    made = {name: n for c in calls for name, n in c.calls.items()}
    assert shown["state"] == "running" and shown["queued"] == 3
    # the stack's parameter (where is the table?), the record, the queue and its DLQ's depth
    assert made == {
        "get_parameter": 1,
        "batch_get_item": 1,
        "get_queue_attributes": 2,
        "get_queue_url": 1,
    }


def test_cancel_stops_the_job_and_it_reads_cancelled_once_every_task_is_counted(
    s3, sqs, queues, events, capsys, tmp_path
):
    # Given a running job of 4 tasks, one done
    upload(s3, [f"p/{i}.jpg" for i in range(8)])
    submit(capsys, queues, "stop")
    tasks = sorted(drain(sqs, queues.queue_url), key=lambda t: t.task_id)
    topic = client("sns").list_topics()["Topics"][0]["TopicArn"]
    worker = tracker(topic, refresh_seconds=60)
    write_results(s3, tasks[0])
    assert not worker.cancelled("stop")
    # When it is cancelled
    code, out, _ = run(capsys, "cancel", "stop")
    assert code == 0 and out == {"job_id": "stop", "state": "cancelling", "was": "running"}
    assert status(capsys, "stop")["state"] == "cancelling"
    code, _, err = submit(capsys, queues, "stop")
    assert code == 2 and "is being cancelled" in err
    # Then a worker sees it once its cache is stale, and acknowledges the rest without work
    assert not worker.cancelled("stop")  # cached for refresh_seconds
    assert tracker(topic).cancelled("stop")
    late = tracker(topic)
    for task in tasks[1:]:
        late.task_cancelled(task)
        late.task_cancelled(task)  # a redelivery counts once
    shown = status(capsys, "stop")
    assert (shown["state"], shown["tasks_done"], shown["tasks_cancelled"]) == ("cancelled", 1, 3)
    (event,) = finished(events)
    assert (event.state, event.tasks_done, event.tasks_cancelled) == ("cancelled", 1, 3)
    # and export says the results are partial
    out_csv = str(tmp_path / "stop.csv")
    code, out, err = run(capsys, "export", "stop", "--results", RESULTS_URI, "--out", out_csv)
    assert code == 0 and out["state"] == "cancelled" and out["written"] == 2
    assert "is cancelled: these are the results of 1 of its 4 tasks" in err
    page = tmp_path / "stop.html"
    code, _, _ = run(capsys, "report", "stop", "--results", RESULTS_URI, "--out", str(page))
    assert (
        code == 0 and "is cancelled: these are the results of 1 of its 4 tasks" in page.read_text()
    )
    code, _, err = run(capsys, "status", "stop", "--wait", "--results", RESULTS_URI)
    assert code == 1 and "job stop was cancelled: 3 of its tasks have no result" in err
    # and cancelling again or a finished job is said plainly
    assert run(capsys, "cancel", "stop")[1]["state"] == "cancelled"
    code, _, err = run(capsys, "cancel", "nope")
    assert code == 4 and "no job 'nope'" in err


def test_a_cancelled_job_submitted_again_resumes_with_the_tasks_left(
    s3, sqs, queues, events, capsys
):
    # Given a job of 3 tasks cancelled after one was done, one of the others being worked on
    upload(s3, [f"p/{i}.jpg" for i in range(6)])
    submit(capsys, queues, "again")
    tasks = sorted(drain(sqs, queues.queue_url), key=lambda t: t.task_id)
    write_results(s3, tasks[0])
    run(capsys, "cancel", "again")
    worker = tracker()
    worker.task_cancelled(tasks[1])
    worker.task_cancelled(tasks[2])
    write_results(s3, tasks[2])  # a worker that had it before the cancel: done, not cancelled
    shown = status(capsys, "again")
    assert (shown["state"], shown["tasks_done"], shown["tasks_cancelled"]) == ("cancelled", 2, 1)
    # When it is submitted again with the same id
    code, out, _ = submit(capsys, queues, "again")
    # Then only the task without a result is sent, and finishing it completes the job
    assert code == 0 and (out["to_send"], out["skipped_done"]) == (1, 2)
    (resent,) = drain(sqs, queues.queue_url)
    assert resent.task_id == tasks[1].task_id
    write_results(s3, resent)
    shown = status(capsys, "again")
    assert (shown["state"], shown["tasks_done"], shown["tasks_cancelled"]) == ("complete", 3, 0)
    assert [(e.state, e.tasks_done) for e in finished(events)] == [
        ("cancelled", 2),
        ("complete", 3),
    ]


def test_a_complete_job_submitted_again_counts_afresh(s3, sqs, queues, capsys):
    upload(s3, [f"p/{i}.jpg" for i in range(4)])
    submit(capsys, queues, "twice")
    first = drain(sqs, queues.queue_url)
    worker = tracker(refresh_seconds=60)
    for task in first:
        write_results(s3, task)
    assert status(capsys, "twice")["state"] == "complete"
    worker.cancelled("twice")  # its cache holds the first generation
    # When it is submitted again (a new model, say): every task is sent and counted again
    submit(capsys, queues, "twice")
    assert status(capsys, "twice")["tasks_done"] == 0
    for task in drain(sqs, queues.queue_url):
        worker.task_finished(task, lines_of(task))  # a stale cache: read again, counted once
    shown = status(capsys, "twice")
    assert (shown["state"], shown["tasks_done"], shown["images_done"]) == ("complete", 2, 4)


def test_jobs_lists_every_job_newest_first_and_filters_by_state(s3, sqs, queues, capsys):
    upload(s3, [f"p/{i}.jpg" for i in range(4)])
    for job in ("older", "newer"):
        submit(capsys, queues, job)
    for task in drain(sqs, queues.queue_url):
        if task.job_id == "older":
            write_results(s3, task)
    code, out, _ = run(capsys, "jobs", "--json")
    listed = json_lines(out)
    assert code == 0 and [(j["job_id"], j["state"]) for j in listed] == [
        ("newer", "running"),
        ("older", "complete"),
    ]
    code, out, _ = run(capsys, "jobs", "--state", "running", "--json")
    assert [j["job_id"] for j in json_lines(out)] == ["newer"]
    code, out, _ = run(capsys, "jobs")
    header, *rows = out.splitlines()
    assert header.split() == ["JOB", "STATE", "PROGRESS", "FAILED", "RATE", "AGE"]
    assert rows[1].split()[:3] == ["older", "complete", "4/4"]


def test_an_empty_job_ends_itself(s3, sqs, queues, events, capsys):
    code, _, err = submit(capsys, queues, "empty")
    assert code == 3 and "no images under" in err
    assert status(capsys, "empty")["state"] == "complete"
    (event,) = finished(events)
    assert (event.state, event.tasks_total) == ("complete", 0)


@pytest.mark.parametrize("table", [DEFAULT_JOBS_TABLE, "no-such-table"])
def test_a_job_without_a_record_is_never_cancelled_and_costs_one_read_a_period(
    queues, dynamodb, table
):
    """The S3 events' stream job has no record; a stack without the table neither: the work
    goes on, uncounted, for one small read per job and period."""
    from tests.v2jobs import Counting

    client_ = Counting(dynamodb)
    now = [0.0]
    worker = JobTracker(dynamodb=client_, table=table, refresh_seconds=5, clock=lambda: now[0])
    task = TaskMessage(
        job_id="stream", task_id="s3-x", bucket=INPUT, keys=("a.jpg",), results=RESULTS_URI
    )
    for _ in range(20):
        assert not worker.cancelled("stream")
        worker.task_finished(task, lines_of(task))
    now[0] = 6.0
    assert not worker.cancelled("stream")
    assert client_.calls == {"get_item": 2}


def test_a_corrupt_record_is_a_clear_error_never_a_crash(s3, sqs, queues, dynamodb, capsys):
    upload(s3, [f"p/{i}.jpg" for i in range(4)])
    submit(capsys, queues, "bent")
    tasks = drain(sqs, queues.queue_url)
    dynamodb.update_item(
        TableName=DEFAULT_JOBS_TABLE,
        Key={"id": {"S": "bent"}},
        UpdateExpression="SET #s = :x",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":x": {"S": "melted"}},
    )
    worker = tracker()
    assert not worker.cancelled("bent")
    worker.task_finished(tasks[0], lines_of(tasks[0]))  # the work goes on, uncounted
    s3.put_object(Bucket=RESULTS, Key=tasks[0].result_key, Body=b"")
    code, out, err = run(capsys, "status", "bent", "--results", RESULTS_URI)
    assert code == 0 and "record of job 'bent' cannot be read" in err
    assert out["tasks_done"] == 1 and out["tasks_total"] == 2  # from the results listing
    code, _, err = submit(capsys, queues, "bent")
    assert code == 2 and "cannot be read" in err and "another --job-id" in err


def test_counter_shards_spread_a_job_and_sum_to_its_counts(s3, sqs, queues, dynamodb, capsys):
    upload(s3, [f"p/{i:02d}.jpg" for i in range(40)])
    submit(capsys, queues, "spread")
    worker = tracker()
    for task in drain(sqs, queues.queue_url):
        write_results(s3, task, tracker=worker)
    got = dynamodb.batch_get_item(
        RequestItems={
            DEFAULT_JOBS_TABLE: {
                "Keys": [{"id": {"S": counter_id("spread", k)}} for k in range(COUNTER_SHARDS)]
            }
        }
    )["Responses"][DEFAULT_JOBS_TABLE]
    done = [int(item["tasks_done"]["N"]) for item in got]
    assert sum(done) == 20 and sum(1 for n in done if n) >= 4


@pytest.mark.slow
def test_three_workers_racing_to_finish_one_job_publish_one_event(stack, monkeypatch, capsys):
    """On moto's server (concurrent requests over the wire): three workers, each with its own
    clients, take every task of a 30-task job (each task delivered to all three, in another
    order), and race to count and end it."""
    import random
    import threading

    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    sns, sqs, s3 = client("sns"), client("sqs"), client("s3")
    topic = sns.create_topic(Name=f"events-{stack.suffix}")["TopicArn"]
    app = sqs.create_queue(QueueName=f"app-{stack.suffix}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=app, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    monkeypatch.setenv("POSEFLEET_EVENTS_TOPIC", topic)
    for i in range(60):
        s3.put_object(Bucket=stack.input, Key=f"race/{i:02d}.jpg", Body=b"x")
    code, out, err = run(
        capsys, "--bucket", stack.input, "--prefix", "race/", "--job-id", "race", "--task-size", "2"
    )
    assert code == 0 and out["tasks"] == 30, err
    tasks = drain(sqs, stack.queues.queue_url)
    start = threading.Barrier(3)
    failures: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            tracker = JobTracker(
                dynamodb=client("dynamodb"),
                table=f"jobs-{stack.suffix}",
                events=EventChannel(sns=client("sns"), topic_arn=topic),
            )
            mine = random.Random(seed).sample(tasks, len(tasks))
            start.wait()
            for task in mine:
                tracker.task_finished(task, lines_of(task, frozenset({task.keys[0]})))
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    events = []
    while got := sqs.receive_message(QueueUrl=app, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
        "Messages"
    ):
        events += [parse_event(m["Body"]) for m in got]
        for m in got:
            sqs.delete_message(QueueUrl=app, ReceiptHandle=m["ReceiptHandle"])
    assert [(e.job_id, e.state) for e in events] == [("race", "complete")]
    (event,) = events
    assert (event.tasks_done, event.images_ok, event.images_failed) == (30, 30, 30)
    shown = status(capsys, "race")
    assert (shown["state"], shown["tasks_done"], shown["images_done"]) == ("complete", 30, 60)


class Recording:
    """A DynamoDB client that notes, per write action, the items' ids and every attribute name
    the request names (Item keys, expression names and bare names in its expressions)."""

    WORDS = {"SET", "ADD", "REMOVE", "AND", "OR", "NOT", "IN", "attribute_not_exists"}

    def __init__(self, real) -> None:
        self.real, self.writes = real, []

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def _note(self, action: str, op: dict) -> None:
        import re

        names = set(op.get("Item", {})) | set(op.get("Key", {}))
        aliases = op.get("ExpressionAttributeNames", {})
        for field in ("UpdateExpression", "ConditionExpression"):
            for word in re.findall(r"[#:]?[A-Za-z_][A-Za-z0-9_]*", op.get(field, "")):
                if word.startswith("#"):
                    names.add(aliases[word])
                elif not word.startswith(":") and word not in self.WORDS:
                    names.add(word)
        item_id = (op.get("Item") or op.get("Key"))["id"]["S"]
        self.writes.append((action, item_id, names))

    def transact_write_items(self, *, TransactItems):
        for entry in TransactItems:
            ((kind, op),) = entry.items()
            self._note({"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem"}[kind], op)
        return self.real.transact_write_items(TransactItems=TransactItems)

    def update_item(self, **op):
        self._note("dynamodb:UpdateItem", op)
        return self.real.update_item(**op)


def test_the_deployed_worker_policy_allows_every_write_the_tracker_makes(
    s3, sqs, queues, dynamodb, events, capsys
):
    """infra/components/jobs.py's conditions against what JobTracker really sends: markers
    only through PutItem, only the allowed attributes, and nothing else."""
    from fnmatch import fnmatch

    from infra.components.jobs import worker_policy

    upload(s3, [f"p/{i}.jpg" for i in range(6)])
    submit(capsys, queues, "policed")
    tasks = drain(sqs, queues.queue_url)
    run(capsys, "cancel", "policed")
    recording = Recording(dynamodb)
    topic = client("sns").list_topics()["Topics"][0]["TopicArn"]
    worker = JobTracker(
        dynamodb=recording,
        table=DEFAULT_JOBS_TABLE,
        events=__import__("posefleet.events").events.EventChannel(
            sns=client("sns"), topic_arn=topic
        ),
    )
    worker.task_finished(tasks[0], lines_of(tasks[0], frozenset({tasks[0].keys[0]})))
    for task in tasks[1:]:
        worker.task_cancelled(task)
    assert status(capsys, "policed")["state"] == "cancelled"  # it ended the job, published
    allowed = {st["Sid"]: st for st in worker_policy("arn:table")["Statement"]}
    put = allowed["PutTaskMarkers"]["Condition"]
    update = allowed["CountTasksAndEndJobs"]["Condition"]
    actions = {action for action, _, _ in recording.writes}
    assert actions == {"dynamodb:PutItem", "dynamodb:UpdateItem"}
    for action, item_id, names in recording.writes:
        if action == "dynamodb:PutItem":
            (pattern,) = put["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
            assert fnmatch(item_id, pattern), item_id
            assert names <= set(put["ForAllValues:StringEquals"]["dynamodb:Attributes"])
        else:
            assert names <= set(update["ForAllValues:StringEquals"]["dynamodb:Attributes"]), (
                item_id,
                names,
            )


@pytest.mark.slow
def test_sending_stops_when_the_job_is_cancelled_and_the_same_id_resumes_it(
    s3, sqs, queues, capsys, monkeypatch, tmp_path
):
    import producer.__main__ as cli
    from posefleet.job_table import JobTable

    # Given a job of 200 one-key tasks, sent ten at a time by one sender, slowly
    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"k/{i:04d}.jpg\n" for i in range(200)))
    monkeypatch.setenv("POSEFLEET_SEND_CONCURRENCY", "1")
    args = ("--keys", str(keys), "--bucket", INPUT, "--job-id", "halt", "--task-size", "1")
    table = JobTable(dynamodb=client("dynamodb"), table=DEFAULT_JOBS_TABLE)
    real_client = cli.client

    class CancelledMidway:
        def __init__(self, real) -> None:
            self.real, self.batches = real, 0

        def __getattr__(self, name: str):
            return getattr(self.real, name)

        def send_message_batch(self, **kw):
            self.batches += 1
            if self.batches == 3:  # the operator cancels while tasks are being sent
                assert table.cancel("halt") == "submitting"
            time.sleep(0.15)
            return self.real.send_message_batch(**kw)

    def client_(service: str, **kw):
        made = real_client(service, **kw)
        return CancelledMidway(made) if service == "sqs" else made

    monkeypatch.setattr(cli, "client", client_)
    # When it is submitted
    code, out, err = run(capsys, *args, "--queue-url", queues.queue_url, "--results", RESULTS_URI)
    # Then the submit stops sending within about a second, and says so
    assert code == 1 and out["cancelled"] is True and "was cancelled while" in err
    first = drain(sqs, queues.queue_url)
    assert 20 <= len(first) < 200
    shown = status(capsys, "halt")
    assert (shown["state"], shown["tasks_total"]) == ("cancelling", len(first))
    # and it reads cancelled once the workers have counted what was sent
    worker = tracker()
    for task in first:
        worker.task_cancelled(task)
    assert status(capsys, "halt")["state"] == "cancelled"
    # When it is submitted again: every task without a result goes, and it completes
    monkeypatch.setattr(cli, "client", real_client)
    code, out, _ = run(capsys, *args, "--queue-url", queues.queue_url, "--results", RESULTS_URI)
    assert code == 0
    second = drain(sqs, queues.queue_url)
    assert sorted(k for t in second for k in t.keys) == [f"k/{i:04d}.jpg" for i in range(200)]
    for task in second:
        worker.task_finished(task, lines_of(task))
    shown = status(capsys, "halt")
    assert (shown["state"], shown["tasks_done"], shown["tasks_cancelled"]) == ("complete", 200, 0)


def test_large_partitions_take_large_tasks_after_their_first_shard(
    s3, sqs, queues, capsys, tmp_path
):
    # Given a keys file (one partition) of 2,300 keys, submitted with the default task sizes
    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"k/{i:04d}.jpg\n" for i in range(2300)))
    code, out, _ = run(
        capsys,
        *("--keys", str(keys), "--bucket", INPUT, "--job-id", "sized"),
        *("--queue-url", queues.queue_url, "--results", RESULTS_URI),
    )
    # Then its first 100 tasks hold 20 keys, the rest 100 (the last what is left)
    assert code == 0 and out["tasks"] == 103
    tasks = sorted(drain(sqs, queues.queue_url), key=lambda t: t.task_id)
    assert [len(t.keys) for t in tasks] == [20] * 100 + [100] * 3
    # and progress and export count their images right
    worker = tracker()
    for task in tasks[:50] + tasks[100:102]:
        write_results(s3, task, tracker=worker)
    code, exact, _ = run(capsys, "status", "sized", "--exact", "--results", RESULTS_URI)
    assert (exact["tasks_done"], exact["images_done"], exact["images_total"]) == (52, 1200, 2300)
    shown = status(capsys, "sized")
    assert (shown["tasks_done"], shown["images_done"], shown["state"]) == (52, 1200, "running")
    out_csv = str(tmp_path / "sized.csv")
    code, out, _ = run(capsys, "export", "sized", "--results", RESULTS_URI, "--out", out_csv)
    assert code == 0 and out["written"] == 1200


def test_every_task_is_sent_with_its_job_as_its_message_group(s3, sqs, queues, capsys):
    upload(s3, [f"p/{i}.jpg" for i in range(6)])
    submit(capsys, queues, "fair")
    got = sqs.receive_message(
        QueueUrl=queues.queue_url,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["MessageGroupId"],
    )["Messages"]
    assert len(got) == 3 and {m["Attributes"]["MessageGroupId"] for m in got} == {"fair"}
