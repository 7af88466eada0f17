"""The HTML report: self-contained, and rendered by headless Chromium with charts and galleries."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posefleet.result import ErrorKind, ImageError, ResultLine, dump_lines
from posefleet.task import TaskMessage
from producer.__main__ import main
from tests.browser import chromium, needs_chromium
from tests.conftest import INPUT, RESULTS
from tests.helpers import RESULTS_URI
from tests.images import jpeg

NAMES = ("Front Double Biceps", "Side Chest", "Front Relaxed")


def ok(key: str, pose: int, confidence: float) -> ResultLine:
    rest = (1 - confidence) / 2
    probs = {n: (confidence if i == pose else rest) for i, n in enumerate(NAMES)}
    return ResultLine(
        bucket=INPUT,
        key=key,
        status="ok",
        model_version="v1",
        original_size=(640, 480),
        predicted_class_index=pose,
        predicted_class_id=str(pose),
        predicted_class_name=NAMES[pose],
        confidence=confidence,
        all_probabilities=probs,
    )


@pytest.fixture
def report(s3, sqs, queues, capsys, tmp_path) -> tuple[Path, list[ResultLine]]:
    keys = [f"r/{i:02d}.jpg" for i in range(9)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=INPUT, Key=key, Body=jpeg((480, 640), seed=i))
    main(
        [
            "--bucket",
            INPUT,
            "--prefix",
            "r/",
            "--job-id",
            "rep",
            "--task-size",
            "10",
            "--queue-url",
            queues.queue_url,
            "--results",
            RESULTS_URI,
        ]
    )
    lines = [ok(k, i % 3, 0.35 + 0.07 * i) for i, k in enumerate(keys)]
    lines.append(
        ResultLine.error(INPUT, "r/broken.jpg", ImageError(ErrorKind.TRUNCATED, "cut <short>"))
    )
    # the plan's one task (export and report read only the plan's tasks)
    body = sqs.receive_message(QueueUrl=queues.queue_url)["Messages"][0]["Body"]
    task = TaskMessage.model_validate_json(body)
    s3.put_object(Bucket=RESULTS, Key=task.result_key, Body=dump_lines(lines))
    capsys.readouterr()
    out = tmp_path / "rep.html"
    assert main(["report", "rep", "--out", str(out), "--results", RESULTS_URI]) == 0
    return out, lines


def test_report_is_self_contained_with_charts_galleries_and_errors(report):
    path, _ = report
    page = path.read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), (
        "a request would leave the page"
    )
    assert page.count('<svg class="chart"') == 2
    assert page.count("data:image/jpeg;base64,") == 9
    assert page.count("class='gallery'") == 3
    assert "cut &lt;short&gt;" in page and "truncated" in page  # escaped
    # least confident first within a pose
    start = page.index("id='pose-Front Double Biceps'")
    gallery = page[start : page.index("<h2", start + 1)]
    shown = [int(p) for p in re.findall(r"<b>(\d+)%</b> r/", gallery)]
    assert len(shown) == 3 and shown == sorted(shown)


@needs_chromium
def test_report_renders_in_headless_chromium(report, tmp_path):
    path, _ = report
    shot = tmp_path / "shot.png"
    chromium(
        f"--screenshot={shot}", path.as_uri(), profile=tmp_path / "profile", window="1200,2400"
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)

    def share(rgb: tuple[int, int, int]) -> float:
        return float((np.abs(pixels - np.array(rgb)).sum(axis=2) < 30).mean())

    assert share((0x2F, 0x6F, 0xB0)) > 0.001, "the per-pose bar chart is not drawn"
    assert share((0x3A, 0x8F, 0x5C)) > 0.001, "the confidence histogram is not drawn"
    # thumbnails: a region of varied colour below the charts
    lower = pixels[900:2000]
    assert lower.std() > 20, "no gallery thumbnails rendered"
