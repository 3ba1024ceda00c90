"""How long after a server outage the clinic's picture is back (``endolink publish`` recovery).

    python -m bench.outage [--outage 60] [--runs 1] [--json out.json]

A real ``endolink serve`` (own data dir, 127.0.0.1) and a real ``endolink publish testpattern``
run as processes; an aiortc viewer checks the stamped frames. The server is SIGKILLed, stays down
``--outage`` seconds, and is started again on the same port and data directory. Measured from the
moment the new server answers (its "EndoLink server:" line) to the first *new* stamped frame at a
fresh viewer: that is what a surgeon opening the page then would wait. The test
``tests/signaling/test_publish_recovery.py`` runs the same scenario with a 3 s outage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from signaling.auth.grants import Role
from tests.peers import viewer, wait_until
from tests.processes import Process, Server, clean_env, consultation_on_disk, publish_command

FIRST_FRAME_S = 30.0
RECOVERY_LIMIT_S = 30.0
"How long a run waits for the picture after the restart before it counts as not recovered."


@dataclass
class Recovery:
    outage_s: float
    recovered_s: float | None
    "From the new server answering to the first new frame at a fresh viewer (None: never)."
    publisher_says: list[str]
    "What ``endolink publish`` printed (its plain state lines)."


async def newest_counter(
    url: str, token: str, after: int, limit: float
) -> tuple[int, float] | None:
    """A fresh viewer's first stamped frame newer than ``after``: (counter, monotonic time)."""
    async with viewer(url, token, kinds=("video",)) as (_, _, received):

        def new_frames() -> list[int]:
            return [c for c in received.counters if c > after]

        if not await wait_until(lambda: bool(new_frames()), limit):
            return None
        return new_frames()[0], time.monotonic()


async def measure(outage_s: float, work: Path) -> Recovery:
    """One outage: publish, kill the server, wait ``outage_s``, restart, time the picture."""
    data, log = work / "data", work / "processes.log"
    cid, token = await consultation_on_disk(data, "outage")
    clinic, observer = token(Role.CLINIC), token(Role.OBSERVER)

    started: list[Process] = []
    try:
        server = Server(data, log)
        started.append(server)
        await asyncio.to_thread(server.wait_ready)
        whip, whep = f"{server.url}/whip/{cid}", f"{server.url}/whep/{cid}"
        publisher = Process(publish_command(whip, clinic), log, clean_env())
        started.append(publisher)
        await asyncio.to_thread(publisher.wait_for, "publishing", FIRST_FRAME_S)
        before = await newest_counter(whep, observer, -1, FIRST_FRAME_S)
        if before is None:
            raise RuntimeError(f"no picture before the outage; see {log}")

        server.kill()
        await asyncio.sleep(outage_s)
        restarted = Server(data, log, port=server.port)
        started.append(restarted)
        await asyncio.to_thread(restarted.wait_ready)
        answered = time.monotonic()
        after = await newest_counter(whep, observer, before[0], RECOVERY_LIMIT_S)
        recovered = None if after is None else round(after[1] - answered, 2)
        return Recovery(outage_s, recovered, publisher.output())
    finally:
        for process in reversed(started):
            process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the server is down")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as work:
            result = asyncio.run(measure(args.outage, Path(work)))
        results.append(asdict(result))
        print(
            f"run {run + 1}: outage {args.outage:g} s → picture back {result.recovered_s} s "
            "after the server answered",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
