"""The fleet's CloudWatch dashboard, drawn locally from the workers' own EMF lines.

The widgets are :func:`posefleet.dashboard.widgets`, the definition infra/ deploys: same titles,
metrics, dimensions, statistics and layout. Their data are the EMF documents the workers print
on stdout (``worker/metrics.py``) and the local fleet's samples of its queues, written in the
same shape under SQS's own namespace and names (:func:`queue_depth_line`). Each statistic is
computed per time bucket as CloudWatch computes it per period: Sum, Average, Maximum, Minimum,
SampleCount, percentiles (nearest rank over every value, EMF value arrays included) and the
per-second rate ``Sum / period``.

The page is one self-contained HTML file: inline SVG charts, no script, and a
Content-Security-Policy that forbids every request.

    python -m localfleet.dashboard .fleet/logs/*.out --out dashboard.html
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from posefleet import metric_names as m
from posefleet.dashboard import (
    DIM_QUEUE_NAME,
    QUEUE_IN_FLIGHT,
    QUEUE_VISIBLE,
    SQS_NAMESPACE,
    Metric,
    Widget,
    widgets,
)
from posefleet.resources import (
    DEFAULT_DLQ_NAME,
    DEFAULT_LIVE_DLQ_NAME,
    DEFAULT_LIVE_QUEUE_NAME,
    DEFAULT_QUEUE_NAME,
)

__all__ = [
    "Sample",
    "Series",
    "queue_depth_line",
    "queue_depth_lines",
    "read_samples",
    "render_dashboard",
    "series_of",
]

CSP = "default-src 'none'; style-src 'unsafe-inline'"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
# Periods the page picks from when none is given: the workers flush their metrics every 10 s.
PERIODS = (10, 30, 60, 300, 900, 3600)
MAX_BUCKETS = 120
# GetQueueAttributes names the visible count without the "Visible" of its CloudWatch metric.
SQS_VISIBLE_ATTRIBUTE = "ApproximateNumberOfMessages"
LOCAL_NAMES = {"cluster": "local", "service": "local"}  # ECS names: no ECS locally


@dataclass(frozen=True, slots=True)
class Sample:
    """One metric's values from one EMF document."""

    namespace: str
    name: str
    dimensions: frozenset[tuple[str, str]]
    timestamp: float  # seconds since the epoch
    values: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a widget: (bucket start in epoch seconds, statistic) per period with data."""

    label: str
    points: tuple[tuple[float, float], ...]


# ----------------------------------------------------------------------------- reading


def _values(raw: Any) -> tuple[float, ...]:
    items = raw if isinstance(raw, list) else [raw]
    return tuple(float(v) for v in items if isinstance(v, int | float) and not isinstance(v, bool))


def read_samples(lines: Iterable[str]) -> Iterator[Sample]:
    """Every metric value of every EMF document among ``lines``; other lines (logs, a line cut
    short while it is being written) are skipped."""
    for line in lines:
        if '"_aws"' not in line:
            continue
        try:
            doc = json.loads(line)
            meta = doc["_aws"]
            stamp = float(meta["Timestamp"]) / 1000
            directives = meta["CloudWatchMetrics"]
        except (ValueError, KeyError, TypeError):
            continue
        for directive in directives:
            namespace = directive.get("Namespace")
            for dim_set in directive.get("Dimensions", [[]]):
                if not all(isinstance(doc.get(k), str) for k in dim_set):
                    continue
                dims = frozenset((k, doc[k]) for k in dim_set)
                for definition in directive.get("Metrics", []):
                    name = definition.get("Name")
                    values = _values(doc.get(name))
                    if namespace and name and values:
                        yield Sample(namespace, name, dims, stamp, values)


def queue_depth_line(
    *, queue_name: str, visible: int, in_flight: int, timestamp: float | None = None
) -> str:
    """One EMF line with a queue's depth, under SQS's namespace, metric names and QueueName
    dimension, so the dashboard's queue widgets read it as CloudWatch reads SQS's metrics."""
    doc = {
        DIM_QUEUE_NAME: queue_name,
        QUEUE_VISIBLE: visible,
        QUEUE_IN_FLIGHT: in_flight,
        "_aws": {
            "Timestamp": int((time.time() if timestamp is None else timestamp) * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": SQS_NAMESPACE,
                    "Dimensions": [[DIM_QUEUE_NAME]],
                    "Metrics": [
                        {"Name": QUEUE_VISIBLE, "Unit": "Count"},
                        {"Name": QUEUE_IN_FLIGHT, "Unit": "Count"},
                    ],
                }
            ],
        },
    }
    return json.dumps(doc, separators=(",", ":"))


def queue_depth_lines(sqs: Any, queue_urls: Iterable[str]) -> list[str]:
    """Sample each queue's depth now (one GetQueueAttributes each; boto3's SQS client), as
    :func:`queue_depth_line` lines. The queue's name is the last part of its URL."""
    now = time.time()
    lines = []
    for url in queue_urls:
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=[SQS_VISIBLE_ATTRIBUTE, QUEUE_IN_FLIGHT]
        )["Attributes"]
        lines.append(
            queue_depth_line(
                queue_name=url.rstrip("/").rsplit("/", 1)[-1],
                visible=int(attributes.get(SQS_VISIBLE_ATTRIBUTE, 0)),
                in_flight=int(attributes.get(QUEUE_IN_FLIGHT, 0)),
                timestamp=now,
            )
        )
    return lines


