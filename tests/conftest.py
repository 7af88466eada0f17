"""Shared fixtures: moto in-process for units, moto's server and real processes for e2e."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from posefleet.aws import client
from posefleet.checkpoint import save_initialised
from posefleet.local import LocalAWS, LocalQueues, bootstrap
from posefleet.resources import QueueSpec
from tests.processes import ProcessGroup

INPUT, RESULTS, MODELS = "pf-input", "pf-results", "pf-models"

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


# `make test` runs the files on two pytest-xdist workers (`-n 2 --dist loadfile`), each file
# whole on one of them, in collection order. These take a minute or more each (measured alone:
# 185 s, 125 s, 110 s, 60 s, 55 s, 50 s); run first, the short files fill in behind them and the
# two workers finish together rather than one starting training as the other ends.
LONGEST_FIRST = (
    "test_crashes.py",
    "test_training.py",
    "test_e2e.py",
    "test_large_tasks.py",
    "test_faults.py",
    "test_localfleet.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's own order is kept


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto in this process; no endpoint override, no real credentials."""
    from moto import mock_aws

    for k, v in FAKE_AWS.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    for k in [k for k in os.environ if k.startswith("POSEFLEET_")]:
        monkeypatch.delenv(k)
    from posefleet.moto_server import serialize_in_process

    serialize_in_process()  # worker threads call DynamoDB at once, as on moto's server
    with mock_aws():
        yield


@pytest.fixture
def s3(aws: None):
    return client("s3")


@pytest.fixture
def sqs(aws: None):
    return client("sqs")


@pytest.fixture
def dynamodb(aws: None):
    return client("dynamodb")


@pytest.fixture
def queues(s3, sqs, dynamodb) -> LocalQueues:
    """The queues, buckets and the job records' table (its default name), in-process."""
    return bootstrap(
        s3,
        sqs,
        buckets=(INPUT, RESULTS, MODELS),
        spec=QueueSpec(visibility_timeout=30, max_receive_count=2),
        sns=client("sns"),
        dynamodb=dynamodb,
    )


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real torchvision ResNet over every canonical pose, freshly initialised with a fixed
    seed: a ResNet18 at 128 px, the same code paths as the fleet's ResNet50 at 224 px (any
    checkpoint is self-describing) for a fraction of the suite's CPU; the ResNet50 is what
    ``make bench`` and the benchmarks serve."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_initialised(path, arch="resnet18", input_size=128)
    return path


@pytest.fixture(scope="session")
def resnet50_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fleet's own network, a ResNet50 at 224 px, for the tests whose point is its cost
    (work that a grace period cannot finish)."""
    path = tmp_path_factory.mktemp("resnet50") / "model.pt"
    save_initialised(path)
    return path


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAWS]:
    server = LocalAWS(log_file=tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Stack:
    """One test's own queues and buckets on the shared moto server."""

    def __init__(self, server: LocalAWS, spec: QueueSpec) -> None:
        self.server = server
        self.suffix = uuid.uuid4().hex[:8]
        self.input, self.results = f"in-{self.suffix}", f"out-{self.suffix}"
        saved = dict(os.environ)
        os.environ.update(server.env())
        try:
            self.s3, self.sqs = client("s3"), client("sqs")
            self.sns, self.dynamodb = client("sns"), client("dynamodb")
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.queues = bootstrap(
            self.s3,
            self.sqs,
            buckets=(self.input, self.results),
            spec=spec,
            queue_name=f"tasks-{self.suffix}",
            dlq_name=f"dlq-{self.suffix}",
            live_queue_name=f"live-{self.suffix}",
            live_dlq_name=f"live-dlq-{self.suffix}",
            sns=self.sns,
            events_topic_name=f"events-{self.suffix}",
            events_queue_name=f"events-{self.suffix}",
            dynamodb=self.dynamodb,
            jobs_table=f"jobs-{self.suffix}",
        )

    @property
    def results_uri(self) -> str:
        return f"s3://{self.results}/results"

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("POSEFLEET_", "AWS_"))}
        return {
            **base,
            **self.server.env(),
            "POSEFLEET_QUEUE_URL": self.queues.queue_url,
            "POSEFLEET_LIVE_QUEUE_URL": self.queues.live_queue_url or "",
            "POSEFLEET_EVENTS_TOPIC": self.queues.events_topic or "",
            "POSEFLEET_RESULTS": self.results_uri,
            "POSEFLEET_JOBS_TABLE": f"jobs-{self.suffix}",
            "POSEFLEET_WAIT_TIME_SECONDS": "1",
            "POSEFLEET_TORCH_THREADS": "1",
            "POSEFLEET_DECODE_THREADS": "1",
            **extra,
        }

    def count(self, url: str) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )


@pytest.fixture
def stack(moto_server: LocalAWS) -> Stack:
    return Stack(
        moto_server, QueueSpec(visibility_timeout=30, max_receive_count=3, receive_wait_seconds=1)
    )


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Every process a test starts; all stopped (by handle) when the test ends."""
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()
