"""The package layout, checked on the source: who may import whom.

``posefleet/`` holds the contracts and is imported by everything, so it imports none of the
packages above it. ``localfleet/`` drives the producer and the worker only through their command
lines (other branches change their internals), so it imports neither.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ABOVE_CONTRACTS = {"producer", "worker", "training", "infra", "localfleet", "benchmarks"}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages named by every import statement in the file, nested ones included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    assert found, f"no modules under {package}/"
    return found


def test_the_checker_sees_nested_and_from_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os\nfrom training.synthetic import generate\n"
        "def f():\n    import producer.job.submit as j\n    from . import sibling\n"
    )
    assert imported_packages(source) == {"os", "training", "producer"}


@pytest.mark.parametrize("path", modules("posefleet"), ids=lambda p: p.name)
def test_contracts_import_nothing_above_them(path):
    assert not imported_packages(path) & ABOVE_CONTRACTS


@pytest.mark.parametrize("path", modules("localfleet"), ids=lambda p: p.name)
def test_localfleet_drives_producer_and_worker_through_their_command_lines(path):
    assert not imported_packages(path) & {"producer", "worker"}
