"""Real worker and producer processes for end-to-end tests, each stopped by its handle."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def logs(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in self.stderr.read_text().splitlines()
            if line.startswith("{")
        ]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]

    def emf(self) -> list[dict[str, Any]]:
        return [
            json.loads(line) for line in self.stdout.read_text().splitlines() if '"_aws"' in line
        ]

    def wait_for(self, event: str, timeout: float = 60, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.events(event)) >= count:
                return
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}):\n"
                    + self.stderr.read_text()[-3000:]
                )
            time.sleep(0.05)
        raise AssertionError(
            f"{self.name}: no {event!r} within {timeout}s:\n{self.stderr.read_text()[-3000:]}"
        )


class ProcessGroup:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        out, err = self.log_dir / f"{name}.out", self.log_dir / f"{name}.err"
        popen = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=out.open("wb"),
            stderr=err.open("wb"),
            cwd=Path.cwd(),
        )
        proc = Proc(name=name, popen=popen, stdout=out, stderr=err)
        self.procs.append(proc)
        return proc

    def worker(self, name: str, env: dict[str, str], *extra: str) -> Proc:
        return self.start(name, ["-m", "worker", *extra], env)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()


def descendants(pid: int) -> dict[int, list[str]]:
    """Every living process below ``pid``: {pid: argv} (empty argv for one that just ended)."""
    import psutil

    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found[child.pid] = child.cmdline()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            found[child.pid] = []
    return found
