"""How many CPUs this container may actually use: cgroup quota, not the host's core count."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus"]


def _cgroup_quota(root: Path) -> float | None:
    v2 = root / "cpu.max"
    if v2.exists():
        quota, _, period = v2.read_text().strip().partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    q, p = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
    if q.exists() and p.exists():
        quota, period = int(q.read_text()), int(p.read_text())
        if quota > 0 and period > 0:
            return quota / period
    return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """min(affinity, cgroup quota rounded up), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:
        count = os.cpu_count() or 1
    try:
        quota = _cgroup_quota(cgroup_root)
    except (OSError, ValueError):
        quota = None
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)
