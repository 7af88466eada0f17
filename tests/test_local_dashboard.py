"""The local dashboard: the deployed dashboard's widgets, drawn from the workers' own EMF lines.

Units feed it what worker.metrics prints; the end-to-end test runs a real worker against moto's
server, samples the queues as the local fleet does, and renders the page in headless Chromium.
"""

from __future__ import annotations

import io
import json
import re
import threading
from html.parser import HTMLParser

import pytest

from infra.components.observability import dashboard_body
from localfleet.dashboard import (
    queue_depth_line,
    queue_depth_lines,
    read_samples,
    render_dashboard,
    series_of,
)
from posefleet import metric_names as m
from posefleet.dashboard import widgets
from posefleet.resources import (
    DEFAULT_DLQ_NAME,
    DEFAULT_LIVE_DLQ_NAME,
    DEFAULT_LIVE_QUEUE_NAME,
    DEFAULT_QUEUE_NAME,
)
from tests.browser import chromium, needs_chromium
from tests.conftest import Stack
from tests.images import jpeg
from worker.metrics import Metrics

T0 = 1_800_000_000.0  # a period boundary for 10 s periods


class Page(HTMLParser):
    """The widgets of a rendered page: title, points drawn, lines drawn, note shown."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.widgets: list[dict] = []
        self._in_note = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and "widget" in (a.get("class") or ""):
            self.widgets.append({"title": a["data-title"], "points": 0, "lines": [], "note": ""})
        elif tag == "circle" and a.get("class") == "point":
            self.widgets[-1]["points"] += 1
        elif tag == "polyline" and a.get("class") == "series":
            self.widgets[-1]["lines"].append(a["data-label"])
        self._in_note = tag == "p" and a.get("class") == "nodata"

    def handle_endtag(self, tag: str) -> None:
        self._in_note = False

    def handle_data(self, data: str) -> None:
        if self._in_note:
            self.widgets[-1]["note"] += data


def deployed_titles(*, queue: str = DEFAULT_QUEUE_NAME, dlq: str = DEFAULT_DLQ_NAME) -> list[str]:
    body = dashboard_body(
        region="us-east-1",
        queue=queue,
        dlq=dlq,
        cluster="c",
        service="s",
        metrics_service=m.SERVICE,
        gpu=False,
    )
    return [w["properties"]["title"] for w in body["widgets"]]


def emitted(monkeypatch: pytest.MonkeyPatch, at: float, fill) -> list[str]:
    """What worker.metrics prints when ``fill(metrics)`` is flushed at time ``at``."""
    out = io.StringIO()
    metrics = Metrics(service=m.SERVICE, out=out)
    fill(metrics)
    monkeypatch.setattr("worker.metrics.time.time", lambda: at)
    metrics.flush()
    return out.getvalue().splitlines()


def by_title(*, gpu: bool = False, live: bool = False) -> dict:
    return {
        w.title: w
        for w in widgets(
            queue=DEFAULT_QUEUE_NAME,
            dlq=DEFAULT_DLQ_NAME,
            cluster="local",
            service="local",
            metrics_service=m.SERVICE,
            gpu=gpu,
            live_queue=DEFAULT_LIVE_QUEUE_NAME if live else None,
            live_dlq=DEFAULT_LIVE_DLQ_NAME if live else None,
        )
    }


def test_statistics_per_period_are_cloudwatchs(monkeypatch):
    # Given two flushes in the first 10 s period and one in the second
    def first(metrics: Metrics) -> None:
        metrics.count(m.IMAGES_PROCESSED, 30)
        metrics.count(m.IMAGES_FAILED, 3)  # the total, Service only
        metrics.count(m.IMAGES_FAILED, 2, ErrorKind="truncated")
        metrics.count(m.IMAGES_FAILED, 1, ErrorKind="not_an_image")
        for v in range(1, 151):  # 150 values: two EMF documents of at most 100
            metrics.observe(m.END_TO_END_LATENCY, v, Lane="backfill")
        metrics.observe(m.BATCH_SIZE, 8, "Count")
        metrics.observe(m.BATCH_SIZE, 4, "Count")

    def second(metrics: Metrics) -> None:
        metrics.count(m.IMAGES_PROCESSED, 10)
        metrics.observe(m.STAGE_TIME, 7.5, Stage="infer")

    def third(metrics: Metrics) -> None:
        metrics.count(m.IMAGES_PROCESSED, 50)
        metrics.count(m.IMAGES_FAILED, 1, ErrorKind="truncated")
        metrics.observe(m.END_TO_END_LATENCY, 900, Lane="backfill")
        metrics.observe(m.END_TO_END_LATENCY, 1200, Lane="live")

    lines = (
        emitted(monkeypatch, T0 + 2, first)
        + emitted(monkeypatch, T0 + 9, second)
        + emitted(monkeypatch, T0 + 12, third)
        + ["a log line", '{"_aws": cut sh']
    )
    samples = list(read_samples(lines))
    w = by_title()

    # Then each widget's statistic is computed per period, as CloudWatch computes it
    def lines_of(title: str) -> dict[str, tuple]:
        return {s.label: s.points for s in series_of(w[title], samples, 10)}

    assert lines_of("Images per second") == {"images/s": ((T0, 4.0), (T0 + 10, 5.0))}
    # one line per kind; the Service-only total is not a kind
    assert lines_of("Failures by kind") == {
        "not_an_image": ((T0, 1.0),),
        "truncated": ((T0, 2.0), (T0 + 10, 1.0)),
    }
    assert lines_of("Latency, enqueue (live: upload) to result (ms)") == {
        "backfill p50": ((T0, 75.0), (T0 + 10, 900.0)),
        "backfill p99": ((T0, 149.0), (T0 + 10, 900.0)),
        "live p50": ((T0 + 10, 1200.0),),
        "live p99": ((T0 + 10, 1200.0),),
    }
    assert lines_of("Batch size") == {"average": ((T0, 6.0),)}
    assert lines_of("Time per stage, p50 (ms)") == {"infer": ((T0, 7.5),)}
    # and a 60 s period holds all three flushes
    assert {s.label: s.points for s in series_of(w["Images per second"], samples, 60)} == {
        "images/s": ((T0 - T0 % 60, 90 / 60),)
    }


def test_queue_samples_feed_the_queue_widgets(queues, sqs, tmp_path):
    # Given three tasks waiting, one of them received, and a dead letter
    for i in range(3):
        sqs.send_message(QueueUrl=queues.queue_url, MessageBody=f"task {i}")
    sqs.receive_message(QueueUrl=queues.queue_url, MaxNumberOfMessages=1)
    sqs.send_message(QueueUrl=queues.dlq_url, MessageBody="dead")

    # When the fleet samples its queues
    lines = queue_depth_lines(sqs, [queues.queue_url, queues.dlq_url])

    # Then the queue widgets read them as CloudWatch reads SQS's metrics
    samples = list(read_samples(lines))
    w = by_title()
    queue = {
        s.label: s.points[0][1] for s in series_of(w["Queue: visible and in flight"], samples, 10)
    }
    assert queue == {"visible": 2.0, "in flight": 1.0}
    (dead,) = series_of(w["Dead-letter queue depth"], samples, 10)
    assert dead.points[0][1] == 1.0
    # and a sample names the queue as SQS does
    assert json.loads(lines[1])["QueueName"] == DEFAULT_DLQ_NAME


def test_live_lane_widgets_read_the_live_queues_and_the_lane_metrics(monkeypatch, queues, sqs):
    # Given two uploads waiting on the live lane, one of them received, a live dead letter,
    # and what the workers measured of each lane's time in queue
    for i in range(2):
        sqs.send_message(QueueUrl=queues.live_queue_url, MessageBody=f"upload {i}")
    sqs.receive_message(QueueUrl=queues.live_queue_url, MaxNumberOfMessages=1)
    sqs.send_message(QueueUrl=queues.live_dlq_url, MessageBody="dead")
    urls = [queues.queue_url, queues.dlq_url, queues.live_queue_url, queues.live_dlq_url]
    depth = queue_depth_lines(sqs, urls)

    def fill(metrics: Metrics) -> None:
        for v in (200, 400, 600):
            metrics.observe(m.QUEUE_TIME, v, Lane="live")
        metrics.observe(m.QUEUE_TIME, 90_000, Lane="backfill")
        metrics.observe(m.END_TO_END_LATENCY, 900, Lane="live")

    samples = list(read_samples(depth + emitted(monkeypatch, T0, fill)))
    w = by_title(live=True)

    def lines_of(title: str) -> dict[str, float]:
        return {s.label: s.points[-1][1] for s in series_of(w[title], samples, 10)}

    # Then the live queue has widgets of its own, beside the backfill queue's
    assert lines_of("Live queue: visible and in flight") == {"visible": 1.0, "in flight": 1.0}
    assert lines_of("Queue: visible and in flight") == {"visible": 0.0, "in flight": 0.0}
    assert lines_of("Dead-letter queue depth") == {"dead letters": 0.0, "live dead letters": 1.0}
    assert lines_of("Time in queue by lane (ms)") == {
        "backfill p50": 90_000.0,
        "backfill p99": 90_000.0,
        "live p50": 400.0,
        "live p99": 600.0,
    }
    assert lines_of("Latency, enqueue (live: upload) to result (ms)") == {
        "live p50": 900.0,
        "live p99": 900.0,
    }
    # and the age of the oldest live message is the deployed dashboard's (SQS's own metric)
    (oldest,) = w["Live queue: age of oldest message (s)"].metrics
    assert (oldest.name, oldest.dimensions) == (
        "ApproximateAgeOfOldestMessage",
        (("QueueName", DEFAULT_LIVE_QUEUE_NAME),),
    )


def test_live_widgets_only_with_the_live_queue_names_and_still_two_a_row():
    without, with_live = by_title(), by_title(live=True)
    added = [t for t in with_live if t not in without]
    assert added == ["Live queue: visible and in flight", "Live queue: age of oldest message (s)"]
    assert "Time in queue by lane (ms)" in without  # per lane from the workers' metrics alone
    assert len(without["Dead-letter queue depth"].metrics) == 1
    live = list(with_live.values())
    # the live queue's row follows the backfill queue's; no two widgets share a cell
    assert [(x.x, x.y) for x in live[2:4]] == [(0, 6), (12, 6)]
    cells = [(x.y, x.x) for x in live]
    assert len(set(cells)) == len(cells)
    assert all(x.x == (i % 2) * 12 and x.y == (i // 2) * 6 for i, x in enumerate(live))
    with pytest.raises(ValueError, match="live_dlq needs live_queue"):
        widgets(
            queue="q",
            dlq="d",
            cluster="c",
            service="s",
            metrics_service=m.SERVICE,
            gpu=False,
            live_dlq="ld",
        )


def test_the_page_has_the_deployed_widgets_and_makes_no_request(monkeypatch, tmp_path):
    def fill(metrics: Metrics) -> None:
        metrics.count(m.IMAGES_PROCESSED, 12)
        metrics.observe(m.BATCH_SIZE, 6, "Count")

    logs = tmp_path / "w0.out"
    logs.write_text("\n".join(emitted(monkeypatch, T0, fill)) + "\n")
    samples = tmp_path / "queues.out"
    samples.write_text(
        queue_depth_line(queue_name="q-other", visible=5, in_flight=0, timestamp=T0) + "\n"
    )

    page = render_dashboard(
        [logs, samples, tmp_path / "not-yet.emf"], title="fleet <local>", queue="q-other"
    )

    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<script" not in page and "fleet &lt;local&gt;" in page
    shown = Page(page).widgets
    assert [x["title"] for x in shown] == deployed_titles(queue="q-other")
    drawn = {x["title"]: x for x in shown}
    assert drawn["Images per second"]["points"] == 1
    assert drawn["Batch size"]["points"] == 1
    assert drawn["Queue: visible and in flight"]["lines"] == ["visible", "in flight"]
    assert (
        drawn["Latency, enqueue (live: upload) to result (ms)"]["note"]
        == "No data points in these logs."
    )
    assert "ECS" in drawn["Running tasks"]["note"]

    # and with the live lane's queues named, the page has the live widgets of the definition
    page = render_dashboard(
        [logs, samples], title="t", queue="q-other", live_queue="l-q", live_dlq="l-dlq"
    )
    titles = [x["title"] for x in Page(page).widgets]
    assert titles == [
        w.title
        for w in widgets(
            queue="q-other",
            dlq=DEFAULT_DLQ_NAME,
            cluster="local",
            service="local",
            metrics_service=m.SERVICE,
            gpu=False,
            live_queue="l-q",
            live_dlq="l-dlq",
        )
    ]
    assert "Live queue: visible and in flight" in titles


def test_bad_arguments_say_how_to_fix_them(tmp_path):
    with pytest.raises(ValueError, match="period_seconds must be at least 1"):
        render_dashboard([], title="t", period_seconds=0)
    with pytest.raises(ValueError, match="refresh_seconds"):
        render_dashboard([], title="t", refresh_seconds=-5)


@pytest.mark.e2e
@needs_chromium
def test_dashboard_of_a_short_job_renders_in_headless_chromium(
    stack: Stack, processes, checkpoint_path, tmp_path
):
    from tests.helpers import produce, upload

    # Given a few photos, one broken, a message that is no task, and the queues sampled as the
    # local fleet samples them
    files = {f"dash/{i:02d}.jpg": jpeg((320, 240), seed=i) for i in range(10)}
    files["dash/broken.jpg"] = files["dash/00.jpg"][:200]
    upload(stack.s3, bucket=stack.input, files=files)
    stack.sqs.send_message(QueueUrl=stack.queues.queue_url, MessageBody="{not a task")
    depth = tmp_path / "queues.emf"
    stop = threading.Event()

    def sample() -> None:
        with depth.open("w") as f:
            while True:
                urls = [stack.queues.queue_url, stack.queues.dlq_url]
                f.writelines(line + "\n" for line in queue_depth_lines(stack.sqs, urls))
                f.flush()
                if stop.wait(0.5):
                    return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # When a real worker serves the job and exits when idle
        env = stack.env(POSEFLEET_MODEL=str(checkpoint_path), POSEFLEET_BATCH_SIZE="4")
        worker = processes.worker("w0", env, "--exit-when-idle", "3")
        produce(stack, "dash/", "dash", task_size=3)
        assert worker.popen.wait(timeout=240) == 0
    finally:
        stop.set()
        sampler.join(timeout=10)

    queue, dlq = (url.rsplit("/", 1)[-1] for url in (stack.queues.queue_url, stack.queues.dlq_url))
    page_path = tmp_path / "dashboard.html"
    page_path.write_text(
        render_dashboard([worker.stdout, depth], title="short job", queue=queue, dlq=dlq)
    )

    # Then Chromium's DOM holds every widget of the deployed dashboard, in its order, and each
    # one the local fleet can feed has data points
    dom = chromium("--dump-dom", page_path.as_uri(), profile=tmp_path / "profile").stdout
    shown = Page(dom).widgets
    assert [x["title"] for x in shown] == deployed_titles(queue=queue, dlq=dlq)
    local = {w.title for w in by_title().values() if w.local_note is None}
    for widget in shown:
        if widget["title"] in local:
            assert widget["points"] > 0 and widget["lines"], widget
        else:
            assert widget["note"], widget
    failures = next(x for x in shown if x["title"] == "Failures by kind")
    assert failures["lines"] == ["truncated"]
    stages = next(x for x in shown if x["title"].startswith("Time per stage"))
    assert stages["lines"] == list(m.STAGES)

    # and the charts are drawn: pixels of the first series' colour (each local widget has one)
    import numpy as np
    from PIL import Image

    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", page_path.as_uri(), profile=tmp_path / "profile")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    blue = int((np.abs(pixels - np.array((0x1F, 0x77, 0xB4))).sum(axis=2) < 30).sum())
    assert blue > 300, "no chart line or point drawn"