# ----------------------------------------------------------------------------- statistics


def statistic(stat: str, values: Sequence[float]) -> float:
    """A CloudWatch statistic of the values of one period."""
    if stat == "Sum":
        return math.fsum(values)
    if stat == "Average":
        return math.fsum(values) / len(values)
    if stat == "Maximum":
        return max(values)
    if stat == "Minimum":
        return min(values)
    if stat == "SampleCount":
        return float(len(values))
    ordered = sorted(values)  # pNN, nearest rank
    rank = math.ceil(float(stat[1:]) / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def _matches(metric: Metric, sample: Sample, split_by: str | None) -> bool:
    if (sample.namespace, sample.name) != (metric.namespace, metric.name):
        return False
    wanted = set(metric.dimensions)
    if split_by is None:
        return sample.dimensions == wanted  # CloudWatch: the exact dimension set
    rest = sample.dimensions - wanted
    return wanted <= sample.dimensions and [k for k, _ in rest] == [split_by]


def series_of(widget: Widget, samples: Sequence[Sample], period: int) -> list[Series]:
    """The widget's lines over ``samples``, one point per period that has data."""
    out = []
    for metric in widget.metrics:
        groups: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        for sample in samples:
            if not _matches(metric, sample, widget.split_by):
                continue
            label = metric.label
            if widget.split_by:
                label = dict(sample.dimensions)[widget.split_by]
            bucket = math.floor(sample.timestamp / period) * period
            groups[label][bucket].extend(sample.values)
        for label in sorted(groups):
            buckets = groups[label]
            points = []
            for start in sorted(buckets):
                value = statistic(metric.stat, buckets[start])
                points.append((start, value / period if widget.per_second else value))
            out.append(Series(label, tuple(points)))
    return out


def choose_period(samples: Sequence[Sample]) -> int:
    """The shortest period in :data:`PERIODS` that keeps the span within MAX_BUCKETS."""
    if not samples:
        return PERIODS[0]
    span = max(s.timestamp for s in samples) - min(s.timestamp for s in samples)
    return next((p for p in PERIODS if span / p <= MAX_BUCKETS), PERIODS[-1])


# ----------------------------------------------------------------------------- drawing

W, H, LEFT, RIGHT, TOP, BOTTOM = 560, 230, 56, 12, 10, 26


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _nice_top(value: float) -> float:
    """The axis' top: the least of 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(f * power for f in (1, 2, 2.5, 5, 10) if f * power >= value)


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def _chart(widget: Widget, lines: list[Series], t0: float, t1: float, period: int) -> str:
    e = html.escape
    top = _nice_top(max((v for s in lines for _, v in s.points), default=0))
    span = max(t1 - t0, period)

    def x(t: float) -> float:
        return LEFT + (W - LEFT - RIGHT) * (t - t0) / span

    def y(v: float) -> float:
        return TOP + (H - TOP - BOTTOM) * (1 - v / top)

    n = sum(len(s.points) for s in lines)
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{e(widget.title)}" '
        f'data-points="{n}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for frac in (0, 0.5, 1):  # y grid and labels
        value = top * frac
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}"/><text x="{LEFT - 6}" y="{y(value) + 4:.1f}" '
            f'text-anchor="end">{_fmt(value)}</text>'
        )
    parts.append(
        f'<text x="12" y="{(H - BOTTOM) / 2}" transform="rotate(-90 12 {(H - BOTTOM) / 2})" '
        f'text-anchor="middle">{e(widget.unit)}</text>'
    )
    for t, anchor in ((t0, "start"), ((t0 + t0 + span) / 2, "middle"), (t0 + span, "end")):
        parts.append(f'<text x="{x(t):.1f}" y="{H - 6}" text-anchor="{anchor}">{_clock(t)}</text>')
    for i, s in enumerate(lines):
        color = PALETTE[i % len(PALETTE)]
        # a point sits in the middle of its period, as on CloudWatch's graphs
        xy = [(x(t + period / 2), y(v)) for t, v in s.points]
        parts.append(
            f'<polyline class="series" data-label="{e(s.label)}" fill="none" stroke="{color}" '
            f'stroke-width="2" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in xy)}"/>'
        )
        parts += [
            f'<circle class="point" cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}">'
            f"<title>{e(s.label)} {_clock(t)}: {_fmt(v)}</title></circle>"
            for (a, b), (t, v) in zip(xy, s.points, strict=True)
        ]
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{PALETTE[i % len(PALETTE)]}"></i>'
        f"{e(s.label)}</span>"
        for i, s in enumerate(lines)
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:20px;color:#222;background:#f2f3f3}"
    "h1{margin:0 0 4px;font-size:22px}.meta{color:#555;margin:0 0 14px;font-size:13px}"
    ".grid{display:grid;grid-template-columns:repeat(24,1fr);grid-auto-rows:52px;gap:10px}"
    ".widget{background:#fff;border:1px solid #d5dbdb;border-radius:4px;padding:8px 10px;"
    "display:flex;flex-direction:column;min-width:0}"
    ".widget h2{font-size:14px;margin:0 0 4px}.chart{flex:1;min-height:0;width:100%}"
    ".chart text{font-size:11px;fill:#555}.chart line.grid{stroke:#e5e5e5}"
    ".legend{font-size:12px}.key{margin-right:12px}"
    ".key i{display:inline-block;width:10px;height:10px;margin-right:4px}"
    ".nodata{color:#777;font-size:13px;margin:auto}"
)


def render_dashboard(
    emf_files: Iterable[Path],
    *,
    title: str,
    period_seconds: int | None = None,
    queue: str = DEFAULT_QUEUE_NAME,
    dlq: str = DEFAULT_DLQ_NAME,
    live_queue: str | None = None,
    live_dlq: str | None = None,
    metrics_service: str = m.SERVICE,
    refresh_seconds: int | None = None,
) -> str:
    """The dashboard page over the EMF lines in ``emf_files`` (workers' stdout, queue samples);
    a file that does not exist yet counts as empty.

    ``period_seconds``: the statistics' period (None: the shortest of 10 s, 30 s, 1 min, ...
    that keeps the time range within 120 periods). ``queue``, ``dlq``: the queue names in the
    samples; ``live_queue``, ``live_dlq``: the live lane's (None: no live lane widgets, as
    :func:`posefleet.dashboard.widgets`); ``metrics_service``: the workers' Service dimension
    (POSEFLEET_SERVICE); ``refresh_seconds``: the page reloads itself that often (for a page
    rewritten as the fleet runs).
    """
    if period_seconds is not None and period_seconds < 1:
        raise ValueError("period_seconds must be at least 1 (or None to choose from the data)")
    if refresh_seconds is not None and refresh_seconds < 1:
        raise ValueError("refresh_seconds must be at least 1 (or None for a static page)")
    samples: list[Sample] = []
    for path in map(Path, emf_files):
        if not path.exists():  # not written yet (a fleet renders before its first sample)
            continue
        with path.open(encoding="utf-8", errors="replace") as f:
            samples.extend(read_samples(f))
    period = period_seconds or choose_period(samples)
    gpu = any(s.name == m.GPU_UTILIZATION and s.namespace == m.NAMESPACE for s in samples)
    defined = widgets(
        queue=queue,
        dlq=dlq,
        live_queue=live_queue,
        live_dlq=live_dlq,
        metrics_service=metrics_service,
        gpu=gpu,
        **LOCAL_NAMES,
    )
    stamps = [s.timestamp for s in samples]
    t0 = math.floor(min(stamps, default=0) / period) * period
    t1 = (math.floor(max(stamps, default=0) / period) + 1) * period
    e = html.escape
    refresh = f"<meta http-equiv='refresh' content='{refresh_seconds}'>" if refresh_seconds else ""
    span = f"{_clock(t0)} to {_clock(t1)} UTC" if samples else "no metrics yet"
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">{refresh}",
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1><p class='meta'>{span}, period {period} s, "
        f"{len(samples)} metric samples. Widgets as deployed by infra/ "
        "(posefleet.dashboard).</p><div class='grid'>",
    ]
    for widget in defined:
        lines = [s for s in series_of(widget, samples, period) if s.points]
        if lines:
            body = _chart(widget, lines, t0, t1, period)
        else:
            body = (
                f"<p class='nodata'>{e(widget.local_note or 'No data points in these logs.')}</p>"
            )
        out.append(
            f"<section class='widget' data-title=\"{e(widget.title)}\" "
            f"style='grid-column:{widget.x + 1} / span {widget.width};"
            f"grid-row:{widget.y + 1} / span {widget.height}'>"
            f"<h2>{e(widget.title)}</h2>{body}</section>"
        )
    out.append("</div></body></html>")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localfleet.dashboard",
        description="Render the fleet's dashboard from EMF lines (workers' stdout, queue samples).",
    )
    parser.add_argument("logs", nargs="+", type=Path, help="files of EMF lines")
    parser.add_argument("--out", type=Path, required=True, help="the HTML page to write")
    parser.add_argument("--title", default="posefleet, local fleet")
    parser.add_argument("--period", type=int, default=None, help="seconds (default: fit)")
    parser.add_argument("--queue", default=DEFAULT_QUEUE_NAME, help="tasks queue name")
    parser.add_argument("--dlq", default=DEFAULT_DLQ_NAME, help="dead-letter queue name")
    parser.add_argument(
        "--live-queue", default=DEFAULT_LIVE_QUEUE_NAME, help="live lane queue name ('': none)"
    )
    parser.add_argument(
        "--live-dlq", default=DEFAULT_LIVE_DLQ_NAME, help="live dead-letter queue name ('': none)"
    )
    parser.add_argument("--service", default=m.SERVICE, help="the workers' Service dimension")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.logs if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    page = render_dashboard(
        args.logs,
        title=args.title,
        period_seconds=args.period,
        queue=args.queue,
        dlq=args.dlq,
        live_queue=args.live_queue or None,
        live_dlq=(args.live_dlq or None) if args.live_queue else None,
        metrics_service=args.service,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page, encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
