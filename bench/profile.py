"""Summarise a py-spy ``--format raw`` profile of the server (``python -m bench.fanout --profile
py-spy`` writes one per forward scenario) into where the per-packet time goes.

    python -m bench.profile logs/forward_N100/server.pyspy.txt [--top 25]

Prints the share of the sampled time (inclusive) of the stages of the forwarding path —
packetizing, RTP serialisation, SRTP, the socket send, RTCP handling, the receive side — and the
functions with the most self time.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

STAGES: list[tuple[str, re.Pattern[str]]] = [
    # (stage, regexp on "function (file:line)" frames); first match per stack frame counts
    ("sender loop (OutboundRtp._run or aiortc's _run_rtp, all of it)",
     re.compile(r"^(OutboundRtp\._run|RTCRtpSender\._run_rtp) ")),
    ("  packetizing (encoder.pack / _packetize)", re.compile(r"^\S*\.(pack|_packetize\w*) ")),
    ("  RTP header serialise", re.compile(r"^(RtpPacket\.serialize|OutboundRtp\._packets) ")),
    ("  SRTP protect (pylibsrtp)", re.compile(r"^Session\.(protect|protect_rtcp|__process) ")),
    ("  socket send (transport.sendto)", re.compile(r"sendto \(")),
    ("RTCP handling (sender + receiver)", re.compile(r"_handle_rtcp_packet |_handle_rtcp_data ")),
    ("RTCP sending (reports, REMB, NACK, PLI)", re.compile(r"_send_rtcp|_run_rtcp ")),
    ("receive from publisher (_handle_rtp_data)", re.compile(r"_handle_rtp_data ")),
    ("relay fan-out (Producer/Consumer)", re.compile(r"^(Producer|Consumer)\.")),
    ("ICE/STUN (aioice)", re.compile(r"\(aioice/")),
    ("HTTP/signalling (aiohttp)", re.compile(r"\(aiohttp/")),
]  # fmt: skip
IDLE_LEAVES = ("Condition.wait", "Thread._wait_for_tstate_lock", "_worker (futures/thread.py")
LEAF_STAGES: list[tuple[str, re.Pattern[str]]] = [
    ("event loop itself (self time of select, _run_once, Handle._run)",
     re.compile(r"^(EpollSelector\.select|BaseEventLoop\._run_once|Handle\._run) ")),
]  # fmt: skip


def summarise(path: Path, top: int = 25) -> str:
    total = 0
    idle = 0
    stage_time: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        leaf = frames[-1]
        if leaf.startswith(IDLE_LEAVES):
            idle += n  # py-spy samples idle threads too (decoder threads, executor)
            continue
        # what runs inside one event-loop callback: the frames below the last Handle._run
        # (everything above it — run_app, run_forever — is an ancestor of every sample)
        runs = [i for i, f in enumerate(frames) if f.startswith("Handle._run ")]
        task = frames[runs[-1] + 1 :] if runs else frames
        total += n
        self_time[re.sub(r":\d+\)$", ")", leaf)] += n
        for stage, pattern in STAGES:
            if any(pattern.search(f) for f in task):
                stage_time[stage] += n
        for stage, pattern in LEAF_STAGES:
            if pattern.search(leaf):
                stage_time[stage] += n
    if not total:
        return f"{path}: no samples"
    lines = [f"{path}: {total} busy samples (+{idle} idle-thread samples left out)", ""]
    lines.append("| stage | share of busy samples (inclusive) |")
    lines.append("|---|---|")
    for stage, _ in [*STAGES, *LEAF_STAGES]:
        lines.append(f"| {stage} | {100 * stage_time[stage] / total:.1f} % |")
    lines += ["", "| function (self time) | share |", "|---|---|"]
    for name, n in self_time.most_common(top):
        lines.append(f"| `{name}` | {100 * n / total:.1f} % |")
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``func (/long/path/site-packages/aiortc/x.py:12)`` → ``func (aiortc/x.py:12)``."""
    return _PATH.sub(r"(\1)", frame)


_PATH = re.compile(r"\((?:[^()]*/)?([^()/]+/[^()/]+:\d+)\)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print(summarise(args.profile, args.top))


if __name__ == "__main__":
    main()
