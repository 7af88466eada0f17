"""What ``status`` and ``jobs`` print from a job record (posefleet/job_record.py): where the
job stands, its rate and age, as JSON or as a table. No calls here: the caller reads the
record (one BatchGetItem) and the queue depths (``follow.queue_depths``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from posefleet.job_record import JobRecord

__all__ = ["jobs_table", "record_view"]


def _seconds_since(iso: str | None, until: datetime | None = None) -> float | None:
    if not iso:
        return None
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return max(0.0, ((until or datetime.now(UTC)) - then).total_seconds())


def rate_of(record: JobRecord) -> float:
    """Images a second since the job's run started (to its end, once finished)."""
    end = datetime.fromisoformat(record.finished_at) if record.finished_at else None
    seconds = _seconds_since(record.started_at, end)
    return record.images_done / seconds if seconds else 0.0


def record_view(record: JobRecord, depths: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """``status``'s JSON for a job with a record; ``depths``: queued, in flight, dead."""
    c = record.counts
    total = record.tasks_total
    rate = rate_of(record)
    images_left = (record.images_total or 0) - record.images_done
    view: dict[str, Any] = {
        "job_id": record.job_id,
        "state": record.state,
        "source": record.source,
        "tasks_total": total,
        "tasks_done": c.tasks_done,
        "tasks_cancelled": c.tasks_cancelled,
        "tasks_remaining": None if total is None else max(0, total - c.tasks_finished),
        "images_total": record.images_total,
        "images_done": record.images_done,
        "images_ok": c.images_ok,
        "failed": c.images_failed,
        "error_kinds": dict(sorted(c.errors.items(), key=lambda kv: -kv[1])),
        "complete": record.state == "complete",
        "exact": True,
        "images_per_s": round(rate, 1),
        "eta_s": round(images_left / rate) if rate > 0 and not record.final else None,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "results": record.results,
    }
    if record.state == "submitting":
        view |= {"tasks_planned": record.tasks_planned, "tasks_sent": record.tasks_sent}
    if record.reason:
        view["reason"] = record.reason
    if depths is not None:
        view |= dict(zip(("queued", "in_flight", "dead_letter"), depths, strict=True))
    return view


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def jobs_table(records: list[JobRecord]) -> list[str]:
    """``jobs``' lines: one a job, newest first, with a header."""
    rows = [("JOB", "STATE", "PROGRESS", "FAILED", "RATE", "AGE")]
    for r in records:
        total = r.images_total
        done = r.images_done
        progress = f"{done}/{total} ({100 * done / total:.0f}%)" if total else f"{done}/?"
        if r.state == "submitting":
            progress = f"{r.tasks_sent}/{r.tasks_planned} tasks sent"
        rows.append(
            (
                r.job_id,
                r.state,
                progress,
                str(r.counts.images_failed),
                f"{rate_of(r):.1f} img/s",
                _age(_seconds_since(r.created_at)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
