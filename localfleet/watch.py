"""Watch mode (``python -m localfleet --watch``): the live lane, tried by dropping a photo into a
folder.

:class:`FolderWatch` polls the folder every :data:`POLL_SECONDS` and uploads each new or
changed file (hidden ones aside) into the input bucket, where the fleet routes it to the live
lane; a file is taken once it has been left alone for :data:`SETTLE_SECONDS`, so a photo still
being copied in is not uploaded half-written. What the folder holds when watching starts is not
uploaded again (the fleet uploaded it at start, as back catalogue). :class:`LabelPrinter` reads
a queue subscribed to the events topic (:mod:`posefleet.events`) and prints one line per
event, de-duplicated by the event's id (delivery is at least once), e.g.::

    s3://posefleet-input/checkin.jpg: Front Double Biceps (0.93), 0.17 s after upload

Both run in threads of the fleet's process until told to stop; a failed round is said and the
next one tried.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from localfleet.fleet import folder_files
from posefleet.events import ImageLabelled, JobFinished, parse_event

__all__ = [
    "POLL_SECONDS",
    "SETTLE_SECONDS",
    "WATCH_EVENTS_QUEUE",
    "FolderWatch",
    "LabelPrinter",
    "describe",
]

POLL_SECONDS = 0.5  # how often the folder is looked at
SETTLE_SECONDS = 0.3  # a file unchanged this long is complete enough to upload
EVENTS_WAIT_SECONDS = 1  # the events queue's long poll: stops within about a second
SEEN_IDS = 10_000  # event ids remembered for de-duplication
# The watch's own queue on the events topic: `python -m producer events` keeps all of its own.
WATCH_EVENTS_QUEUE = "posefleet-events-watch"

Stamp = tuple[int, int]  # (size, mtime in ns)


class FolderWatch:
    """Uploads new or changed files under ``folder`` as ``prefix`` + their relative path, with
    ``upload(path, key)``."""

    def __init__(
        self,
        *,
        folder: Path,
        prefix: str,
        upload: Callable[[Path, str], object],
        settle_seconds: float = SETTLE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settle_seconds < 0:
            raise ValueError("settle_seconds must be 0 or more")
        self.folder = Path(folder)
        self.prefix = prefix
        self.upload = upload
        self.settle_ns = int(settle_seconds * 1e9)
        self.clock = clock
        self.known: dict[Path, Stamp] = {}

    def _stamps(self) -> dict[Path, Stamp]:
        stamps = {}
        for path in folder_files(self.folder):
            try:
                st = path.stat()
            except FileNotFoundError:  # removed since it was listed
                continue
            stamps[path] = (st.st_size, st.st_mtime_ns)
        return stamps

    def prime(self) -> int:
        """Take what the folder holds now as uploaded; returns how many files."""
        self.known = self._stamps()
        return len(self.known)

    def poll(self) -> list[str]:
        """Upload what is new or changed and has settled; returns the keys uploaded."""
        now_ns = int(self.clock() * 1e9)
        sent = []
        stamps = self._stamps()
        for path, stamp in stamps.items():
            if self.known.get(path) == stamp or now_ns - stamp[1] < self.settle_ns:
                continue  # unchanged, or still being written: the next poll looks again
            key = self.prefix + path.relative_to(self.folder).as_posix()
            try:
                self.upload(path, key)
            except FileNotFoundError:
                continue
            self.known[path] = stamp
            sent.append(key)
        for gone in self.known.keys() - stamps.keys():
            del self.known[gone]  # put back later, it is new again
        return sent

    def run(
        self,
        stop: threading.Event,
        *,
        say: Callable[[str], None],
        interval: float = POLL_SECONDS,
    ) -> None:
        while not stop.wait(interval):
            try:
                for key in self.poll():
                    say(f"uploaded {key} (live lane)")
            except Exception as e:  # the folder or the bucket failed this round: try again
                say(f"watch: {type(e).__name__}: {e}")


def describe(event: ImageLabelled | JobFinished) -> str:
    """One line for a person: the photo and its pose (or error), and how long after its upload
    it was labelled; for a job, its state and counts."""
    if isinstance(event, JobFinished):
        return (
            f"job {event.job_id} {event.state}: {event.images_ok} ok, "
            f"{event.images_failed} failed ({event.results})"
        )
    line = event.result
    if line.status == "ok":
        what = f"{line.predicted_class_name} ({line.confidence:.2f})"
    else:
        kind = line.error_kind.value if line.error_kind else "error"
        what = f"error {kind}: {line.error_message}"
    when = ""
    if event.uploaded_at is not None:
        seconds = (event.labelled_at - event.uploaded_at).total_seconds()
        when = f", {seconds:.2f} s after upload"
    return f"s3://{event.bucket}/{event.key}: {what}{when}"


class LabelPrinter:
    """Prints each event on ``queue_url`` (a queue subscribed to the events topic with raw
    delivery) to ``out`` once, and deletes it."""

    def __init__(self, *, sqs: Any, queue_url: str, out: TextIO) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.out = out
        self.seen: OrderedDict[str, None] = OrderedDict()

    def _first_time(self, event_id: str) -> bool:
        if event_id in self.seen:
            return False
        self.seen[event_id] = None
        if len(self.seen) > SEEN_IDS:
            self.seen.popitem(last=False)
        return True

    def once(self, wait_seconds: int = EVENTS_WAIT_SECONDS) -> int:
        """One receive: print what came, delete it; returns how many lines were printed."""
        got = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
        ).get("Messages", [])
        printed = 0
        for message in got:
            try:
                event = parse_event(message["Body"])
            except ValidationError as e:
                text = f"not a posefleet event ({e.errors()[0]['msg']}): {message['Body'][:200]}"
            else:
                text = describe(event) if self._first_time(event.id) else None
            if text is not None:
                print(text, file=self.out, flush=True)
                printed += 1
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return printed

    def run(self, stop: threading.Event, *, say: Callable[[str], None]) -> None:
        while not stop.is_set():
            try:
                self.once()
            except Exception as e:  # the queue failed this round: try again shortly
                say(f"events: {type(e).__name__}: {e}")
                stop.wait(1.0)
