"""``python -m bench.serve --recovery legacy -- serve ARGS``: ``endolink`` with the relay's loss
recovery chosen for a benchmark run (``relay.recovery.use``), so ``bench.impairment`` can measure
the old behaviour and the new one in the same run. Not a setting: production always runs tuned.

``--thread-names PATH``: the server keeps PATH holding ``{native thread id: Python thread name}``
of its threads (rewritten every 0.5 s), so a harness can read each named thread's CPU time from
``/proc/PID/task/TID/stat`` (Python 3.11 does not give the kernel its threads' names).
``--profile-threads PREFIX DIR``: every thread whose name starts with PREFIX runs under cProfile
(a profiler sees its own thread only; timed in thread CPU time), its stats written to DIR when it
ends: where a rendition worker's time goes (decode, scale, encode), measured in the real server.
``--vp8-speed N``: the rungs' libvpx ``cpu-used`` (``relay.rendition.RUNG_VP8_SPEED``) for a run
that weighs encoder speed against picture quality.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import re
import threading
import time
from pathlib import Path

from relay import recovery, rendition
from signaling.cli import main

THREAD_NAMES_EVERY_S = 0.5


def write_thread_names(path: Path) -> None:
    """A daemon thread that keeps ``path`` up to date (written whole, then renamed)."""

    def run() -> None:
        partial = path.with_suffix(".partial")
        while True:
            names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
            partial.write_text(json.dumps(names))
            partial.replace(path)
            time.sleep(THREAD_NAMES_EVERY_S)

    threading.Thread(target=run, name="bench thread names", daemon=True).start()


def profile_threads(prefix: str, out_dir: Path) -> None:
    """Each thread named ``prefix…`` runs under its own cProfile, dumped to ``out_dir`` at end."""
    run = threading.Thread.run

    def profiled(self: threading.Thread) -> None:
        if not self.name.startswith(prefix):
            return run(self)
        profiler = cProfile.Profile(time.thread_time)  # CPU time: waiting is not cost
        try:
            profiler.runcall(run, self)
        finally:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)
            profiler.dump_stats(out_dir / f"{safe}-{self.native_id}.prof")

    threading.Thread.run = profiled  # type: ignore[method-assign]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("--recovery", choices=recovery.PROFILES, default="tuned")
    parser.add_argument("--thread-names", type=Path)
    parser.add_argument("--profile-threads", nargs=2, metavar=("PREFIX", "DIR"))
    parser.add_argument("--vp8-speed", help="libvpx cpu-used of the rungs (an experiment)")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    recovery.use(args.recovery)
    if args.vp8_speed:
        rendition.RUNG_VP8_SPEED = args.vp8_speed
    if args.thread_names is not None:
        write_thread_names(args.thread_names)
    if args.profile_threads:
        profile_threads(args.profile_threads[0], Path(args.profile_threads[1]))
    raise SystemExit(main(args.rest[1:] if args.rest[:1] == ["--"] else args.rest))
