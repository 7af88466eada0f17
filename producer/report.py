"""One self-contained HTML report per job: counts per pose, a confidence histogram, galleries of
thumbnails per pose (least confident first, each with its probabilities) and the errors.

Charts are inline SVG, thumbnails are small JPEG data URIs, and a Content-Security-Policy forbids
every request, so the file opens anywhere and nothing leaves the page.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pillow_heif
from PIL import Image, ImageOps

from posefleet.result import ResultLine
from producer.job import Job
from producer.job.export import summarize

__all__ = ["render_report"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
BAR, LOW, OK = "#2f6fb0", "#d9822b", "#3a8f5c"


def thumbnail(data: bytes, size: int = 160) -> str | None:
    """A small JPEG data URI, or None if the bytes do not decode (HEIC/HEIF through
    pillow-heif, as the worker reads them; AVIF is Pillow's own)."""
    pillow_heif.register_heif_opener()  # idempotent; the producer never imports preprocess
    try:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=70)
    except Exception:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def _bars(counts: Sequence[tuple[str, int]], *, color: str, title: str, width: int = 640) -> str:
    if not counts:
        return ""
    top = max(n for _, n in counts) or 1
    row = 26
    parts = [
        f'<svg class="chart" role="img" aria-label="{html.escape(title)}" width="{width}" '
        f'height="{row * len(counts) + 10}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, n) in enumerate(counts):
        w = int((width - 260) * n / top)
        y = i * row + 5
        parts.append(
            f'<text x="170" y="{y + 15}" text-anchor="end" font-size="13">'
            f"{html.escape(label)}</text>"
            f'<rect x="180" y="{y}" width="{max(w, 1)}" height="{row - 8}" fill="{color}"/>'
            f'<text x="{186 + w}" y="{y + 15}" font-size="12">{n}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_report(
    job: Job,
    lines: Sequence[ResultLine],
    *,
    per_pose: int = 24,
    low_confidence: float = 0.6,
    thumbnails: bool = True,
    note: str | None = None,
) -> str:
    """The page for ``lines``, the job's results (``job.results()``); thumbnails are read from
    the source with the job's S3 client. ``note``: shown first (a cancelled job says so)."""
    job_id = job.job_id
    fetch = _fetcher(job) if thumbnails else None
    summary = summarize(lines)
    by_pose: dict[str, list[ResultLine]] = defaultdict(list)
    for line in lines:
        if line.status == "ok":
            by_pose[line.predicted_class_name or str(line.predicted_class_id)].append(line)
    shown = {
        pose: sorted(group, key=lambda r: r.confidence or 0)[:per_pose]
        for pose, group in by_pose.items()
    }
    thumbs: dict[tuple[str, str], str | None] = {}
    if fetch:
        wanted = [(r.bucket, r.key) for group in shown.values() for r in group]

        def get(item: tuple[str, str]) -> tuple[tuple[str, str], str | None]:
            try:
                return item, thumbnail(fetch(*item))
            except Exception:
                return item, None

        with ThreadPoolExecutor(8) as pool:
            thumbs = dict(pool.map(get, wanted))
    histogram = [
        (f"{i / 10:.1f}-{(i + 1) / 10:.1f}", n) for i, n in enumerate(summary.confidence_bins)
    ]
    e = html.escape
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        f"<title>posefleet job {e(job_id)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:24px;color:#222}h1{margin:0 0 4px}"
        ".stats span{display:inline-block;margin-right:18px}"
        ".gallery{display:flex;flex-wrap:wrap;gap:10px}"
        ".card{width:170px;border:1px solid #ddd;border-radius:6px;padding:5px;font-size:12px}"
        ".card img{width:160px;height:160px;object-fit:contain;background:#f4f4f4;display:block}"
        f".low{{border-color:{LOW};border-width:2px}}.probs{{color:#555}}table{{border-collapse:collapse}}"
        "td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:left}",
        "</style></head><body>",
        f"<h1>Job {e(job_id)}</h1>",
        f"<p class='note' role='status'><b>{e(note)}</b></p>" if note else "",
        f"<p class='stats'><span><b>{summary.images}</b> images</span>"
        f"<span><b>{summary.ok}</b> classified</span>"
        f"<span><b>{summary.images - summary.ok}</b> errors</span></p>",
        "<h2>Images per pose</h2>",
        _bars(summary.per_pose.most_common(), color=BAR, title="images per pose"),
        "<h2>Confidence</h2>",
        _bars(histogram, color=OK, title="confidence histogram"),
    ]
    for pose, group in sorted(shown.items(), key=lambda kv: -len(by_pose[kv[0]])):
        out.append(
            f"<h2 id='pose-{e(pose)}'>{e(pose)} <small>({len(by_pose[pose])} images, "
            "least confident first)</small></h2><div class='gallery'>"
        )
        for r in group:
            src = thumbs.get((r.bucket, r.key))
            top3 = sorted((r.all_probabilities or {}).items(), key=lambda kv: -kv[1])[:3]
            probs = "<br>".join(f"{e(n)} {p:.0%}" for n, p in top3)
            img = (
                f"<img alt='{e(r.key)}' src='{src}'>"
                if src
                else "<div class='noimg'>no thumbnail</div>"
            )
            low = " low" if (r.confidence or 0) < low_confidence else ""
            out.append(
                f"<div class='card{low}'>{img}<b>{(r.confidence or 0):.0%}</b> {e(r.key)}"
                f"<div class='probs'>{probs}</div></div>"
            )
        out.append("</div>")
    errors = [r for r in lines if r.status == "error"]
    out.append(f"<h2>Errors ({len(errors)})</h2>")
    if errors:
        out.append("<table><tr><th>key</th><th>kind</th><th>message</th></tr>")
        out += [
            f"<tr><td>{e(r.key)}</td><td>{e(str(r.error_kind))}</td>"
            f"<td>{e(r.error_message or '')}</td></tr>"
            for r in errors
        ]
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def _fetcher(job: Job) -> Callable[[str, str], bytes]:
    return lambda bucket, key: job.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
