"""CloudWatch Embedded Metric Format (EMF), as JSON lines on stdout.

Values are gathered in memory and flushed every few seconds: counts are summed, timings and
sizes go out as value arrays (at most 100 per metric per document, as EMF allows), so
CloudWatch can compute percentiles. Names come from :mod:`posefleet.metric_names`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import defaultdict
from typing import IO

from posefleet.metric_names import DIM_SERVICE, NAMESPACE

__all__ = ["Metrics"]

MAX_VALUES = 100


class Metrics:
    def __init__(
        self, *, service: str, out: IO[str] | None = None, namespace: str = NAMESPACE
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        # (dims) -> name -> (unit, values)
        self._data: dict[tuple[tuple[str, str], ...], dict[str, tuple[str, list[float]]]] = (
            defaultdict(dict)
        )

    def count(self, name: str, n: float = 1, **dims: str) -> None:
        """A counter: summed until the next flush."""
        self._put(name, n, "Count", dims, summed=True)

    def observe(self, name: str, value: float, unit: str = "Milliseconds", **dims: str) -> None:
        """A distribution (timings, sizes): every value is kept, for percentiles."""
        self._put(name, round(value, 3), unit, dims, summed=False)

    def _put(
        self, name: str, value: float, unit: str, dims: dict[str, str], *, summed: bool
    ) -> None:
        key = tuple(sorted(dims.items()))
        with self._lock:
            entry = self._data[key].setdefault(name, (unit, []))
            if summed and entry[1]:
                entry[1][0] += value
            else:
                entry[1].append(value)

    def flush(self) -> int:
        """Write what was gathered; returns how many EMF documents were written."""
        with self._lock:
            data, self._data = self._data, defaultdict(dict)
        written = 0
        for dims, metrics in data.items():
            longest = max(len(values) for _, values in metrics.values())
            for start in range(0, longest, MAX_VALUES):
                doc: dict[str, object] = {DIM_SERVICE: self.service, **dict(dims)}
                definitions = []
                for name, (unit, values) in metrics.items():
                    part = values[start : start + MAX_VALUES]
                    if not part:
                        continue
                    doc[name] = part[0] if len(part) == 1 else part
                    definitions.append({"Name": name, "Unit": unit})
                doc["_aws"] = {
                    "Timestamp": int(time.time() * 1000),
                    "CloudWatchMetrics": [
                        {
                            "Namespace": self.namespace,
                            "Dimensions": [[DIM_SERVICE, *(k for k, _ in dims)]],
                            "Metrics": definitions,
                        }
                    ],
                }
                self.out.write(json.dumps(doc, separators=(",", ":")) + "\n")
                written += 1
        self.out.flush()
        return written
