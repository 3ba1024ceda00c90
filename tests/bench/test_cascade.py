"""Smoke check of the cascade benchmark (``python -m bench.cascade --viewers 1,2 --window 2``):
real Redis, two nodes, the publisher process, light viewers through each node. It asserts that
the harness reports every row with figures and that every viewer received video — never a
timing or a CPU figure (the cores are shared; figures belong in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def test_cascade_bench_reports_both_ways_of_serving(tmp_path: Path) -> None:
    out = tmp_path / "cascade.json"
    command = [sys.executable, "-m", "bench.cascade", "--viewers", "1,2", "--window", "2"]
    proc = subprocess.run(
        [*command, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=280
    )
    assert out.exists(), f"no JSON written\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["viewers"], r["served by"]) for r in rows] == [
        (0, "nobody"),
        (1, "Seoul (cascade)"),
        (2, "Seoul (cascade)"),
        (1, "owner"),
        (2, "owner"),
    ]
    assert all(r["owner CPU %"] > 0 for r in rows)
    assert all(r["viewer frames/s min"] > 0 for r in rows[1:])
    assert "| viewers | served by |" in proc.stdout
