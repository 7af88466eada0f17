"""Attempt markers: the one definition of how a worker remembers which image it was on.

A message that comes back after earlier receives may hold an image that kills the worker
process (a decoder bug, memory blown by one file). The worker then tries that task's images
apart from all other work, and before each try writes a small marker beside the job's results::

    <prefix>/<job>/attempts/<task>.json    {"v": 1, "job_id": ..., "task_id": ...,
                                            "trial": ["<key>", ...],
                                            "attempts": {"<key>": <crashes alone>}}

A task with no suspect image is first tried as one group, named in ``trial``: usually it was
only caught in someone else's crash, and it finishes at batch speed. If the process dies during
the trial, every image of it is suspect, and the next worker tries them one at a time: a key's
count rises each time a worker starts it alone and is cleared when it finishes. A key whose
count reaches the worker's ``crash_attempts`` has stopped that many workers in a row, alone: it
gets an error line of kind ``crashed_worker`` without being decoded again, and its task-mates
their results as usual. Markers sit outside ``tasks/``, so progress and export never see them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from posefleet.layout import ResultsLocation, check_id

__all__ = ["AttemptMarker", "attempts_key"]


def attempts_key(location: ResultsLocation, job_id: str, task_id: str) -> str:
    """``<prefix>/<job>/attempts/<task>.json``: derived from job and task ids alone."""
    return location.job_prefix(job_id) + "attempts/" + check_id(task_id, "task id") + ".json"


class AttemptMarker(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    job_id: str
    task_id: str
    trial: list[str] = Field(
        default_factory=list, description="keys being tried together when it was written"
    )
    attempts: dict[str, int] = Field(
        default_factory=dict, description="key -> times started alone and never finished"
    )

    def to_body(self) -> bytes:
        return self.model_dump_json().encode()
