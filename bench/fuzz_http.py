"""A longer property-based run over the HTTP API (tests/fuzzing.py) and the WebSocket
(tests/ws_fuzzing.py) against ``endolink serve`` in its own process on 127.0.0.1, with its own
data directory, stopped by pid. Prints a table of outcomes by status and close code, and every
problem found (a 5xx, an undocumented status, a refusal without the error shape).

    python -m bench.fuzz_http --examples 3000 [--ws-examples 500] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from bench.common import LOOPBACK
from bench.serverproc import ServerProcess, endolink
from tests import fuzzing, ws_fuzzing


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="endolink-fuzz-") as tmp:
        data, port = Path(tmp) / "data", _free_port()
        server = ServerProcess(data, port, Path(tmp) / "server.log")
        endolink(data, port, "token", "--role", "admin")  # makes the secret before the server
        server.start()
        try:
            await server.wait_accepting()
            admin = endolink(data, port, "token", "--role", "admin").strip()
            async with aiohttp.ClientSession() as session:
                made = await session.post(
                    f"{server.base_url}/api/consultations",
                    json={"title": "fuzz", "consent_by": "bench"},
                    headers={"Authorization": f"Bearer {admin}"},
                )
                cid = (await made.json())["id"]
                other = await session.post(
                    f"{server.base_url}/api/consultations",
                    json={"title": "bystander", "consent_by": "bench"},
                    headers={"Authorization": f"Bearer {admin}"},
                )
                other_cid = (await other.json())["id"]
                other_token = endolink(
                    data, port, "token", "--consultation", other_cid, "--role", "surgeon"
                ).strip()
                tokens = {"admin": admin}
                for role in ("clinic", "surgeon", "observer"):
                    out = endolink(data, port, "token", "--consultation", cid, "--role", role)
                    tokens[role] = out.strip()
                target = fuzzing.Target(server.base_url, cid, tokens)
                loop = asyncio.get_running_loop()
                started = time.monotonic()
                http = await asyncio.to_thread(
                    fuzzing.run, loop, session, target, args.examples, False
                )
                http_s = time.monotonic() - started
                started = time.monotonic()
                ws = await asyncio.to_thread(
                    ws_fuzzing.run,
                    loop,
                    session,
                    target,
                    args.ws_examples,
                    (other_cid, other_token),
                    False,
                )
                ws_s = time.monotonic() - started
        finally:
            server.stop()
        log = (Path(tmp) / "server.log").read_text(errors="replace")
    _table("HTTP status", http.outcomes, http_s)
    _table("WebSocket outcome", ws.outcomes, ws_s)
    tracebacks = log.count("Traceback")
    errors = sum(1 for line in log.splitlines() if " ERROR " in line)
    print(f"server log: {errors} ERROR lines, {tracebacks} tracebacks")
    for problem in (http.problems[-1:] + ws.problems[-1:]) if args.short else []:
        print("PROBLEM (shrunk):", problem)
    if not args.short:
        for problem in http.problems + ws.problems:
            print("PROBLEM:", problem)
    summary = {"http": dict(http.outcomes), "ws": dict(ws.outcomes), "errors": errors}
    print(json.dumps(summary, sort_keys=True))
    return 1 if http.problems or ws.problems or errors or tracebacks else 0


def _table(title: str, outcomes: Counter[str], seconds: float) -> None:
    total = sum(outcomes.values())
    print(f"\n{title:<24} {'count':>7}  ({total} in {seconds:.1f} s)")
    for key, count in sorted(outcomes.items()):
        print(f"{key:<24} {count:>7}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3000, help="HTTP requests")
    parser.add_argument("--ws-examples", type=int, default=500, help="WebSocket messages")
    parser.add_argument("--short", action="store_true", help="only the shrunk problems")
    sys.exit(asyncio.run(main(parser.parse_args())))
