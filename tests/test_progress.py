"""Following a job: the live view, its bounded cost on large jobs, and queues without a DLQ."""

from __future__ import annotations

import io
import json
import random

import pytest

import producer.job.follow as follow_module
import producer.job.progress as progress_module
from producer.job.follow import follow, poll_interval
from tests.conftest import INPUT, RESULTS
from tests.helpers import LOC, RESULTS_URI, drain, job_of, run, upload, write_results
from tests.v2jobs import Counting, plan, write_job


@pytest.fixture
def plain_queue(sqs) -> str:
    """A tasks queue with no RedrivePolicy: SQS answers GetQueueAttributes without Attributes."""
    return sqs.create_queue(QueueName="no-dlq")["QueueUrl"]


def test_wait_follows_a_job_whose_queue_has_no_dead_letter_queue(
    s3, sqs, queues, plain_queue, capsys
):
    # Given a job sent to a queue without a redrive policy, every task with its result
    assert "Attributes" not in sqs.get_queue_attributes(
        QueueUrl=plain_queue, AttributeNames=["RedrivePolicy"]
    )
    upload(s3, [f"p/{i}.jpg" for i in range(5)])
    code, out, _ = run(
        capsys,
        *("--bucket", INPUT, "--prefix", "p/", "--job-id", "nodlq", "--task-size", "2"),
        *("--queue-url", plain_queue, "--results", RESULTS_URI),
    )
    assert code == 0 and out["tasks"] == 3
    for task in drain(sqs, plain_queue):
        write_results(s3, task, broken={"p/3.jpg"})
    # When status --wait follows it
    code, _, err = run(
        capsys, "status", "nodlq", "--wait", "--queue-url", plain_queue, "--results", RESULTS_URI
    )
    # Then it completes and says once that there is no dead-letter queue
    assert code == 0, err
    assert err.count("no dead-letter queue") == 1
    assert "5/5 images (1 failed)" in err and "complete, 5 images" in err
    assert s3.list_objects_v2(Bucket=RESULTS, Prefix="results/nodlq/tasks/")["KeyCount"] == 3


# -- large jobs: sampled live view, exact confirmation -------------------------------------------

PARTS = {"a0a0a0a0a0": 500, "b1b1b1b1b1": 300, "c2c2c2c2c2": 400}  # 1,200 tasks


@pytest.fixture
def small_thresholds(monkeypatch):
    """A 1,200-task job counts as large: exact up to 100 tasks, windows of at most 50 tasks."""
    for module in (progress_module, follow_module):
        monkeypatch.setattr(module, "EXACT_TASKS", 100)
    monkeypatch.setattr(progress_module, "PAGE", 50)


MANY_SMALL = {f"{i:010x}": 6 for i in range(200)}  # also 1,200 tasks, windows cross partitions


@pytest.mark.parametrize("partitions", [PARTS, MANY_SMALL], ids=["3-partitions", "200-partitions"])
def test_a_large_job_is_sampled_with_a_bounded_number_of_calls(
    s3, queues, small_thresholds, partitions
):
    # Given a 1,200-task job whose even-numbered tasks are done
    tasks = plan(partitions, task_size=3, last=2)
    manifest = write_job(
        s3,
        LOC,
        "big",
        tasks,
        task_size=3,
        queue_url=queues.queue_url,
        done=lambda t: t.index % 2 == 0,
    )
    truth = sum(1 for t in tasks if t.index % 2 == 0)
    counting = Counting(s3)
    # When its progress is read
    p = job_of(counting, "big", manifest=manifest).progress(rng=random.Random(7))
    # Then ten windows were listed, one LIST call each, and the estimate is close
    assert counting.calls == {"get_object": 1, "list_objects_v2": progress_module.WINDOWS}
    assert not p.exact and not p.complete and p.sampled_tasks == progress_module.WINDOWS * 50
    assert abs(p.tasks_done - truth) <= 0.1 * len(tasks)
    assert abs(p.images_done - manifest.images / 2) <= 0.1 * manifest.images
    assert p.done_keys and all(LOC.task_id_of("big", k) for k in p.done_keys)
    # and the exact count is exact
    exact = job_of(s3, "big").progress(exact=True)
    images = sum(len(t.keys) for t in tasks if t.index % 2 == 0)
    assert (exact.exact, exact.tasks_done, exact.images_done) == (True, truth, images)


