"""Smoke check of the cluster benchmark (``python -m bench.cluster --nodes 2 --consultations 4
--seconds 5 --failover 1``): a real Redis, PostgreSQL, two nodes, publishers and viewers entering
through node 0, then the busier node SIGKILLed. It asserts that the harness works and reports
what it should — every consultation placed and hosted, frames at every viewer, the failover's
clinic publishing again and a viewer's frame after it — and no timing (the cores are shared;
figures belong in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def test_two_nodes_place_serve_and_fail_over(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    command = [sys.executable, "-m", "bench.cluster", "--nodes", "2", "--consultations", "4"]
    proc = subprocess.run(
        [*command, "--seconds", "5", "--failover", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.exists(), f"no JSON written\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    nodes = result["nodes"]
    assert sorted(nodes) == ["node0", "node1"]
    assert [n["placed"] for n in nodes.values()] == [2, 2]  # placement spreads them
    assert sum(n["consultations"] for n in nodes.values()) == 4
    assert all(n["cpu_percent"] > 0 for n in nodes.values())
    assert result["viewers"]["count"] == 8 and result["viewers"]["fps_min"] > 0
    (failover,) = result["failover"]
    assert 0 < failover["republished_s"] <= failover["first_frame_s"] < 60
    assert "reconnected after" in failover["clinic_said"]
    assert "failover" in result["table"] and "failover" in proc.stdout
