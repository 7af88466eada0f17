"""Supervised stages and in-place retries: no thread dies silently, no transient fault is final."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from posefleet.aws import is_transient
from worker.retry import GaveUp, Retry, backoff_delay
from worker.supervise import Supervisor


def slow_down() -> ClientError:
    return ClientError(
        {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject"
    )


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (slow_down(), True),
        (ClientError({"Error": {"Code": "InternalError"}}, "ReceiveMessage"), True),
        (ClientError({"ResponseMetadata": {"HTTPStatusCode": 502}}, "PutObject"), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (ClientError({"Error": {"Code": "AccessDenied"}}, "GetObject"), False),
        (ClientError({"Error": {"Code": "ReceiptHandleIsInvalid"}}, "DeleteMessage"), False),
        (NoCredentialsError(), False),
        (ValueError("a bug"), False),
    ],
)
def test_transient_errors_are_told_from_refusals(error, transient):
    assert is_transient(error) is transient


def test_full_jitter_stays_under_its_cap():
    rng = random.Random(1)
    delays = [
        backoff_delay(a, base=0.25, max_delay=4.0, rng=rng) for a in range(12) for _ in range(50)
    ]
    assert min(delays) >= 0 and max(delays) < 4.0
    assert max(backoff_delay(0, base=0.25, max_delay=4.0, rng=rng) for _ in range(50)) < 0.25
    with pytest.raises(ValueError, match="base and max_delay"):
        backoff_delay(0, base=0, max_delay=1, rng=rng)


def test_a_transient_fault_is_retried_until_it_clears_and_a_refusal_is_not():
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise slow_down()
        return "ok"

    retry = Retry(budget=10, stop=threading.Event(), base=0.01, max_delay=0.02)
    assert retry.call(flaky, what="test") == "ok" and len(calls) == 4

    def denied() -> None:
        calls.append(1)
        raise ClientError({"Error": {"Code": "AccessDenied"}}, "GetObject")

    calls.clear()
    with pytest.raises(ClientError):
        retry.call(denied, what="test")
    assert len(calls) == 1


def test_a_fault_that_outlasts_the_budget_or_a_stop_gives_up():
    def down() -> None:
        raise slow_down()

    started = time.monotonic()
    with pytest.raises(GaveUp, match="after"):
        Retry(budget=0.3, stop=threading.Event(), base=0.05, max_delay=0.1).call(down, what="t")
    assert 0.3 <= time.monotonic() - started < 1.5
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(GaveUp):
        Retry(budget=60, stop=stop, base=5, max_delay=5).call(down, what="t")
    assert time.monotonic() - started < 2


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_crashed_stage_is_restarted_and_keeps_working():
    stop = threading.Event()
    supervisor = Supervisor(stop=stop, max_crashes=5, window=60, restart_delay=0.01)
    runs = []

    def loop() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise RuntimeError("a bug in this stage")
        stop.wait()

    supervisor.start("stage", loop)
    wait_for(lambda: len(runs) == 3)
    assert supervisor.crashes["stage"] == 2
    assert supervisor.failure() is None
    stop.set()
    supervisor.threads["stage"].join(timeout=5)


def test_a_stage_that_keeps_crashing_or_returns_fails_the_worker():
    stop = threading.Event()
    supervisor = Supervisor(stop=stop, max_crashes=3, window=60, restart_delay=0.01)

    def always() -> None:
        raise RuntimeError("broken for good")

    supervisor.start("doomed", always)
    wait_for(lambda: supervisor.failure() is not None)
    assert supervisor.failure() == "stage doomed crashed 3 times in 60s"
    assert supervisor.crashes["doomed"] == 3

    other = Supervisor(stop=threading.Event(), max_crashes=2, window=60, restart_delay=0.01)
    other.start("quits", lambda: None)  # returning while the worker runs is a crash too
    wait_for(lambda: other.failure() is not None)
    assert "quits" in other.failure()


def test_a_stage_may_end_once_its_own_event_is_set():
    stop, done = threading.Event(), threading.Event()
    supervisor = Supervisor(stop=stop, max_crashes=1, window=60)
    done.set()
    supervisor.start("receive", lambda: None, done=done)
    supervisor.threads["receive"].join(timeout=5)
    assert supervisor.failure() is None


def test_work_on_a_pool_that_raises_reaches_its_error_handler():
    supervisor = Supervisor(stop=threading.Event())
    seen: list[BaseException] = []
    handled = threading.Event()

    def work(x: int) -> None:
        raise KeyError(x)

    with ThreadPoolExecutor(1) as pool:
        supervisor.guard(
            pool, work, 7, on_error=lambda e: (seen.append(e), handled.set()), stage="fetch"
        )
        assert handled.wait(5)
    assert isinstance(seen[0], KeyError)
