"""Signals only set a flag; the loop drains. A second signal exits at once."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

__all__ = ["Shutdown"]


class Shutdown:
    def __init__(self) -> None:
        self.requested = threading.Event()
        self._count = 0

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._count += 1
        if self._count > 1:
            os._exit(128 + signum)  # cold shutdown: the messages come back by visibility timeout
        self.requested.set()
