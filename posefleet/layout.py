"""Results layout: where a job's objects live. Keys derive from job and task ids alone.

    <prefix>/<job>/manifest.json        one per job, written by the producer
    <prefix>/<job>/tasks/<task>.jsonl   one per task, written by the worker

A retried or duplicated task writes the same key with the same lines, so a job's merged
results hold every image exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Manifest", "ResultsLocation", "check_id"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")


def check_id(value: str, what: str) -> str:
    """Job and task ids become key segments: letters, digits, ``._=-``, at most 128 chars."""
    if not _ID.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be 1-128 characters of letters, digits, '.', '_', '=' or '-'"
            " and start with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class ResultsLocation:
    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> ResultsLocation:
        if not uri.startswith("s3://"):
            raise ValueError(f"results location must look like s3://bucket/prefix, got {uri!r}")
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise ValueError(f"results location {uri!r} has no bucket")
        return cls(bucket=bucket, prefix=prefix.strip("/"))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _join(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def job_prefix(self, job_id: str) -> str:
        return self._join(check_id(job_id, "job id")) + "/"

    def tasks_prefix(self, job_id: str) -> str:
        return self.job_prefix(job_id) + "tasks/"

    def task_key(self, job_id: str, task_id: str) -> str:
        return self.tasks_prefix(job_id) + check_id(task_id, "task id") + ".jsonl"

    def manifest_key(self, job_id: str) -> str:
        return self.job_prefix(job_id) + "manifest.json"

    def task_id_of(self, job_id: str, key: str) -> str | None:
        """The task id a result key belongs to, or None if the key is not a task result."""
        head = self.tasks_prefix(job_id)
        if key.startswith(head) and key.endswith(".jsonl"):
            return key[len(head) : -len(".jsonl")]
        return None


class Manifest(BaseModel):
    """``<prefix>/<job>/manifest.json``: what a job was asked to do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    job_id: str
    source_bucket: str
    source_prefix: str
    tasks: int
    images: int
    task_size: int
    task_ids: list[str]
    queue_url: str
    model: str
    created_at: str
