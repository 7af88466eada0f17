"""Crash tolerance, end to end: moto's server and real worker processes, killed for real.

SQS counts receives, not failures. These tests show that interrupted workers never
dead-letter healthy work, that an image which kills the worker is isolated by name and ends as
a ``crashed_worker`` line while its task-mates get their results, and that a body the worker
can judge invalid reaches the dead-letter queue at once, with its reason.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace

import pytest

from posefleet.attempts import AttemptMarker, attempts_key
from posefleet.deadletter import REASON_ATTRIBUTE, REDRIVE_REASON
from posefleet.layout import ResultsLocation
from posefleet.resources import QueueSpec
from posefleet.settings import WorkerSettings
from posefleet.task import TaskMessage
from tests.conftest import Stack
from tests.helpers import all_lines, produce, upload, wait_until
from tests.images import jpeg
from tests.poison_worker import EXIT_CODE, MARK

pytestmark = pytest.mark.e2e


def deployed_spec() -> QueueSpec:
    """The queue as the project deploys it (maxReceiveCount included), except its visibility
    timeout: short, so that a killed worker's messages come back within the test."""
    return replace(QueueSpec(), visibility_timeout=10, receive_wait_seconds=1)


def result_objects(stack: Stack, job: str) -> int:
    loc = ResultsLocation.parse(stack.results_uri)
    listing = stack.s3.list_objects_v2(Bucket=stack.results, Prefix=loc.tasks_prefix(job))
    return listing.get("KeyCount", 0)


def test_twenty_rounds_of_sigkill_dead_letter_nothing_and_lose_nothing(
    moto_server, processes, checkpoint_path
):
    # Given 300 photos in tasks of 5, three workers, the project's queue and worker defaults
    spec = deployed_spec()
    stack = Stack(moto_server, spec)
    rng = random.Random(12)
    keys = upload(
        stack.s3,
        bucket=stack.input,
        files={f"crash/{i:04d}.jpg": jpeg((256, 192), seed=i) for i in range(300)},
    )
    tasks = len(keys) // 5
    env = stack.env(
        POSEFLEET_MODEL=str(checkpoint_path),
        POSEFLEET_VISIBILITY_TIMEOUT=str(spec.visibility_timeout),
        POSEFLEET_HEARTBEAT_SECONDS="2",
    )
    live = [processes.worker(f"w{i}", env) for i in range(3)]
    produce(stack, "crash/", "crash", task_size=5)

    # When a worker is SIGKILLed and replaced every 1.5-4 s, twenty times, then one SIGTERMed.
    # Each victim has served 1.5-4 s: on a loaded machine, workers killed on a clock alone may
    # all be still loading the model, and such kills test nothing.
    kills = 0
    for round_ in range(20):
        victim = live.pop(rng.randrange(len(live)))
        victim.wait_for("worker_started", timeout=120)
        time.sleep(rng.uniform(1.5, 4.0))
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait()
        kills += 1
        live.append(processes.worker(f"w-r{round_:02d}", env))
    terminated = live.pop(rng.randrange(len(live)))
    terminated.wait_for("worker_started", timeout=120)  # its handler is in place: it drains
    time.sleep(rng.uniform(1.5, 4.0))
    terminated.popen.send_signal(signal.SIGTERM)
    assert terminated.popen.wait(timeout=120) == 0
    wait_until(
        lambda: (
            result_objects(stack, "crash") + stack.count(stack.queues.dlq_url) >= tasks
            and stack.count(stack.queues.queue_url) == 0
        ),
        300,
        f"all {tasks} tasks to end",
    )

    # Then every image has exactly one line, none an error, and nothing is dead-lettered
    lines = all_lines(stack, "crash")
    counts = Counter(line.key for line in lines)
    done = [e for p in processes.procs for e in p.events("task_done")]
    isolated = [e for p in processes.procs for e in p.events("message_isolated")]
    dead = stack.count(stack.queues.dlq_url)
    figures = {
        "images": len(keys),
        "tasks": tasks,
        "kills": kills,
        "redeliveries": sum(1 for e in done if e["receives"] > 1),
        "isolated": len(isolated),
        "max_receives": max((e["receives"] for e in done), default=0),
        "results": len(lines),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "losses": len(set(keys) - set(counts)),
        "errors": sum(1 for line in lines if line.status != "ok"),
        "dead_letters": dead,
        "max_receive_count": spec.max_receive_count,
    }
    print("\nfault test: " + " ".join(f"{k}={v}" for k, v in figures.items()))
    assert (figures["duplicates"], figures["losses"], len(lines)) == (0, 0, len(keys))
    assert [line.error_message for line in lines if line.status != "ok"] == []
    assert dead == 0
    assert kills == 20


def serve_with_replacements(
    stack: Stack,
    processes,
    env: dict[str, str],
    *,
    prefix: str,
    job: str,
    task_size: int,
    objects: int,
) -> int:
    """Submit ``prefix`` as ``job`` to two tests.poison_worker processes, each replaced when it
    dies (as ECS would), until the job's ``objects`` result objects are written and the queue is
    empty; returns how many times a worker died."""
    start = [0]

    def worker():
        start[0] += 1
        return processes.start(f"p{start[0]:02d}", ["-m", "tests.poison_worker"], env)

    live = [worker(), worker()]
    produce(stack, prefix, job, task_size=task_size)
    crashes = 0
    deadline = time.monotonic() + 300
    while result_objects(stack, job) < objects or stack.count(stack.queues.queue_url):
        assert time.monotonic() < deadline, "the job did not finish within 300 s"
        for i, p in enumerate(live):
            if p.popen.poll() is not None:
                assert p.popen.returncode == EXIT_CODE, p.stderr.read_text()[-3000:]
                crashes += 1
                live[i] = worker()
        time.sleep(0.2)
    return crashes


