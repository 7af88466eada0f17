"""Results queried where they lie: docs/operations.md's SQL, run as written with DuckDB over a
local fleet's kept results bucket (localfleet/mirror.py's copy of it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from localfleet.mirror import BucketMirror
from posefleet.layout import ResultsLocation
from posefleet.result import ResultLine, dump_lines
from posefleet.results_table import COLUMNS, duckdb_view

DOCS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
BUCKET = "posefleet-results"  # the local fleet's results bucket, as the docs' paths name it


def documented_sql() -> list[str]:
    """The SQL statements of the section "Querying results where they lie", in order."""
    text = DOCS.read_text()
    section = text.split("### Querying results where they lie", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    return [s.strip() for block in blocks for s in block.split(";") if s.strip()]


def ok(key: str, pose: str, confidence: float) -> ResultLine:
    return ResultLine(
        bucket="posefleet-input",
        key=key,
        status="ok",
        model_version="v1",
        original_size=(640, 480),
        predicted_class_index=0,
        predicted_class_id="1",
        predicted_class_name=pose,
        confidence=confidence,
        all_probabilities={pose: confidence},
    )


@pytest.fixture
def kept(s3, tmp_path, monkeypatch) -> Path:
    """Two jobs' results in the results bucket, other objects of the layout beside them, and
    the bucket kept on disk as the local fleet keeps it; the working directory is the fleet's."""
    s3.create_bucket(Bucket=BUCKET)
    loc = ResultsLocation(BUCKET, "results")
    nov = [
        [ok("a.jpg", "Side Chest", 0.9), ok("b.jpg", "Side Chest", 0.45)],
        [ok("c.jpg", "Front Double Biceps", 0.3), ok("d.jpg", "Side Chest", 0.8)],
        [
            ResultLine(
                bucket="posefleet-input",
                key="e.jpg",
                status="error",
                error_kind="truncated",
                error_message="cut",
            )
        ],
    ]
    for i, lines in enumerate(nov):
        s3.put_object(Bucket=BUCKET, Key=loc.task_key("nov", f"t{i}"), Body=dump_lines(lines))
    s3.put_object(
        Bucket=BUCKET,
        Key=loc.task_key("dec", "t0"),
        Body=dump_lines([ok("z.jpg", "Side Chest", 0.1)]),
    )
    s3.put_object(Bucket=BUCKET, Key=loc.manifest_key("nov"), Body=b'{"not": "a line"}')
    s3.put_object(Bucket=BUCKET, Key="results/nov/attempts/t0.json", Body=b"{}")
    BucketMirror(s3=s3, bucket=BUCKET, root=tmp_path / ".posefleet" / "fleet" / "s3").sync()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_documented_sql_runs_on_the_kept_buckets_one_job_at_a_time(kept):
    duckdb = pytest.importorskip("duckdb")
    poses, low, view = documented_sql()  # the queries, then the local view
    # the documented view is the one the contract writes
    assert view == duckdb_view(".posefleet/fleet/s3/posefleet-results/results")
    db = duckdb.connect()
    db.sql(view)
    assert db.sql(poses).fetchall() == [
        ("Side Chest", 3, round((0.9 + 0.45 + 0.8) / 3, 3)),
        ("Front Double Biceps", 1, 0.3),
    ]
    assert db.sql(low).fetchall() == [
        ("c.jpg", "Front Double Biceps", 0.3),
        ("b.jpg", "Side Chest", 0.45),
    ]
    # the table has the contract's columns and types, job last, and every job's lines
    described = [(row[0], row[1]) for row in db.sql("DESCRIBE posefleet_results").fetchall()]
    assert described == [(c, duck) for c, _, duck in COLUMNS] + [("job", "VARCHAR")]
    per_job = db.sql("SELECT job, count(*) FROM posefleet_results GROUP BY job ORDER BY job")
    assert per_job.fetchall() == [("dec", 1), ("nov", 5)]
