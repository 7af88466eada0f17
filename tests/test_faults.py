"""When AWS misbehaves, end to end (issue 19): three real workers and the real producer talk to
moto's server through the fault proxy (benchmarks/faults/proxy.py), which faults a share of
their calls (retryable errors, resets before and after forwarding, 1-4 s delays) for the whole
job and refuses every call for 26 s mid-job. Invalid bodies wait on the queue.

A live worker retries transient faults in place: every image is labelled exactly once and
``ok``, only the invalid bodies reach the dead-letter queue, and every worker is still running
and labels again within 10 s of the outage's end. The heavy runs (half of all calls faulted,
a two-minute outage) are ``make bench-faults`` (docs/benchmarks.md, "AWS faults").
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import pytest

from benchmarks.faults.job import (
    dead_letters,
    invalid_bodies,
    outcome,
    photos,
    task_objects,
    worker_activity,
)
from benchmarks.faults.proxy import OUTAGE, Fault, FaultPlan, FaultProxy
from posefleet.resources import QueueSpec
from tests.conftest import Stack
from tests.helpers import upload, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAULT_RATE = 0.3  # of every worker call, shared by the four kinds
# 26 s: a receive back-off of 1, 2, 4, 8, 16 s (today's worker) is then still waiting well after
# AWS is back, so a slow recovery cannot pass by the luck of where the outage's end falls.
OUTAGE_SECONDS = 26.0
RECOVERY_SECONDS = 10.0  # every worker labels again within this of the outage's end
IMAGES, TASK_SIZE, INVALID = 60, 5, 8


def test_workers_ride_out_faults_and_an_outage_and_label_every_image_once(
    moto_server, processes, checkpoint_path
):
    # Given the deployed queue (maxReceiveCount included) with a visibility timeout longer than
    # the outage, photos, and bodies that are no task already on the queue
    spec = replace(QueueSpec(), visibility_timeout=40, receive_wait_seconds=1)
    stack = Stack(moto_server, spec)
    keys = upload(stack.s3, photos(IMAGES, prefix="faulty/", seed=19), bucket=stack.input)
    invalid = invalid_bodies(INVALID)
    for body in invalid:
        stack.sqs.send_message(QueueUrl=stack.queues.queue_url, MessageBody=body)
    tasks = IMAGES // TASK_SIZE

    plan = FaultPlan.spread(FAULT_RATE, seed=19, spare_clients=frozenset({"producer"}))
    with FaultProxy(moto_server.url, plan) as proxy:
        # When three workers (each holding at most two tasks, so all have work after the
        # outage) and the producer serve the job through the proxy
        env = stack.env(
            AWS_ENDPOINT_URL=proxy.url,
            POSEFLEET_MODEL=str(checkpoint_path),
            POSEFLEET_VISIBILITY_TIMEOUT=str(spec.visibility_timeout),
            POSEFLEET_HEARTBEAT_SECONDS="2",
            POSEFLEET_BATCH_SIZE="5",
            POSEFLEET_MAX_IMAGES_IN_FLIGHT=str(2 * TASK_SIZE),
        )
        workers = [
            processes.worker(f"w{i}", env | {"AWS_SDK_UA_APP_ID": f"worker-{i}"}) for i in range(3)
        ]
        for w in workers:
            w.wait_for("worker_started", timeout=120)
        job = ["--bucket", stack.input, "--prefix", "faulty/", "--job-id", "faulty"]
        submit = subprocess.run(
            [sys.executable, "-m", "producer", *job, "--task-size", str(TASK_SIZE)],
            env=env | {"AWS_SDK_UA_APP_ID": "producer"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submit.returncode == 0, submit.stderr[-2000:]

        # and every call is refused for a while, once the first task is written
        wait_until(lambda: task_objects(stack.s3, stack.results_uri, "faulty"), 60, "a task")
        proxy.outage(OUTAGE_SECONDS)
        outage_end = time.time() + OUTAGE_SECONDS
        wait_until(
            lambda: time.time() > outage_end and stack.count(stack.queues.queue_url) == 0,
            150,
            "every message deleted or dead-lettered",
        )
        running = {w.name: w.popen.poll() is None for w in workers}
        counts = proxy.counts()

    # Then every image has exactly one line, ok
    result = outcome(stack.s3, stack.results_uri, "faulty", keys)
    letters = dead_letters(stack.sqs, stack.queues.dlq_url)
    activity = {w.name: worker_activity(w.stderr) for w in workers}
    recovery = {
        name: (
            round(t - outage_end, 1) if (t := a.first_done_after(outage_end)) is not None else None
        )
        for name, a in activity.items()
    }
    print(
        f"\nfaults test: {result.summary()} dead_letters={letters.summary(invalid)} "
        f"running={running} labelled_again_after_s={recovery} proxy={counts.as_dict()['outcomes']}"
    )
    assert all(counts.total(kind) for kind in Fault), "every kind of fault happened"
    assert counts.total(OUTAGE) > 0
    assert result.every_image_once_ok, result.summary()
    assert result.task_objects == tasks
    # only the invalid bodies are in the dead-letter queue (one may be there twice: a send
    # whose answer was lost is sent again)
    assert set(letters.bodies) == set(invalid)
    # and every worker is alive, lost no thread, and labelled again soon after the outage
    assert running == {w.name: True for w in workers}
    assert {name: a.thread_deaths for name, a in activity.items()} == {w.name: [] for w in workers}
    late = {name: s for name, s in recovery.items() if s is None or s > RECOVERY_SECONDS}
    assert not late, f"labelled again only after (s): {recovery}"
