"""SDP and trickle fuzzing against a real ``endolink serve``: mutated browser offers to WHIP and
WHEP, odd sdpfrag bodies to PATCH — every answer 2xx/4xx, no error or traceback in the server's
log. A short, derandomized run; ``python -m bench.fuzz_sdp --examples N`` runs longer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.fuzz_sdp import Target, fuzz, server_errors
from tests.processes import Process, Server, consultation_on_disk

EXAMPLES = 150


def test_mutated_offers_and_trickle_bodies_never_get_a_5xx(
    tmp_path: Path, processes: list[Process]
) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    cid, token = asyncio.run(consultation_on_disk(data_dir, "fuzz"))
    server = Server(data_dir, log)
    processes.append(server)
    server.wait_ready()
    target = Target(server.url, cid, token)
    try:
        fuzz(target, EXAMPLES)
    finally:
        target.close()
        server.stop()
    outcomes = target.outcomes
    assert sum(n for (e, _), n in outcomes.items() if e == "whip") == EXAMPLES
    assert all(status < 500 for _, status in outcomes)
    assert outcomes[("whip", 400)] and outcomes[("whep", 201)]  # both refused and accepted
    assert server_errors(log) == []
