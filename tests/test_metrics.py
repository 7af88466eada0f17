"""The worker's EMF output, parsed against the shape the EMF specification requires."""

import io
import json

import pytest

from posefleet import metric_names as m
from worker.metrics import MAX_VALUES, Metrics


def check_emf(doc: dict) -> None:
    """The EMF spec's required shape (CloudWatch 'Specification: Embedded metric format')."""
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
    assert isinstance(meta["CloudWatchMetrics"], list) and meta["CloudWatchMetrics"]
    for directive in meta["CloudWatchMetrics"]:
        assert isinstance(directive["Namespace"], str) and 0 < len(directive["Namespace"]) <= 1024
        for dimension_set in directive["Dimensions"]:
            assert 0 < len(dimension_set) <= 30
            for dim in dimension_set:
                assert isinstance(doc[dim], str), f"dimension {dim} must be a string member"
        assert 0 < len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            value = doc[metric["Name"]]
            values = value if isinstance(value, list) else [value]
            assert 0 < len(values) <= MAX_VALUES
            assert all(isinstance(v, int | float) for v in values)
            assert metric["Unit"] in {"Count", "Milliseconds", "Seconds", "Percent", "None"}


def emitted(fn) -> list[dict]:
    out = io.StringIO()
    metrics = Metrics(service="svc", out=out)
    fn(metrics)
    metrics.flush()
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    for doc in docs:
        check_emf(doc)
    return docs


def test_counts_are_summed_and_timings_kept_for_percentiles():
    def work(metrics: Metrics):
        metrics.count(m.IMAGES_PROCESSED, 10)
        metrics.count(m.IMAGES_PROCESSED, 5)
        for v in (1.0, 2.0, 3.0):
            metrics.observe(m.STAGE_TIME, v, Stage="infer")
        metrics.count(m.IMAGES_FAILED, 2, ErrorKind="truncated")

    docs = emitted(work)
    by_dims = {tuple(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]): d for d in docs}
    assert by_dims[("Service",)][m.IMAGES_PROCESSED] == 15
    assert by_dims[("Service", "Stage")][m.STAGE_TIME] == [1.0, 2.0, 3.0]
    assert by_dims[("Service", "Stage")]["Stage"] == "infer"
    assert by_dims[("Service", "ErrorKind")][m.IMAGES_FAILED] == 2
    assert all(
        d["Service"] == "svc" and d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == m.NAMESPACE
        for d in docs
    )


def test_long_value_lists_are_split_into_documents_of_at_most_100():
    docs = emitted(
        lambda metrics: [metrics.observe(m.END_TO_END_LATENCY, float(i)) for i in range(250)]
    )
    assert [len(d[m.END_TO_END_LATENCY]) for d in docs] == [100, 100, 50]


def test_flush_empties_the_buffer():
    out = io.StringIO()
    metrics = Metrics(service="svc", out=out)
    metrics.count(m.TASKS_COMPLETED)
    assert metrics.flush() == 1
    assert metrics.flush() == 0


@pytest.mark.parametrize("name", sorted(m.ALL_METRICS))
def test_every_metric_name_is_a_valid_cloudwatch_name(name):
    assert name.isascii() and 0 < len(name) <= 255 and name[0].isalpha()
