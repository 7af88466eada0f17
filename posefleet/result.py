"""Result line: the one definition of what posefleet says about one image (JSON Lines).

``ok`` lines carry the fields the seed Lambda returned (``predicted_class_index``,
``predicted_class_id``, ``predicted_class_name``, ``confidence``, ``all_probabilities``) plus
the model version and the image's original size. ``error`` lines carry a stable
:class:`ErrorKind` and a human message.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ErrorKind", "ImageError", "ResultLine", "dump_lines", "load_lines"]


class ErrorKind(StrEnum):
    NOT_FOUND = "not_found"
    ACCESS_DENIED = "access_denied"
    EMPTY = "empty"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    TOO_LARGE = "too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    UNSUPPORTED_FORMAT = "unsupported_format"
    DECODE_FAILED = "decode_failed"
    # The image stopped the worker process (``crash_attempts`` times in a row, each time taken
    # alone): it is not decoded again (posefleet.attempts).
    CRASHED_WORKER = "crashed_worker"


class ImageError(Exception):
    """One image could not be classified; its task goes on."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class ResultLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: str
    key: str
    status: Literal["ok", "error"]
    model_version: str | None = None
    original_size: tuple[int, int] | None = Field(default=None, description="(width, height)")
    predicted_class_index: int | None = None
    predicted_class_id: str | None = None
    predicted_class_name: str | None = None
    confidence: float | None = None
    all_probabilities: dict[str, float] | None = None
    error_kind: ErrorKind | None = None
    error_message: str | None = None

    @model_validator(mode="after")
    def _fields_match_status(self) -> ResultLine:
        if self.status == "ok":
            missing = [
                f
                for f in (
                    "predicted_class_index",
                    "predicted_class_id",
                    "confidence",
                    "model_version",
                )
                if getattr(self, f) is None
            ]
            if missing:
                raise ValueError(f"ok result lacks {missing}")
        elif self.error_kind is None or not self.error_message:
            raise ValueError("error result needs error_kind and error_message")
        return self

    @classmethod
    def error(cls, bucket: str, key: str, err: ImageError) -> ResultLine:
        return cls(
            bucket=bucket, key=key, status="error", error_kind=err.kind, error_message=err.message
        )

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


def dump_lines(lines: Iterable[ResultLine]) -> bytes:
    return "".join(line.to_json() + "\n" for line in lines).encode()


def load_lines(data: bytes) -> list[ResultLine]:
    return [ResultLine.model_validate_json(s) for s in data.decode().splitlines() if s.strip()]