@pytest.mark.slow
def test_status_counts_exactly_on_request_and_ignores_objects_outside_the_plan(
    s3, queues, capsys, small_thresholds
):
    tasks = plan(PARTS, task_size=2)
    missing = {t.task_id for t in tasks[::173]}  # 7 tasks without a result
    write_job(
        s3,
        LOC,
        "almost",
        tasks,
        task_size=2,
        queue_url=queues.queue_url,
        done=lambda t: t.task_id not in missing,
    )
    for stray in ("a0a0a0a0a0-000500-ffffffffff", "zzzzzzzzzz-000000-ffffffffff", "junk"):
        s3.put_object(Bucket=RESULTS, Key=LOC.task_key("almost", stray), Body=b"")
    code, out, _ = run(
        capsys,
        "status",
        "almost",
        "--exact",
        "--queue-url",
        queues.queue_url,
        "--results",
        RESULTS_URI,
    )
    assert code == 0
    assert (out["tasks_done"], out["tasks_total"], out["exact"]) == (1193, 1200, True)
    assert (out["images_done"], out["complete"], out["dead_letter"]) == (2386, False, 0)
    # three objects of two images read: too few to extrapolate a failed count from
    assert (out["failed"], out["failed_basis_images"], out["failed_exact"]) == (None, 6, False)
    # without --exact: an estimate (or, if no sampled window met a missing task, a confirmed count)
    code, out, _ = run(
        capsys, "status", "almost", "--queue-url", queues.queue_url, "--results", RESULTS_URI
    )
    assert code == 0 and out["complete"] is False and out["tasks_done"] <= 1199


@pytest.mark.slow
def test_follow_on_a_large_job_completes_only_on_an_exact_count_and_estimates_failures(
    s3, sqs, queues, small_thresholds
):
    # Given a large job, every task done, one image in four failed
    tasks = plan(PARTS, task_size=4)
    manifest = write_job(
        s3,
        LOC,
        "done",
        tasks,
        task_size=4,
        queue_url=queues.queue_url,
        error=lambda key: key.endswith("/0.jpg"),
    )
    s3c = Counting(s3)
    stream = io.StringIO()
    # When it is followed
    progress = follow(job_of(s3c, "done", manifest=manifest), sqs, interval=0.01, stream=stream)
    # Then it completes on an exact count, and the failed images are estimated from a sample
    assert progress.complete and progress.exact and progress.tasks_done == 1200
    last = stream.getvalue().strip().splitlines()[-1]
    assert "4800/4800 images (~1200 failed, from 16 images read)" in last, last
    assert s3c.calls["get_object"] <= 1 + 4  # the partitions index, 4 sampled tasks


def test_poll_interval_grows_with_the_job():
    assert poll_interval(300) == 2.0 and poll_interval(5000) == 2.0
    assert 2.0 < poll_interval(100_000) < poll_interval(1_000_000) <= 30.0
    assert poll_interval(5_000_000) == 30.0


def test_a_version_1_manifest_is_a_clear_error(s3, sqs, queues, capsys):
    # Given a manifest of the format that listed every task id (written for a few hours)
    old = {
        "v": 1,
        **{"job_id": "old", "source_bucket": INPUT, "source_prefix": "p/", "tasks": 2},
        **{"images": 3, "task_size": 2, "task_ids": ["000000-aa", "000001-bb"]},
        **{"queue_url": queues.queue_url, "model": "m", "created_at": "2026-01-01T00:00:00Z"},
    }
    s3.put_object(Bucket=RESULTS, Key=LOC.manifest_key("old"), Body=json.dumps(old))
    # When any command reads it, then it says what is wrong and what to do, in one line
    for command in ("status", "export"):
        extra = ["--out", "x.csv"] if command == "export" else []
        code, _, err = run(capsys, command, "old", "--results", RESULTS_URI, *extra)
        assert code == 2, err
        assert "not a manifest this producer reads" in err and "new --job-id" in err
        assert len(err.strip().splitlines()) == 1
