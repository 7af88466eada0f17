"""The producer through its entry point, against in-process moto."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from posefleet.layout import Manifest
from posefleet.task import TaskMessage
from producer.job.follow import JobStalled, follow
from producer.send import send_tasks
from tests.conftest import INPUT, RESULTS
from tests.helpers import RESULTS_URI, drain, job_of, run, submit, upload, write_results


def test_submit_lists_groups_sends_and_writes_the_manifest(s3, sqs, queues, capsys):
    images = [f"p/a/{i:03d}.jpg" for i in range(20)] + [
        "p/b/UPPER.JPG",
        "p/b/mixed.Jpeg",
        "p/c/x.png",
        "p/c/y.webp",
        "p/c/z.GIF",
    ]
    upload(s3, [*images, "p/notes.txt", "p/folder/", "p/a/raw.CR2", "other/outside.jpg"])
    code, out, _ = submit(capsys, queues, "--job-id", "job-1", "--task-size", "10")
    assert code == 0
    assert (out["job_id"], out["images"], out["tasks"], out["to_send"]) == ("job-1", 25, 3, 3)
    assert out["results"] == f"{RESULTS_URI}/job-1/"
    tasks = drain(sqs, queues.queue_url)
    assert sorted(k for t in tasks for k in t.keys) == sorted(images)
    assert {t.job_id for t in tasks} == {"job-1"} and {t.results for t in tasks} == {RESULTS_URI}
    job = job_of(s3, "job-1")
    manifest = job.manifest
    assert (manifest.images, manifest.tasks, manifest.task_size) == (25, 3, 10)
    assert manifest.complete and manifest.tasks_sent == 3
    planned = [
        (task_id, keys) for part in job.plan.partitions() for task_id, keys in job.plan.tasks(part)
    ]
    assert sorted(planned) == sorted((t.task_id, list(t.keys)) for t in tasks)


def test_the_same_job_id_twice_yields_the_same_task_ids(s3, sqs, queues, capsys):
    upload(s3, [f"p/{i}.jpg" for i in range(7)])
    submit(capsys, queues, "--job-id", "again", "--task-size", "3")
    first = sorted(t.task_id for t in drain(sqs, queues.queue_url))
    submit(capsys, queues, "--job-id", "again", "--task-size", "3")
    assert sorted(t.task_id for t in drain(sqs, queues.queue_url)) == first
    assert len(first) == 3


@pytest.mark.slow
def test_listing_follows_every_page(s3, sqs, queues, capsys):
    upload(s3, [f"p/{i:05d}.jpg" for i in range(1105)])
    code, out, _ = submit(capsys, queues, "--job-id", "big", "--task-size", "100")
    assert code == 0 and out["images"] == 1105 and out["tasks"] == 12
    assert len(drain(sqs, queues.queue_url)) == 12


def test_dry_run_sends_nothing(s3, sqs, queues, capsys):
    upload(s3, ["p/1.jpg", "p/2.jpg"])
    code, out, _ = submit(capsys, queues, "--job-id", "dry", "--dry-run")
    assert code == 0 and out["to_send"] == 1 and out["first_task"]["keys"] == ["p/1.jpg", "p/2.jpg"]
    assert drain(sqs, queues.queue_url) == []
    assert s3.list_objects_v2(Bucket=RESULTS).get("KeyCount", 0) == 0


def test_skip_done_resends_only_tasks_without_results(s3, sqs, queues, capsys):
    upload(s3, [f"p/{i}.jpg" for i in range(6)])
    submit(capsys, queues, "--job-id", "resume", "--task-size", "2")
    tasks = sorted(drain(sqs, queues.queue_url), key=lambda t: t.task_id)
    s3.put_object(Bucket=RESULTS, Key=tasks[0].result_key, Body=b"")
    code, out, _ = submit(capsys, queues, "--job-id", "resume", "--task-size", "2", "--skip-done")
    assert (code, out["to_send"], out["skipped_done"]) == (0, 2, 1)
    assert sorted(t.task_id for t in drain(sqs, queues.queue_url)) == [t.task_id for t in tasks[1:]]


class FlakySQS:
    """Real moto SQS, except the first entry of each batch fails once (as SQS may report)."""

    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, 0

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict]) -> dict:
        self.calls += 1
        if self.calls % 2 == 1 and len(Entries) > 1:
            head, rest = Entries[0], Entries[1:]
            ok = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=rest)
            failed = [
                {
                    "Id": head["Id"],
                    "Code": "InternalError",
                    "SenderFault": False,
                    "Message": "try again",
                }
            ]
            return {"Successful": ok.get("Successful", []), "Failed": failed}
        return self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)


def test_entries_reported_failed_are_retried_and_sent_once(sqs, queues):
    tasks = [
        TaskMessage(
            job_id="j", task_id=f"t{i:03d}", bucket=INPUT, keys=(f"{i}.jpg",), results=RESULTS_URI
        )
        for i in range(23)
    ]
    flaky = FlakySQS(sqs)
    assert send_tasks(flaky, queues.queue_url, tasks) == 23
    assert flaky.calls > 3
    assert sorted(t.task_id for t in drain(sqs, queues.queue_url)) == [t.task_id for t in tasks]


def test_status_and_export_read_the_results_back(s3, sqs, queues, capsys, tmp_path):
    upload(s3, [f"p/{i}.jpg" for i in range(5)])
    submit(capsys, queues, "--job-id", "exp", "--task-size", "2")
    tasks = sorted(drain(sqs, queues.queue_url), key=lambda t: t.task_id)
    write_results(s3, tasks[0], broken={"p/1.jpg"})
    write_results(s3, tasks[1])
    code, status, _ = run(capsys, "status", "exp", "--results", RESULTS_URI)
    assert code == 0
    assert (
        status["tasks_done"],
        status["tasks_total"],
        status["images_done"],
        status["complete"],
    ) == (2, 3, 4, False)

    write_results(s3, tasks[2])
    code, out, _ = run(
        capsys, "export", "exp", "--results", RESULTS_URI, "--out", str(tmp_path / "r.csv")
    )
    assert code == 0 and out["written"] == 5 and out["errors"] == 1
    assert out["per_pose"] == {"Front Double Biceps": 4} and out["error_kinds"] == {"truncated": 1}
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert sorted(r["key"] for r in rows) == [f"p/{i}.jpg" for i in range(5)]
    assert {r["width"] for r in rows if r["status"] == "ok"} == {"10"}
    code, out, _ = run(
        capsys, "export", "exp", "--results", RESULTS_URI, "--out", str(tmp_path / "r.jsonl")
    )
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 5
    pq = pytest.importorskip("pyarrow.parquet")
    code, out, _ = run(
        capsys, "export", "exp", "--results", RESULTS_URI, "--out", "s3://pf-results/x/r.parquet"
    )
    assert code == 0 and out["written"] == 5
    s3.download_file("pf-results", "x/r.parquet", str(tmp_path / "r.parquet"))
    table = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert sorted(r["key"] for r in table) == [f"p/{i}.jpg" for i in range(5)]
    assert {r["error_kind"] for r in table} == {None, "truncated"}


def test_follow_finishes_when_every_task_has_a_result_and_fails_on_dead_letters(
    s3, sqs, queues, capsys
):
    upload(s3, [f"p/{i}.jpg" for i in range(4)])
    submit(capsys, queues, "--job-id", "fol", "--task-size", "2")
    tasks = drain(sqs, queues.queue_url)
    for t in tasks:
        write_results(s3, t)
    stream = io.StringIO()
    progress = follow(job_of(s3, "fol"), sqs, interval=0.01, stream=stream)
    assert progress.complete and progress.images_done == 4
    assert "4/4 images (0 failed)" in stream.getvalue()

    s3.delete_object(Bucket=RESULTS, Key=tasks[0].result_key)
    sqs.send_message(QueueUrl=queues.dlq_url, MessageBody=tasks[0].to_body())
    with pytest.raises(JobStalled, match="dead-letter"):
        follow(job_of(s3, "fol"), sqs, interval=0.01, stream=io.StringIO())


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--bucket", "no-such-bucket", "--prefix", "p/"], 4, "NoSuchBucket"),
        (["--bucket", INPUT, "--prefix", "empty/"], 3, "no images under"),
        (["--bucket", INPUT, "--queue-url", None, "--task-size", "0"], 2, "task_size"),
        (["status", "nope"], 4, "no job 'nope'"),
        (["--bucket", INPUT, "--results", "/local/path"], 2, "s3://"),
    ],
)
def test_errors_are_one_clear_line_and_a_reliable_exit_code(
    s3, sqs, queues, capsys, args, code, message
):
    upload(s3, ["p/1.jpg"])
    args = [queues.queue_url if a is None else a for a in args]
    if args[0] != "status":
        args += ["--queue-url", queues.queue_url] if "--queue-url" not in args else []
    got, _, err = run(capsys, *args, *([] if "--results" in args else ["--results", RESULTS_URI]))
    assert got == code
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_unknown_queue_name_is_a_clear_error(s3, sqs, queues, capsys, monkeypatch):
    upload(s3, ["p/1.jpg"])
    monkeypatch.setenv("POSEFLEET_QUEUE_NAME", "nope")
    code, _, err = run(capsys, "--bucket", INPUT, "--prefix", "p/", "--results", RESULTS_URI)
    assert code == 4
    assert "NonExistentQueue" in err or "QueueDoesNotExist" in err


def test_missing_credentials_say_what_to_set(monkeypatch, capsys, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    code, _, err = run(
        capsys, "--bucket", INPUT, "--prefix", "p/", "--queue-url", "http://127.0.0.1:9/q"
    )
    assert code == 4 and "no AWS credentials" in err


def test_producer_never_imports_torch():
    import subprocess
    import sys

    code = (
        "import sys, producer.__main__, producer.job.follow, producer.job.export\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_manifest_model_is_typed():
    with pytest.raises(ValueError):
        Manifest.model_validate({"job_id": "j"})


def test_a_deployed_stack_is_found_without_flags(s3, sqs, queues, capsys):
    from posefleet.aws import client
    from posefleet.resources import DISCOVERY_PARAMETER

    client("ssm").put_parameter(
        Name=DISCOVERY_PARAMETER,
        Type="String",
        Value=json.dumps(
            {
                "queue_url": queues.queue_url,
                "results": "s3://pf-results/deployed",
                "model": "s3://pf-models/pose_classifier/current.json",
            }
        ),
    )
    upload(s3, ["p/1.jpg"])
    code, out, _ = run(capsys, "--bucket", INPUT, "--prefix", "p/", "--job-id", "found")
    assert code == 0 and out["results"] == "s3://pf-results/deployed/found/"
    (task,) = drain(sqs, queues.queue_url)
    assert task.results == "s3://pf-results/deployed"


def test_redrive_moves_valid_tasks_back_and_leaves_invalid_bodies(s3, sqs, queues, capsys):
    task = TaskMessage(job_id="j", task_id="t1", bucket=INPUT, keys=("a.jpg",), results=RESULTS_URI)
    sqs.send_message(QueueUrl=queues.dlq_url, MessageBody=task.to_body())
    sqs.send_message(QueueUrl=queues.dlq_url, MessageBody="{broken")
    code, out, err = run(capsys, "redrive", "--peek", "--queue-url", queues.queue_url)
    assert code == 0 and "2 dead-lettered messages" in err
    problems = sorted(str(json.loads(line)["problem"]) for line in out.splitlines())
    assert problems[0] == "None" and "not JSON" in problems[1]

    code, out, _ = run(capsys, "redrive", "--queue-url", queues.queue_url)
    assert code == 0 and (out["moved"], out["left_invalid"]) == (1, 1)
    assert drain(sqs, queues.queue_url) == [task]
