"""``python -m bench.serve --recovery legacy -- serve ARGS``: ``endolink`` with the relay's loss
recovery chosen for a benchmark run (``relay.recovery.use``), so ``bench.impairment`` can measure
the old behaviour and the new one in the same run. Not a setting: production always runs tuned.

``--thread-names PATH``: the server keeps PATH holding ``{native thread id: Python thread name}``
of its threads (rewritten every 0.5 s), so a harness can read each named thread's CPU time from
``/proc/PID/task/TID/stat`` (Python 3.11 does not give the kernel its threads' names).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from relay import recovery
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("--recovery", choices=recovery.PROFILES, default="tuned")
    parser.add_argument("--thread-names", type=Path)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    recovery.use(args.recovery)
    if args.thread_names is not None:
        write_thread_names(args.thread_names)
    raise SystemExit(main(args.rest[1:] if args.rest[:1] == ["--"] else args.rest))
