"""Smoke check of ``python -m bench.privacy`` (small sizes): it runs and prints every table. The
numbers themselves belong in docs/benchmarks.md, not in a test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


def test_the_privacy_bench_prints_rates_spans_and_cpu() -> None:
    command = [sys.executable, "-m", "bench.privacy", "--seeds", "1", "--scenes", "20"]
    result = subprocess.run(
        [*command, "--cpu-seconds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=150
    )
    assert result.returncode == 0, result.stderr
    for line in (
        "room ",
        "mucosa ",
        "spans at 2 Hz",
        "rooms ",
        "faces ",
        "720p30 vp8",
        "720p30 h264",
    ):
        assert line in result.stdout, result.stdout
