"""The streaming, resumable submit through its entry point, against in-process moto: parallel
listing, the inventory and keys sources, deterministic ids, resume after an interruption.

Small pages (POSEFLEET_LIST_PAGE_SIZE) make key ranges split at sizes moto lists quickly.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
from collections import Counter
from typing import Any
from urllib.parse import quote_plus

import pytest

from posefleet.layout import SHARD_TASKS
from posefleet.task import TaskMessage, split_task_id
from producer.sources import PrefixSource, split_points
from tests.conftest import INPUT, MODELS, RESULTS
from tests.helpers import LOC, RESULTS_URI, drain, job_of, run, upload

ODD = [
    "p/a b+c.jpg",
    "p/100%.jpg",
    "p/été/ünï.png",
    "p/x&y<z>'q\".jpg",
    "p/plus+sign.jpeg",
    "p/~tilde.jpg",
    "p/Z.JPG",
    "p/" + "deep/" * 5 + "x.jpg",
    "p/no-delimiter-here.jpg",
    "p/\u4e2d\u6587.webp",
]


def submit(capsys, queues, *args: str) -> tuple[int, Any, str]:
    return run(capsys, *args, "--queue-url", queues.queue_url, "--results", RESULTS_URI)


def sent_keys(tasks: list[TaskMessage]) -> list[str]:
    return sorted(k for t in tasks for k in t.keys)


@pytest.mark.parametrize(
    ("last", "hi"),
    [
        ("p/00000999.jpg", None),
        ("p/00001999.jpg", "p/1"),
        ("p/alice/9.jpg", "p/c"),
        ("p/zz~", None),
        ("p/Zeta", "p/a"),
        ("p/~~", None),
        ("p/é", None),
        ("p/a", "p/a"),  # nothing left to cut
    ],
)
def test_child_ranges_cover_the_rest_of_a_split_range_exactly_once(last, hi):
    source = PrefixSource(None, bucket="b", prefix="p/", extensions=(".jpg",))
    parent = source._partition("p/", hi, 0)
    cuts = split_points("p/", last, hi)
    whole = source.children(parent, last, hi)
    _assert_cover(whole, last, hi)
    if cuts:  # narrowed to the first cut: (last, cut] cut further, and (cut, hi] as one child
        _assert_cover(source.children(parent, last, cuts[0]), last, hi)
    else:  # nothing to cut at: the rest of the range is one child
        assert len(whole) == 1


def _assert_cover(children, last, hi):
    assert children[0].lo == last and children[-1].hi == hi
    assert all(a.hi == b.lo for a, b in itertools.pairwise(children))
    assert len({c.id for c in children}) == len(children)
    probes = [
        last + "0",
        last + "~",
        "p/0",
        "p/01",
        "p/0~",
        "p/1",
        "p/a",
        "p/b/x",
        "p/zzz",
        "p/~~~",
        "p/é/x",
        "p/\U0001f600",
        *([hi, hi + "x"] if hi else []),
    ]
    for key in probes:
        inside = key > last and (hi is None or key <= hi)
        owners = [c for c in children if key > c.lo and (c.hi is None or key <= c.hi)]
        assert len(owners) == (1 if inside else 0), key


def test_split_points_move_right_until_the_key_can_grow():
    assert split_points("p/", "p/00001999.jpg", "p/1")[:2] == ["p/01", "p/02"]
    assert split_points("p/", "p/abc", None)[-1] == "p/{"
    assert split_points("p/", "p/~", None) == ["p/\x7f"]
    assert split_points("p/", "p/a", "p/a") == []


@pytest.mark.slow
def test_parallel_listing_sends_every_key_once_odd_ones_included(
    s3, sqs, queues, capsys, monkeypatch
):
    # Given 150 images (numbered, in folders, odd characters) and things that are not images
    monkeypatch.setenv("POSEFLEET_LIST_PAGE_SIZE", "4")
    monkeypatch.setenv("POSEFLEET_SPLIT_DEPTH", "4")
    images = [f"p/{i:04d}.jpg" for i in range(100)] + [f"p/u{i}/x.png" for i in range(40)] + ODD
    upload(s3, [*images, "p/notes.txt", "p/dir/", "q/outside.jpg", "p"])
    # When it is submitted with key ranges that split after 4 keys
    code, out, _ = submit(capsys, queues, "--bucket", INPUT, "--prefix", "p/", "--job-id", "par")
    # Then every image is in exactly one task, and the range was cut into many partitions
    assert code == 0 and out["images"] == len(images)
    tasks = drain(sqs, queues.queue_url)
    assert sent_keys(tasks) == sorted(images)
    assert out["partitions"] >= 10
    parts = job_of(s3, "par").plan.partitions()
    assert sum(p.tasks for p in parts) == out["tasks"] == len(tasks)
    assert {split_task_id(t.task_id)[0] for t in tasks} == {p.partition for p in parts}
    manifest = job_of(s3, "par").manifest
    assert manifest.complete and manifest.partitions == len(parts)
    assert manifest.source == f"s3://{INPUT}/p/" and manifest.tasks_sent == len(tasks)


def test_task_ids_do_not_depend_on_concurrency_or_timing(s3, sqs, queues, capsys, monkeypatch):
    monkeypatch.setenv("POSEFLEET_LIST_PAGE_SIZE", "3")
    upload(s3, [f"p/{c}{i:02d}.jpg" for c in "0a5Xz" for i in range(12)])
    ids = []
    for listers, job in (("1", "one"), ("12", "many")):
        monkeypatch.setenv("POSEFLEET_LIST_CONCURRENCY", listers)
        code, _, _ = submit(
            capsys, queues, "--bucket", INPUT, "--prefix", "p/", "--job-id", job, "--task-size", "2"
        )
        assert code == 0
        ids.append(sorted((t.task_id, t.keys) for t in drain(sqs, queues.queue_url)))
    assert ids[0] == ids[1] and sum(len(keys) for _, keys in ids[0]) == 60
    dry = [
        submit(capsys, queues, "--bucket", INPUT, "--prefix", "p/", "--dry-run", "--task-size", "2")
        for _ in range(2)
    ]
    head = next(task_id for task_id, keys in ids[0] if keys[0] == "p/000.jpg")
    assert [d[1]["first_task"]["task_id"] for d in dry] == [head] * 2
    dry = [d[1]["first_task"] for d in dry]
    assert dry[0]["keys"] == ["p/000.jpg", "p/001.jpg"]


def test_skip_done_checks_each_shard_against_the_results(s3, sqs, queues, capsys, monkeypatch):
    monkeypatch.setenv("POSEFLEET_LIST_PAGE_SIZE", "5")
    upload(s3, [f"p/{i:03d}.jpg" for i in range(40)])
    args = ("--bucket", INPUT, "--prefix", "p/", "--job-id", "skip", "--task-size", "3")
    submit(capsys, queues, *args)
    tasks = sorted(drain(sqs, queues.queue_url), key=lambda t: t.task_id)
    done = tasks[::3]
    for t in done:
        s3.put_object(Bucket=RESULTS, Key=t.result_key, Body=b"")
    code, out, _ = submit(capsys, queues, *args, "--skip-done")
    assert code == 0 and out["skipped_done"] == len(done)
    again = drain(sqs, queues.queue_url)
    assert sorted(t.task_id for t in again) == sorted(t.task_id for t in tasks if t not in done)


def _inventory(s3, fmt: str, files: dict[str, list[dict]]) -> str:
    """Write an S3 Inventory report (manifest.json and its data files) to the models bucket."""
    base = "inventory/pf-input/daily/2026-11-24T01-00Z"
    keys = []
    for name, rows in files.items():
        if fmt == "CSV":
            text = io.StringIO()
            writer = csv.writer(text, quoting=csv.QUOTE_ALL)
            for r in rows:
                writer.writerow(
                    [r["bucket"], quote_plus(r["key"], safe="/"), 10, r["latest"], r["marker"]]
                )
            body = gzip.compress(text.getvalue().encode())
            key = f"inventory/pf-input/daily/data/{name}.csv.gz"
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table(
                {
                    "bucket": [r["bucket"] for r in rows],
                    "key": [r["key"] for r in rows],
                    "size": [10] * len(rows),
                    "is_latest": [r["latest"] == "true" for r in rows],
                    "is_delete_marker": [r["marker"] == "true" for r in rows],
                }
            )
            sink = io.BytesIO()
            pq.write_table(table, sink)
            body = sink.getvalue()
            key = f"inventory/pf-input/daily/data/{name}.parquet"
        s3.put_object(Bucket=MODELS, Key=key, Body=body)
        keys.append({"key": key, "size": len(body), "MD5checksum": "x"})
    manifest = {
        "sourceBucket": INPUT,
        "destinationBucket": f"arn:aws:s3:::{MODELS}",
        "version": "2016-11-30",
        "creationTimestamp": "1764000000000",
        "fileFormat": fmt,
        "fileSchema": "Bucket, Key, Size, IsLatest, IsDeleteMarker"
        if fmt == "CSV"
        else "message s3.inventory { required binary bucket (STRING); "
        "required binary key (STRING); optional int64 size; optional boolean is_latest; "
        "optional boolean is_delete_marker; }",
        "files": keys,
    }
    s3.put_object(Bucket=MODELS, Key=f"{base}/manifest.json", Body=json.dumps(manifest).encode())
    return f"s3://{MODELS}/{base}/manifest.json"


def _row(key: str, latest: str = "true", marker: str = "false") -> dict:
    return {"bucket": INPUT, "key": key, "latest": latest, "marker": marker}


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_an_inventory_report_is_a_source(s3, sqs, queues, capsys, fmt):
    if fmt == "Parquet":
        pytest.importorskip("pyarrow")
    # Given a report of two files, with odd keys, a delete marker, an old version, a text file
    first = [_row(k) for k in ODD] + [_row("p/old.jpg", latest="false")]
    second = [_row(f"p/{i}.jpg") for i in range(25)] + [
        _row("p/gone.jpg", marker="true"),
        _row("p/readme.txt"),
        _row("other/x.jpg"),
    ]
    uri = _inventory(s3, fmt, {"a": first, "b": second})
    # When it is submitted, kept to the prefix p/
    code, out, _ = submit(capsys, queues, "--inventory", uri, "--prefix", "p/", "--job-id", "inv")
    # Then exactly the current images under p/ are sent, one partition per data file
    assert code == 0, out
    expected = sorted([*ODD, *(f"p/{i}.jpg" for i in range(25))])
    assert sent_keys(drain(sqs, queues.queue_url)) == expected
    assert out["partitions"] == 2 and out["source"] == f"inventory:{uri}"
    assert job_of(s3, "inv").manifest.source_bucket == INPUT


def test_an_unsupported_inventory_format_is_a_clear_error(s3, sqs, queues, capsys):
    uri = _inventory(s3, "CSV", {"a": [_row("p/1.jpg")]})
    s3.put_object(
        Bucket=MODELS,
        Key=uri.split("/", 3)[3],
        Body=json.dumps({"sourceBucket": INPUT, "fileFormat": "ORC", "files": []}).encode(),
    )
    code, _, err = submit(capsys, queues, "--inventory", uri)
    assert code == 2 and "ORC is not supported" in err


@pytest.mark.parametrize(
    ("where", "fmt"), [("local", "lines"), ("local", "csv"), ("s3", "lines"), ("s3", "csv")]
)
def test_a_list_of_keys_is_a_source(s3, sqs, queues, capsys, tmp_path, where, fmt):
    keys = [*ODD, *(f"p/k{i}.jpg" for i in range(12)), "p/notes.txt"]
    if fmt == "csv":
        text = "".join(f"{INPUT},{quote_plus(k, safe='/')}\n" for k in keys)
        name, extra = "keys.csv", []
    else:
        text = "".join(f"{k}\n" for k in keys)
        name, extra = "keys.txt", ["--bucket", INPUT]
    if where == "local":
        (tmp_path / name).write_text(text, encoding="utf-8")
        uri = str(tmp_path / name)
    else:
        s3.put_object(Bucket=MODELS, Key=f"lists/{name}", Body=text.encode())
        uri = f"s3://{MODELS}/lists/{name}"
    code, out, _ = submit(capsys, queues, "--keys", uri, "--job-id", "keys", *extra)
    assert code == 0, out
    assert sent_keys(drain(sqs, queues.queue_url)) == sorted(keys[:-1])


def test_a_keys_csv_of_two_buckets_is_refused(s3, sqs, queues, capsys, tmp_path):
    (tmp_path / "k.csv").write_text(f"{INPUT},a.jpg\nother-bucket,b.jpg\n")
    code, _, err = submit(capsys, queues, "--keys", str(tmp_path / "k.csv"))
    assert code == 2 and "split the file by bucket" in err
    assert drain(sqs, queues.queue_url) == []


class FailingSQS:
    """Real moto SQS until ``after`` batches went through; then SQS refuses every entry."""

    def __init__(self, real: Any, after: int) -> None:
        self.real, self.after, self.calls = real, after, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict]) -> dict:
        self.calls += 1
        if self.calls > self.after:
            failed = [
                {"Id": e["Id"], "Code": "KMS.Throttled", "SenderFault": True, "Message": "no"}
                for e in Entries
            ]
            return {"Successful": [], "Failed": failed}
        return self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)


@pytest.mark.slow
def test_an_interrupted_submit_resumes_with_no_task_missing_or_repeated(
    s3, sqs, queues, capsys, monkeypatch
):
    import producer.__main__ as cli

    # Given 330 images, one task each (so several shards of 100 per partition), one sender
    images = [f"p/{i:04d}.jpg" for i in range(330)]
    upload(s3, images)
    monkeypatch.setenv("POSEFLEET_LIST_PAGE_SIZE", "120")
    monkeypatch.setenv("POSEFLEET_SEND_CONCURRENCY", "1")
    args = ("--bucket", INPUT, "--prefix", "p/", "--job-id", "resume", "--task-size", "1")
    real_client = cli.client
    failing: list[FailingSQS] = []

    def client_that_fails(service: str, **kw: Any) -> Any:
        made = real_client(service, **kw)
        if service == "sqs":
            failing.append(FailingSQS(made, after=14))
            return failing[-1]
        return made

    # When SQS starts refusing after 14 batches (140 tasks)
    monkeypatch.setattr(cli, "client", client_that_fails)
    code, _, err = submit(capsys, queues, *args)
    assert code == 1 and "--job-id resume to resume" in err
    first = drain(sqs, queues.queue_url)
    assert 0 < len(first) < len(images)
    assert not job_of(s3, "resume").manifest.complete

    # And the same command runs again
    monkeypatch.setattr(cli, "client", real_client)
    code, out, _ = submit(capsys, queues, *args)
    second = drain(sqs, queues.queue_url)

    # Then every image was sent, and only the shard in flight at the failure went twice
    assert code == 0 and out["resumed"] is True
    assert sorted({k for t in first + second for k in t.keys}) == images
    again = Counter(t.task_id for t in first + second)
    twice = [task_id for task_id, n in again.items() if n > 1]
    assert all(n <= 2 for n in again.values())
    assert len(twice) <= SHARD_TASKS
    assert len({(split_task_id(t)[0], split_task_id(t)[1] // SHARD_TASKS) for t in twice}) <= 1
    manifest = job_of(s3, "resume").manifest
    assert manifest.complete and manifest.tasks == len(again) == len(images)
    assert out["already_sent"] + out["to_send"] == len(images)  # the twice-sent: in to_send
    planned = [
        key
        for part in job_of(s3, "resume").plan.partitions()
        for _, keys in job_of(s3, "resume").plan.tasks(part)
        for key in keys
    ]
    assert sorted(planned) == images


def test_a_resume_with_another_task_size_is_refused(s3, sqs, queues, capsys):
    from posefleet.layout import Manifest

    upload(s3, ["p/1.jpg"])
    half = Manifest(
        job_id="half",
        source_bucket=INPUT,
        source_prefix="p/",
        source=f"s3://{INPUT}/p/",
        tasks=0,
        images=0,
        task_size=7,
        queue_url=queues.queue_url,
        model="m",
        created_at="then",
        complete=False,
    )
    s3.put_object(Bucket=RESULTS, Key=LOC.manifest_key("half"), Body=half.model_dump_json())
    code, _, err = submit(capsys, queues, "--bucket", INPUT, "--prefix", "p/", "--job-id", "half")
    assert code == 2 and "resume it with the same source and --task-size" in err


@pytest.mark.slow
def test_ctrl_c_stops_between_batches_and_the_same_command_resumes(
    s3, sqs, queues, capsys, monkeypatch
):
    import producer.job.submit as jobs

    # Given 260 images in one-image tasks, sent one batch at a time
    images = [f"p/{i:04d}.jpg" for i in range(260)]
    upload(s3, images)
    monkeypatch.setenv("POSEFLEET_SEND_CONCURRENCY", "1")
    args = ("--bucket", INPUT, "--prefix", "p/", "--job-id", "ctrl-c", "--task-size", "1")
    real_tick = jobs.Submission._tick

    def interrupt_once_some_are_sent(self, last_write):
        if self.counts.sent >= 50:
            raise KeyboardInterrupt
        return real_tick(self, last_write)

    # When Ctrl-C arrives once 50 tasks are on the queue
    monkeypatch.setattr(jobs.Submission, "_tick", interrupt_once_some_are_sent)
    code, out, err = submit(capsys, queues, *args)
    assert code == 130 and out["interrupted"] is True and "--job-id ctrl-c" in err
    first = drain(sqs, queues.queue_url)
    assert not job_of(s3, "ctrl-c").manifest.complete

    # Then the same command sends the rest, and nothing was sent twice
    monkeypatch.setattr(jobs.Submission, "_tick", real_tick)
    code, out, _ = submit(capsys, queues, *args)
    second = drain(sqs, queues.queue_url)
    assert code == 0 and out["resumed"] is True
    assert sorted(k for t in first + second for k in t.keys) == images  # each once
    assert job_of(s3, "ctrl-c").manifest.complete


def test_task_ids_split_into_partition_and_index():
    assert split_task_id("a1b2c3d4e5-000042-0123456789") == ("a1b2c3d4e5", 42)
    assert split_task_id("000001-bb") == (None, 1)  # an id made without a partition
    with pytest.raises(ValueError, match="not a planned task id"):
        split_task_id("junk")
