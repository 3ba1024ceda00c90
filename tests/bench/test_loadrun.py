"""Smoke check of the load run itself (``python -m bench.loadrun --minutes 0.5
--consultations 3``): real server, publisher, load generator processes and pages, /metrics
scraped along the way. It asserts that the harness works and reports what it should — no
error, every session connected, frames at every viewer, samples with the process figures — and
never a timing (the cores are shared; figures belong in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def test_short_load_run_has_no_error_and_samples_the_server(tmp_path: Path) -> None:
    out = tmp_path / "loadrun.json"
    command = [sys.executable, "-m", "bench.loadrun", "--minutes", "0.5", "--consultations", "3"]
    proc = subprocess.run(
        [*command, "--every", "5", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.exists(), f"no JSON written\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    result = json.loads(out.read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    errors = result["errors"]
    assert errors["sessions_at_end"] == {"publisher:connected": 3, "viewer:connected": 6}
    assert not errors["http_non_2xx"] and not errors["websocket_drops"]
    assert errors["viewers_receiving_at_start"] == 6 and result["viewers"] == 6
    assert result["viewer_fps_min_median"][0] > 0
    assert result["recordings_open_at_end"] == 3
    assert len(result["samples"]) >= 4
    for sample in result["samples"]:
        assert sample["rss_bytes"] > 0 and sample["fds"] > 0 and sample["tasks"] > 0
    assert "| metric | value |" in result["table"] and "| metric | value |" in proc.stdout
