"""``python -m bench.percore``: the costs it derives from its scenarios, and a short real run of
this tree beside a baseline revision (a git worktree of HEAD) with servers, a publisher and
viewers. Timings are never asserted (the cores are shared; figures belong in
docs/benchmarks.md): the run must finish with every session up and a table for both builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.percore import Measured, Scenario, derive, table

ROOT = Path(__file__).resolve().parents[2]


def row(scenario: str, cpu: float, loop: float = 0.0) -> Measured:
    return Measured("b", scenario, cpu, loop, threads=10, rss_mb=150.0, sessions_ok=True)


def test_scenarios_parse_and_costs_are_derived_from_the_first_one() -> None:
    scenarios = [Scenario.parse(s) for s in ("1x2", "1x6", "4x2")]
    assert scenarios == [Scenario(1, 2), Scenario(1, 6), Scenario(4, 2)]
    assert Scenario.parse("3") == Scenario(3, 2)
    rows = [row("1x2", 8.0, 5.0), row("1x6", 10.0, 6.2), row("4x2", 26.0, 17.0)]
    derived = derive([*rows, row("1x6", 12.0, 7.0), row("1x6", 9.0, 6.0)], scenarios)
    assert derived["per_consultation_pct"] == 8.0
    assert derived["extra_consultation_pct"] == 6.0  # (26 - 8) / 3
    assert derived["extra_viewer_pct"] == 0.5  # (10 - 8) / 4: the median of its three rounds
    assert derived["extra_viewer_loop_pct"] == pytest.approx(0.3)  # (6.2 - 5) / 4
    assert derived["consultations_per_core"] == pytest.approx(100 / 6)


def test_one_scenario_gives_the_cost_per_consultation_only() -> None:
    derived = derive([row("2x2", 10.0)], [Scenario(2, 2)])
    assert derived["per_consultation_pct"] == 5.0
    assert derived["extra_consultation_pct"] is None and derived["extra_viewer_pct"] is None
    assert derived["consultations_per_core"] == 20.0
    assert "| b | 5.00 % | — | — | — | 20.0 |" in table([row("2x2", 10.0)], {"b": derived})


@pytest.mark.timeout(300)
def test_a_short_run_measures_this_tree_beside_a_baseline(tmp_path: Path) -> None:
    out = tmp_path / "percore.json"
    command = [sys.executable, "-m", "bench.percore", "--baseline", "HEAD"]
    command += ["--scenarios", "1x1,2x1", "--warmup", "3", "--seconds", "3"]
    command += ["--width", "320", "--height", "240", "--fps", "15", "--bitrate", "300000"]
    command += ["--quality", "auto"]  # the viewers as a browser's: through the Selector
    proc = subprocess.run(
        [*command, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=280
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [(r["build"], r["scenario"]) for r in result["rows"]] == [
        ("baseline HEAD", "1x1"),
        ("this tree", "1x1"),
        ("baseline HEAD", "2x1"),
        ("this tree", "2x1"),
    ]
    assert all(r["sessions_ok"] and r["cpu_pct"] > 0 for r in result["rows"])
    assert set(result["derived"]) == {"baseline HEAD", "this tree"}
    assert result["quality"] == "auto"
    assert "consultations/core" in proc.stdout
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "endolink-percore-" not in worktrees.stdout, "the baseline checkout was not removed"