def test_an_image_that_kills_the_worker_ends_as_an_error_line_and_its_mates_get_results(
    moto_server, processes, checkpoint_path
):
    # Given a job of 21 photos in tasks of 5, one of which kills the worker when decoded
    spec = deployed_spec()
    stack = Stack(moto_server, spec)
    files = {f"poison/{i:03d}.jpg": jpeg((256, 192), seed=i) for i in range(21)}
    poison = "poison/007.jpg"
    files[poison] = jpeg((256, 192), seed=7, comment=MARK)
    keys = upload(stack.s3, bucket=stack.input, files=files)
    env = stack.env(
        POSEFLEET_MODEL=str(checkpoint_path),
        POSEFLEET_VISIBILITY_TIMEOUT=str(spec.visibility_timeout),
        POSEFLEET_HEARTBEAT_SECONDS="2",
        POSEFLEET_BATCH_SIZE="4",
    )
    # When two poison-dying workers serve it, each replaced when it dies (as ECS would)
    crashes = serve_with_replacements(
        stack, processes, env, prefix="poison/", job="poison", task_size=5, objects=5
    )

    # Then the poison image has a crashed_worker line after a bounded number of crashes,
    lines = all_lines(stack, "poison")
    by_key = {line.key: line for line in lines}
    limit = WorkerSettings().crash_attempts
    print(
        f"\npoison test: images={len(keys)} crashes={crashes} (crash_attempts={limit}) "
        f"outcome={by_key[poison].error_kind}"
    )
    # once in an ordinary batch, once tried with its task-mates, then `limit` times alone
    assert crashes == limit + 2
    assert (by_key[poison].status, by_key[poison].error_kind) == ("error", "crashed_worker")
    # and every other image, its task-mates included, has exactly one ok line
    assert sorted(line.key for line in lines) == keys
    assert [k for k, line in by_key.items() if line.status != "ok"] == [poison]
    # the marker that named it stays (mates that came back with it were cleared), and nothing
    # went to the dead-letter queue
    loc = ResultsLocation.parse(stack.results_uri)
    listing = stack.s3.list_objects_v2(Bucket=stack.results, Prefix=loc.job_prefix("poison"))
    markers = [
        AttemptMarker.model_validate_json(
            stack.s3.get_object(Bucket=stack.results, Key=o["Key"])["Body"].read()
        )
        for o in listing["Contents"]
        if "/attempts/" in o["Key"]
    ]
    assert [m.attempts for m in markers if m.attempts] == [{poison: limit}]
    named = next(m for m in markers if m.attempts)
    # (the marker is the named task's own: its key is built from the job and task it names)
    assert named.job_id == "poison"
    assert attempts_key(loc, "poison", named.task_id) in {o["Key"] for o in listing["Contents"]}
    assert stack.count(stack.queues.dlq_url) == 0


def test_invalid_bodies_reach_the_dead_letter_queue_at_once_with_their_reason(
    stack, processes, checkpoint_path
):
    # Given bodies a worker can judge by themselves, a dead letter of the redrive policy's,
    # and a good task
    invalid = {
        "{not json": "not JSON",
        "[1, 2]": "expected an object",
        '{"job_id": "j"}': "not a posefleet task",
        json.dumps({"v": 2, "job_id": "j", "task_id": "t"}): "task version 2 is unknown",
    }
    for body in invalid:
        stack.sqs.send_message(QueueUrl=stack.queues.queue_url, MessageBody=body)
    stack.sqs.send_message(QueueUrl=stack.queues.dlq_url, MessageBody='{"old": "letter"}')
    stack.s3.put_object(Bucket=stack.input, Key="ok/1.jpg", Body=jpeg())
    good = TaskMessage(
        job_id="inv",
        task_id="000000-a",
        bucket=stack.input,
        keys=("ok/1.jpg",),
        results=stack.results_uri,
    )
    stack.sqs.send_message(QueueUrl=stack.queues.queue_url, MessageBody=good.to_body())

    # When a worker serves the queue
    env = stack.env(POSEFLEET_MODEL=str(checkpoint_path))
    worker = processes.worker("inv", env, "--exit-when-idle", "3")
    assert worker.popen.wait(timeout=240) == 0

    # Then each invalid body was dead-lettered on its first receive, by the worker
    events = worker.events("invalid_message")
    assert sorted(e["action"] for e in events) == ["dead_lettered"] * len(invalid)
    assert all(e["receives"] == 1 for e in events)
    assert stack.count(stack.queues.queue_url) == 0
    assert [line.status for line in all_lines(stack, "inv")] == ["ok"]

    # and `producer redrive --peek` prints each letter's reason
    peek = subprocess.run(
        [sys.executable, "-m", "producer", "redrive", "--peek"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert peek.returncode == 0, peek.stderr
    printed = {d["body"]: d["reason"] for d in map(json.loads, peek.stdout.splitlines())}
    assert set(printed) == {*invalid, '{"old": "letter"}'}
    for body, why in invalid.items():
        assert why in printed[body], (body, printed[body])
    assert printed['{"old": "letter"}'] == REDRIVE_REASON

    # and the reason travels as the message attribute that peek read
    letters = {}
    while got := stack.sqs.receive_message(
        QueueUrl=stack.queues.dlq_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=30,
        MessageAttributeNames=["All"],
    ).get("Messages"):
        letters |= {m["Body"]: m.get("MessageAttributes", {}) for m in got}
    assert set(letters) == {*invalid, '{"old": "letter"}'}
    for body, why in invalid.items():
        assert why in letters[body][REASON_ATTRIBUTE]["StringValue"], body
    assert REASON_ATTRIBUTE not in letters['{"old": "letter"}']
