"""``endolink publish`` comes back by itself after the server was killed and restarted on the same
port and data directory: new stamped frames reach a fresh viewer within 5 s of the server
answering (the 60 s outage is ``python -m bench.outage``, figures in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.outage import measure

pytestmark = pytest.mark.timeout(120)

OUTAGE_S = 3.0
RECOVERY_S = 5.0


async def test_publishing_resumes_within_seconds_of_a_restarted_server(tmp_path: Path) -> None:
    result = await measure(OUTAGE_S, tmp_path)
    print(f"outage {OUTAGE_S} s: picture back {result.recovered_s} s after the server answered")
    assert result.recovered_s is not None, (tmp_path / "processes.log").read_text()[-3000:]
    assert result.recovered_s <= RECOVERY_S
    said = "\n".join(result.publisher_says)
    assert "connection lost — reconnecting" in said
    assert "reconnected after" in said
    assert "token" not in said.lower() and "Bearer" not in said
