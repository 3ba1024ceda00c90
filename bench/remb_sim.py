"""aiortc's receive-side estimator (``aiortc.rate.RemoteBitrateEstimator``, what the relay's
publisher receivers answer with REMB) against a capped link, in simulated time: no CPU noise.

    python -m bench.remb_sim [--floor 150 600] [--json out.json]

A publisher sends 30 fps video at the rate the estimate allows (never below ``floor`` kbit/s,
like Chrome under ``x-google-min-bitrate``; never above 2.5 Mbit/s), its packets paced at 2.5×
the rate (Chrome's pacer); a link of the phase's capacity (token bucket, drop-tail queue of
250 ms, 20 ms one way) carries them to the estimator, which is fed the real abs-send-time and
arrival times. Phases as in ``bench.uplink``: 20 s uncapped, 30 s at 1.2 Mbit/s, 30 s at
600 kbit/s, 30 s uncapped. Printed per phase: the time until the estimate settles (stays within
15 % of the phase's last 10 s), the steady estimate, packets dropped and the longest queue delay.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from aiortc.rate import RemoteBitrateEstimator

from bench.uplink import PHASES
from client.uplink import LevelChooser

UNCAPPED_BPS = 100_000_000
CEILING_BPS = 2_500_000
START_BPS = 1_500_000
FPS = 30
PACKET_BYTES = 1200
PACING = 2.5
QUEUE_S = 0.25
ONE_WAY_S = 0.02
SSRC = 1234


@dataclass
class Trace:
    floor_kbps: int
    seconds: list[dict[str, float]] = field(default_factory=list)


def simulate(floor_kbps: int) -> Trace:
    """One publisher through the phases; one row per second."""
    estimator = RemoteBitrateEstimator()
    rate = float(START_BPS)
    link_free_at = 0.0
    trace = Trace(floor_kbps)
    now = 0.0
    for _, duration, cap in PHASES:
        capacity = cap or UNCAPPED_BPS
        end = now + duration
        while now < end:
            second = {"t": round(now + 1, 1), "sent": 0.0, "delivered": 0.0, "dropped": 0.0}
            second |= {"queue_ms": 0.0}
            for frame in range(FPS):
                frame_at = now + frame / FPS
                size = rate / 8 / FPS
                packets = max(1, round(size / PACKET_BYTES))
                for n in range(packets):
                    sent_at = frame_at + n * PACKET_BYTES * 8 / (PACING * rate)
                    bytes_ = size / packets
                    second["sent"] += bytes_ * 8 / 1000
                    leaves = max(sent_at, link_free_at) + bytes_ * 8 / capacity
                    if leaves - sent_at > QUEUE_S:
                        second["dropped"] += 1
                        continue
                    link_free_at = leaves
                    second["delivered"] += bytes_ * 8 / 1000
                    second["queue_ms"] = max(second["queue_ms"], (leaves - sent_at) * 1000)
                    remb = estimator.add(
                        arrival_time_ms=int((leaves + ONE_WAY_S) * 1000),
                        abs_send_time=int(sent_at * (1 << 18)) & 0xFFFFFF,
                        payload_size=int(bytes_),
                        ssrc=SSRC,
                    )
                    if remb is not None:
                        rate = float(min(max(remb[0], floor_kbps * 1000), CEILING_BPS))
            now += 1.0
            second["estimate"] = rate / 1000
            trace.seconds.append(second)
    return trace


def phase_rows(trace: Trace) -> list[dict[str, object]]:
    """Per phase; ``level``: what client/uplink.py (and web/js/uplink.js) would send."""
    chooser = LevelChooser()
    for s in trace.seconds:
        s["level"] = chooser.update(s["estimate"], s["t"]).height
    rows, begin = [], 0.0
    for name, duration, _ in PHASES:
        inside = [s for s in trace.seconds if begin < s["t"] <= begin + duration]
        steady = statistics.median(s["estimate"] for s in inside[-10:])
        unsettled = [s["t"] for s in inside if abs(s["estimate"] - steady) > 0.15 * steady]
        level = inside[-1]["level"]
        level_moved = [s["t"] for s in inside if s["level"] != level]
        rows.append(
            {
                "phase": name,
                "settle_s": round(max(unsettled) - begin) if unsettled else 0,
                "level": f"{level:.0f}p",
                "level_s": round(max(level_moved) - begin) if level_moved else 0,
                "estimate_kbps": round(steady),
                "delivered_kbps": round(statistics.median(s["delivered"] for s in inside[-10:])),
                "dropped": int(sum(s["dropped"] for s in inside)),
                "queue_ms": round(max(s["queue_ms"] for s in inside)),
            }
        )
        begin += duration
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor", type=int, nargs="+", default=[600, 150])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(
        "| floor (kbit/s) | phase | estimate settles (s) | steady estimate (kbit/s) "
        "| delivered (kbit/s) | packets dropped | max queue (ms) | level | level settles (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    traces = []
    for floor in args.floor:
        trace = simulate(floor)
        traces.append(vars(trace))
        for r in phase_rows(trace):
            print(
                f"| {floor} | {r['phase']} | {r['settle_s']} | {r['estimate_kbps']} "
                f"| {r['delivered_kbps']} | {r['dropped']} | {r['queue_ms']} "
                f"| {r['level']} | {r['level_s']} |"
            )
    if args.json:
        args.json.write_text(json.dumps(traces, indent=1))


if __name__ == "__main__":
    main()
