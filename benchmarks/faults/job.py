"""What a fault run measures, read from S3, SQS and the workers' logs: the fault benchmark
(``python -m benchmarks.faults``) reports it, ``tests/test_faults.py`` asserts on it.

The observer's own clients talk to moto directly, never through the proxy.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mappings import ClassMapping
from posefleet.deadletter import REASON_ATTRIBUTE, REDRIVE_REASON, reason_of
from posefleet.layout import ResultsLocation
from posefleet.result import ResultLine, load_lines
from training.synthetic import encode, render_pose

__all__ = [
    "DeadLetters",
    "Outcome",
    "WorkerActivity",
    "dead_letters",
    "invalid_bodies",
    "outcome",
    "photos",
    "queue_depth",
    "task_objects",
    "worker_activity",
]

_INVALID = (  # what a worker can judge invalid by itself, each made unique by its number
    "{{not json {n}",
    "[{n}, 2]",
    '{{"job_id": "j{n}"}}',
    '{{"v": 2, "job_id": "j{n}", "task_id": "t{n}"}}',
)


def invalid_bodies(count: int) -> list[str]:
    """``count`` distinct bodies that are not tasks: not JSON, not an object, not a task, a
    task version no worker reads."""
    return [_INVALID[n % len(_INVALID)].format(n=n) for n in range(count)]


def photos(count: int, *, prefix: str, seed: int = 0, large_every: int = 0) -> dict[str, bytes]:
    """Synthetic pose photos, 320x240, every ``large_every``-th a 4032x3024 phone photo (a
    multi-MB GET through the proxy)."""
    rng = random.Random(seed)
    poses = list(ClassMapping.for_poses().classes)
    files = {}
    for i in range(count):
        large = large_every and i % large_every == large_every - 1
        size = (4032, 3024) if large else (320, 240)
        files[f"{prefix}{i:05d}.jpg"] = encode(render_pose(rng.choice(poses), size, rng), rng)
    return files


def queue_depth(sqs: Any, url: str) -> tuple[int, int]:
    """Messages in the queue: (visible, in flight)."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


@dataclass
class Outcome:
    """Every result line of a job against the keys it was given."""

    images: int
    lines: int
    task_objects: int
    missing: list[str]
    duplicated: dict[str, int]
    not_ok: dict[str, str]  # key: error kind

    @property
    def every_image_once_ok(self) -> bool:
        return not (self.missing or self.duplicated or self.not_ok) and self.lines == self.images

    def summary(self) -> dict[str, Any]:
        return {
            "every_image_once_ok": self.every_image_once_ok,
            "images": self.images,
            "result_lines": self.lines,
            "task_objects": self.task_objects,
            "missing": len(self.missing),
            "duplicated": len(self.duplicated),
            "not_ok": len(self.not_ok),
            "not_ok_kinds": dict(Counter(self.not_ok.values())),
            "missing_sample": self.missing[:10],
        }


def task_objects(s3: Any, results_uri: str, job: str) -> list[str]:
    location = ResultsLocation.parse(results_uri)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket, Prefix=location.tasks_prefix(job)
    ):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def outcome(s3: Any, results_uri: str, job: str, keys: Iterable[str]) -> Outcome:
    """Reads every task object of ``job``: each key must have exactly one line, ``ok``."""
    bucket = ResultsLocation.parse(results_uri).bucket
    objects = task_objects(s3, results_uri, job)
    lines: list[ResultLine] = []
    for key in objects:
        lines += load_lines(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    counts = Counter(line.key for line in lines)
    wanted = sorted(keys)
    return Outcome(
        images=len(wanted),
        lines=len(lines),
        task_objects=len(objects),
        missing=[k for k in wanted if k not in counts],
        duplicated={k: n for k, n in counts.items() if n > 1},
        not_ok={line.key: str(line.error_kind) for line in lines if line.status != "ok"},
    )


@dataclass
class DeadLetters:
    """What the dead-letter queue holds, and why."""

    bodies: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def summary(self, invalid: Iterable[str]) -> dict[str, Any]:
        invalid = set(invalid)
        tasks = [json.loads(b) for b in self.bodies if b not in invalid]
        images = sum(len(t.get("keys", [])) for t in tasks if isinstance(t, dict))
        why = Counter(
            "redrive policy (maxReceiveCount)" if r == REDRIVE_REASON else r.split(":")[0][:60]
            for r in self.reasons
        )
        return {
            "messages": len(self.bodies),
            "invalid_bodies": sum(1 for b in self.bodies if b in invalid),
            "invalid_bodies_distinct": len(invalid & set(self.bodies)),
            "other_messages": len(tasks),
            "images_in_other_messages": images,
            "reasons": dict(why),
        }


def dead_letters(sqs: Any, dlq_url: str) -> DeadLetters:
    """Every message in the dead-letter queue (each held for 5 minutes while reading)."""
    found = DeadLetters()
    while got := sqs.receive_message(
        QueueUrl=dlq_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=300,
        MessageAttributeNames=[REASON_ATTRIBUTE],
    ).get("Messages"):
        for message in got:
            found.bodies.append(message["Body"])
            found.reasons.append(reason_of(message))
    return found


@dataclass
class WorkerActivity:
    """One worker's life, from its structlog JSON lines (and Python's thread tracebacks)."""

    tasks_done: list[float]  # wall-clock times of its task_done events
    events: Counter[str]
    thread_deaths: list[str]  # threads that died of an exception, "(stopping)" once draining
    exit_log: str  # its last error or critical event, if any

    def first_done_after(self, moment: float) -> float | None:
        return next((t for t in self.tasks_done if t >= moment), None)

    def summary(self, *, started: float, ended: float) -> dict[str, Any]:
        last = max(self.tasks_done, default=None)
        tail = ended - (ended - started) / 4
        return {
            "tasks_done": len(self.tasks_done),
            "first_task_s": round(min(self.tasks_done) - started, 1) if self.tasks_done else None,
            "last_task_s": round(last - started, 1) if last else None,
            "tasks_in_last_quarter": sum(1 for t in self.tasks_done if t >= tail),
            "thread_deaths": self.thread_deaths,
            "exit_log": self.exit_log,
            "events": dict(sorted(self.events.items())),
        }


def worker_activity(stderr: Path) -> WorkerActivity:
    done: list[float] = []
    events: Counter[str] = Counter()
    deaths: list[str] = []
    exit_log, draining = "", False
    for line in stderr.read_text(errors="replace").splitlines():
        if line.startswith("Exception in thread "):
            name = line.removeprefix("Exception in thread ").split(":")[0]
            deaths.append(f"{name} (stopping)" if draining else name)
            continue
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        name = entry.get("event", "?")
        events[name] += 1
        draining = draining or name == "drain_started"
        if name == "task_done":
            done.append(datetime.fromisoformat(entry["timestamp"]).timestamp())
        if entry.get("level") in ("error", "critical"):
            exit_log = f"{name}: {entry.get('error', '')}"[:300]
    return WorkerActivity(sorted(done), events, deaths, exit_log)
