"""The endurance benchmarks' stack: the server under test with a task counter beside it, and
the stamped publisher (``start_stack``); samples of the server (RSS, threads, asyncio tasks);
a ``bench.loadgen.LoadGen`` in the benchmark's own process (``in_process_loadgen``).

Task counts: the server is started through ``python -m bench.endurance_stack FILE serve …``,
which runs ``python -m signaling`` unchanged in-process with one daemon thread that writes the
live task count (``asyncio.tasks._all_tasks``) and Python thread names to FILE every 2 s.
Nothing in the server changes; the counter thread adds 1 to the server's /proc thread count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .common import LOOPBACK, loopback_only, proc_sample, shared_token_env
from .fanout import PYTHON, Child, Consultation, Processes, free_port, pinned, wait_port

TASKS_EVERY_S = 2.0


def serve_with_task_counter(out: str, argv: list[str]) -> None:
    """``python -m signaling ARGV`` in this process; a daemon thread records the live task count."""

    def count() -> None:
        from asyncio import tasks

        while True:
            with contextlib.suppress(RuntimeError):  # set changed size during iteration
                live = sum(1 for t in list(tasks._all_tasks) if not t.done())  # type: ignore[attr-defined]
                names = sorted(t.name for t in threading.enumerate())
                tmp = f"{out}.tmp"
                Path(tmp).write_text(
                    json.dumps({"t": time.time(), "tasks": live, "threads": names})
                )
                os.replace(tmp, out)
            time.sleep(TASKS_EVERY_S)

    threading.Thread(target=count, name="bench task counter", daemon=True).start()
    sys.argv = ["signaling", *argv]
    runpy.run_module("signaling", run_name="__main__", alter_sys=True)


def read_counter(path: Path) -> dict[str, Any]:
    """The task counter's last line: {"t", "tasks", "threads": Python thread names}."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return {}


def read_tasks(path: Path) -> int | None:
    return read_counter(path).get("tasks")


def thread_names(tasks_file: Path) -> dict[str, int]:
    """Python thread names of the server (digits dropped) → count."""
    names: dict[str, int] = {}
    for name in read_counter(tasks_file).get("threads", []):
        key = "".join(c for c in name if not c.isdigit())
        names[key] = names.get(key, 0) + 1
    return dict(sorted(names.items()))


def server_sample(server: Child, tasks_file: Path) -> dict[str, Any]:
    s = proc_sample(server.pid) or {}
    return {
        "t": s.get("t", time.time()),
        "rss_mb": round(s.get("rss_mb", float("nan")), 1),
        "threads": s.get("threads"),
        "tasks": read_tasks(tasks_file),
        "cpu_s": s.get("cpu_s"),
    }


async def start_stack(
    cfg: argparse.Namespace, procs: Processes, work: Path, consult: Consultation, viewers: int
) -> tuple[Child, Child, str, str, Path]:
    """Server + publisher; returns (server, publisher, base URL, publisher control URL, tasks)."""
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    tasks_file = procs.logs / "server.tasks"
    env = {
        "ENDOLINK_ICE_HOST_ADDRESSES": LOOPBACK,
        "ENDOLINK_RELAY_MODE": "forward",
        **shared_token_env(viewers + 10),
        "ENDOLINK_HOST": LOOPBACK,
        "PYTHONUNBUFFERED": "1",
    }
    serve = [PYTHON, "-m", "bench.endurance_stack", str(tasks_file), "serve"]
    serve += ["--data-dir", str(work / "data"), "--port", str(port)]
    server = await procs.start("server", pinned(cfg.server_cpu, serve), env, stdout=False)
    pub = [PYTHON, "-m", "bench.publisher", "--whip", f"{base}/whip/{consult.id}"]
    pub += ["--token", consult.clinic, "--codec", cfg.codec, "--bitrate", str(cfg.bitrate)]
    publisher = await procs.start("publisher", pinned(cfg.publisher_cpu, pub, boost=5))
    await wait_port(port, server, 30)
    ready = await publisher.read_event(60)
    return server, publisher, base, ready["control"], tasks_file


def in_process_loadgen(cfg: argparse.Namespace, whep: str, token: str, control: str) -> Any:
    """A ``bench.loadgen.LoadGen`` in this process (for its ``connect``/``close_viewer``)."""
    from .loadgen import LoadGen

    loopback_only()
    return LoadGen(
        argparse.Namespace(
            whep=whep, token=token, publisher=control, codec=cfg.codec, name="endurance",
            width=1280, height=720, probes=0, light=0, sinks=0, direct=False,
        )
    )  # fmt: skip


if __name__ == "__main__":
    serve_with_task_counter(sys.argv[1], sys.argv[2:])
