"""Export at scale: streamed reads with a bounded number in flight, Parquet part files that read
as one dataset, only the plan's tasks, each image once; summaries from counts alone."""

from __future__ import annotations

import csv
import json

import pytest

from posefleet.result import dump_lines
from producer.job.export import summarize
from tests.conftest import RESULTS
from tests.helpers import LOC, RESULTS_URI, job_of, run
from tests.v2jobs import Counting, line, plan, write_job

PARTS = {"a0a0a0a0a0": 5, "b1b1b1b1b1": 3, "c2c2c2c2c2": 4}  # 12 tasks


@pytest.fixture
def job(s3, queues):
    """12 tasks of 3 images (the last of each partition 2), all done but one; 1 image in 3 failed;
    a stray object outside the plan in the results prefix."""
    tasks = plan(PARTS, task_size=3, last=2)
    skipped = tasks[6]
    write_job(
        s3,
        LOC,
        "ex",
        tasks,
        task_size=3,
        queue_url=queues.queue_url,
        done=lambda t: t is not skipped,
        error=lambda key: key.endswith("/1.jpg"),
    )
    s3.put_object(
        Bucket=RESULTS,
        Key=LOC.task_key("ex", "a0a0a0a0a0-000005-ffffffffff"),
        Body=dump_lines([line("stray.jpg", error=True)]),
    )
    return {k for t in tasks if t is not skipped for k in t.keys}


def test_export_to_a_directory_writes_parquet_parts_that_read_as_one_dataset(
    s3, job, capsys, tmp_path
):
    ds = pytest.importorskip("pyarrow.dataset")
    out = tmp_path / "ex"
    code, got, _ = run(
        capsys, "export", "ex", "--results", RESULTS_URI, "--out", f"{out}/", "--part-rows", "10"
    )
    assert code == 0 and got["written"] == len(job) == 30
    assert sorted(p.name for p in out.iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
    table = ds.dataset(out, format="parquet").to_table()
    keys = table.column("key").to_pylist()
    assert len(keys) == len(set(keys)) and set(keys) == job  # each image once, no stray
    assert got["errors"] == sum(1 for k in job if k.endswith("/1.jpg"))
    assert got["per_pose"] == {"Front Double Biceps": len(job) - got["errors"]}


def test_export_parts_to_s3_and_csv_streamed(s3, job, capsys, tmp_path):
    pytest.importorskip("pyarrow")
    code, got, _ = run(
        capsys,
        "export",
        "ex",
        "--results",
        RESULTS_URI,
        "--out",
        "s3://pf-results/exports/ex/",
        "--part-rows",
        "20",
    )
    assert code == 0 and got["written"] == 30
    listed = s3.list_objects_v2(Bucket=RESULTS, Prefix="exports/ex/")["Contents"]
    assert [o["Key"] for o in listed] == [f"exports/ex/part-0000{i}.parquet" for i in range(2)]
    code, got, _ = run(
        capsys, "export", "ex", "--results", RESULTS_URI, "--out", str(tmp_path / "ex.csv")
    )
    rows = list(csv.DictReader((tmp_path / "ex.csv").open()))
    assert code == 0 and {r["key"] for r in rows} == job and len(rows) == 30


def test_a_directory_takes_parquet_only(s3, job, capsys, tmp_path):
    code, _, err = run(
        capsys,
        "export",
        "ex",
        "--results",
        RESULTS_URI,
        "--out",
        f"{tmp_path}/d/",
        "--format",
        "csv",
    )
    assert code == 2 and "Parquet part files only" in err


def test_results_stream_with_a_bounded_number_of_objects_in_flight(s3, queues):
    # Given a job of 40 finished tasks
    tasks = plan({"d3d3d3d3d3": 40}, task_size=2)
    manifest = write_job(s3, LOC, "many", tasks, task_size=2, queue_url=queues.queue_url)
    counting = Counting(s3)
    # When its first line is read with 2 threads
    lines = job_of(counting, "many", manifest=manifest).results(threads=2)
    first = next(lines)
    # Then at most threads * 4 objects have been fetched (plus the partitions index)
    assert first.key == tasks[0].keys[0]
    assert counting.calls["get_object"] <= 1 + 2 * 4
    rest = list(lines)
    assert [line.key for line in [first, *rest]] == [k for t in tasks for k in t.keys]
    assert counting.calls["get_object"] == 1 + 40


def test_summarize_counts_without_holding_lines(s3, job):
    summary = summarize(job_of(s3, "ex").results())
    assert summary.images == 30 and json.loads(json.dumps(summary.as_dict()))["errors"] == 11


def test_the_documented_duckdb_query_reads_the_parts_as_one_table(s3, job, capsys, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    out = tmp_path / "ex"
    run(capsys, "export", "ex", "--results", RESULTS_URI, "--out", f"{out}/", "--part-rows", "7")
    # the query of docs/operations.md ("Querying a job's results")
    poses = duckdb.sql(
        f"""
        SELECT predicted_class_name AS pose, count(*) AS images,
               round(avg(confidence), 3) AS mean_confidence
        FROM read_parquet('{out}/*.parquet')
        WHERE status = 'ok'
        GROUP BY pose ORDER BY images DESC
        """
    ).fetchall()
    errors = duckdb.sql(
        f"SELECT error_kind, count(*) FROM read_parquet('{out}/*.parquet') "
        "WHERE status = 'error' GROUP BY error_kind"
    ).fetchall()
    assert poses == [("Front Double Biceps", 19, 0.75)] and errors == [("truncated", 11)]
