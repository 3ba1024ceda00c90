"""``python -m bench.guards``: a short real run (a server, Debian's Chromium clinic and surgeon
pages) per mode. Timings are never asserted (the cores are shared; figures belong in
docs/benchmarks.md): the clinic must have sent L1T3 only when the layers were not refused, and
the guards' decoder must have left frames undecoded only then (and not run with the guards
off)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def test_a_short_run_compares_a_layered_clinic_with_a_plain_one_and_no_guards(
    tmp_path: Path,
) -> None:
    out = tmp_path / "guards.json"
    command = [sys.executable, "-m", "bench.guards", "--rounds", "1", "--warmup", "6"]
    proc = subprocess.run(
        [*command, "--seconds", "4", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {row["mode"]: row for row in json.loads(out.read_text())}
    assert rows["layers"]["sent"] == "L1T3" == rows["off"]["sent"] != rows["plain"]["sent"]
    assert rows["layers"]["not_decoded_pct"] > 0 and rows["plain"]["not_decoded_pct"] == 0
    assert rows["off"]["not_decoded_pct"] is None, "no decoder without the guards"
    assert all(row["cpu_pct"] > 0 and row["fps"] > 0 for row in rows.values())
    assert "frames the guards left undecoded" in proc.stdout
