import pytest

from posefleet.layout import Manifest, ResultsLocation
from posefleet.result import ErrorKind, ImageError, ResultLine, dump_lines, load_lines


def test_result_keys_derive_from_job_and_task_alone():
    loc = ResultsLocation.parse("s3://out/some/prefix/")
    assert loc.bucket == "out"
    assert loc.task_key("job-1", "000003-ab") == "some/prefix/job-1/tasks/000003-ab.jsonl"
    assert loc.manifest_key("job-1") == "some/prefix/job-1/manifest.json"
    assert loc.task_id_of("job-1", "some/prefix/job-1/tasks/000003-ab.jsonl") == "000003-ab"
    assert loc.task_id_of("job-1", "some/prefix/job-1/manifest.json") is None
    assert ResultsLocation.parse("s3://out").task_key("j", "t") == "j/tasks/t.jsonl"


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "x" * 129, "-lead"])
def test_ids_that_would_escape_the_layout_are_refused(bad):
    with pytest.raises(ValueError, match="must be"):
        ResultsLocation.parse("s3://out/p").task_key("job", bad)


def test_result_lines_round_trip_and_enforce_their_shape():
    ok = ResultLine(
        bucket="b",
        key="k.jpg",
        status="ok",
        model_version="abc123",
        original_size=(4032, 3024),
        predicted_class_index=1,
        predicted_class_id="2",
        predicted_class_name="Front Double Biceps",
        confidence=0.9,
        all_probabilities={"Front Double Biceps": 0.9, "Side Chest": 0.1},
    )
    err = ResultLine.error("b", "bad.jpg", ImageError(ErrorKind.TRUNCATED, "cut short"))
    assert load_lines(dump_lines([ok, err])) == [ok, err]
    assert '"error_kind":"truncated"' in err.to_json()
    with pytest.raises(ValueError, match="ok result lacks"):
        ResultLine(bucket="b", key="k", status="ok")
    with pytest.raises(ValueError, match="error result needs"):
        ResultLine(bucket="b", key="k", status="error")


def test_manifest_round_trips():
    m = Manifest(
        job_id="j",
        source_bucket="in",
        source_prefix="p/",
        tasks=2,
        images=25,
        task_size=20,
        queue_url="http://q",
        model="s3://m/current.json",
        created_at="now",
    )
    assert Manifest.model_validate_json(m.model_dump_json()) == m


def test_a_photos_live_result_key_derives_from_its_input_alone():
    loc = ResultsLocation.parse("s3://r/results")
    assert (
        loc.live_key("checkins", "2026/11/a b.jpg") == "results/live/checkins/2026/11/a b.jpg.json"
    )
    long_key = "k/" + "x" * 1100
    assert loc.live_key("checkins", long_key).startswith("results/live/checkins/_digest/")
    assert loc.live_key("checkins", long_key) == loc.live_key("checkins", long_key)
    with pytest.raises(ValueError, match="reserved"):
        loc.job_prefix("live")
