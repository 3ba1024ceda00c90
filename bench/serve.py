"""``python -m bench.serve --recovery legacy -- serve ARGS``: ``endolink`` with the relay's loss
recovery chosen for a benchmark run (``relay.recovery.use``), so ``bench.impairment`` can measure
the old behaviour and the new one in the same run. Not a setting: production always runs tuned."""

from __future__ import annotations

import argparse

from relay import recovery
from signaling.cli import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("--recovery", choices=recovery.PROFILES, default="tuned")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    recovery.use(args.recovery)
    raise SystemExit(main(args.rest[1:] if args.rest[:1] == ["--"] else args.rest))
