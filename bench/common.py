"""Helpers shared by the benchmark's processes (harness, publisher, load generator).

Every process speaks a tiny line protocol with the harness: it reads commands (one per line) on
stdin and writes one JSON object per line on stdout; logs go to stderr. A child whose stdin closes
(harness gone) exits by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import av
import numpy as np

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

LOOPBACK = "127.0.0.1"
STAMP_ROWS = 32
"""Rows left out of picture comparisons: the 20-row stamp and the macroblock row it spills into."""
FREEZE_MS = 200.0
LONG_FREEZE_MS = 500.0
CLOCK_MASK = (1 << 40) - 1
ORIGINAL = "?quality=original"
"""A WHEP URL's suffix for the benches that measure forwarding: their viewers get the clinic's
stream itself (bit-exact), never a rung the automatic quality may move a viewer of a loaded
machine to."""


def add_quality_argument(parser: argparse.ArgumentParser) -> None:
    """``--quality``: what the load benches' viewers ask for. ``original`` (the default) pins
    the clinic's stream (``ORIGINAL``); ``auto`` is what a browser asks by default, a Selector
    that may move a viewer to a rung of the ladder."""
    parser.add_argument(
        "--quality",
        choices=("original", "auto"),
        default="original",
        help="the viewers' ?quality= (auto: what browsers ask, through the Selector)",
    )


# -- process plumbing --------------------------------------------------------------------------


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout for the harness."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> AsyncIterator[str]:
    """Commands from the harness; ends when stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        text = line.decode().strip()
        if text:
            yield text


T = TypeVar("T")


def run_in_work_dir(prefix: str, keep: bool, run: Callable[[Path], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(run(work))`` in a new temporary directory (its path printed), removed
    afterwards unless ``keep`` (its logs)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    print(f"work dir {work}", flush=True)
    try:
        return asyncio.run(run(work))
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def loopback_only() -> None:
    """Gather ICE candidates on 127.0.0.1 only (aioice skips loopback by default)."""
    from relay.forwarding import use_host_addresses

    use_host_addresses((LOOPBACK,))


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> dict[str, float] | None:
    """CPU seconds (user+system) of all threads and of the main thread (a server's event loop),
    RSS in MB and thread count of ``pid``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/task/{pid}/stat") as f:
            main_stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except OSError:
        return None
    rss = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    threads = re.search(r"^Threads:\s+(\d+)", status, re.M)
    return {
        "t": time.time(),
        "cpu_s": _cpu_s(stat),
        "main_cpu_s": _cpu_s(main_stat),
        "rss_mb": int(rss.group(1)) / 1024 if rss else math.nan,
        "threads": int(threads.group(1)) if threads else 0,
    }


def _cpu_s(stat: str) -> float:
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def cpu_percent(before: dict[str, float] | None, after: dict[str, float] | None) -> float | None:
    """% of one core used between two ``proc_sample``s."""
    if not before or not after or after["t"] <= before["t"]:
        return None
    return 100.0 * (after["cpu_s"] - before["cpu_s"]) / (after["t"] - before["t"])


# -- media -------------------------------------------------------------------------------------


def frame_hash(data: bytes) -> int:
    """64-bit hash of one encoded frame (as the depayloader hands it out)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def annexb(nals: Iterable[bytes]) -> bytes:
    """H.264 NAL units with 4-byte start codes: the form aiortc's depayloader produces, so the
    publisher's encoder output and a viewer's received frame hash alike."""
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


def luma(frame: av.VideoFrame) -> np.ndarray:
    """The Y plane of a decoded frame as a (height, width) uint8 array view (no conversion)."""
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    return rows[: frame.height, : frame.width]


def read_stamp_luma(y: np.ndarray) -> tuple[int, int]:
    """``client.testpattern.read_stamp`` on a luma plane (same layout, no colour conversion)."""
    width = y.shape[1]
    block = width / 64
    row = int(block / 2)
    xs = ((np.arange(64) + 0.5) * block).astype(int)
    bits = y[row, xs] > 128
    value = int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")
    return value & ((1 << 24) - 1), value >> 24


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM of two luma planes (Wang et al. 2004: 11×11 Gaussian window, σ 1.5); with
    ``mask`` (bool, same shape), the mean over the pixels where it is True only."""
    import cv2

    x = a.astype(np.float32)
    y = b.astype(np.float32)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    index = num / den
    return float(index[mask].mean() if mask is not None else index.mean())


# -- statistics --------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float | None:
    if not len(values):
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), pct))


def gaps_ms(times: Sequence[float], start: float, end: float) -> list[float]:
    """Gaps between consecutive frame times inside [start, end], the window edges included (a
    stream that stopped before ``end`` shows one long final gap)."""
    inside = [t for t in times if start <= t <= end]
    edges = [start, *inside, end]
    return [(b - a) * 1000.0 for a, b in zip(edges, edges[1:], strict=False)]


def window_count(times: Sequence[float], start: float, end: float) -> int:
    return sum(1 for t in times if start <= t <= end)


# -- SDP ---------------------------------------------------------------------------------------

_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+) (\d+)( typ host.*)$", re.M | re.I)


def host_candidates(sdp: str) -> list[tuple[str, int]]:
    return [(m.group(2), int(m.group(3))) for m in _CANDIDATE.finditer(sdp)]


def rewrite_candidate_port(sdp: str, old: tuple[str, int], new: tuple[str, int]) -> str:
    """Point the host candidate ``old`` (address, port) at ``new`` instead."""

    def sub(m: re.Match[str]) -> str:
        if (m.group(2), int(m.group(3))) == old:
            return f"{m.group(1)}{new[0]} {new[1]}{m.group(4)}"
        return m.group(0)

    return _CANDIDATE.sub(sub, sdp)


async def post_sdp(
    url: str, token: str | None, offer: str, timeout_s: float = 20.0
) -> tuple[str, str | None]:
    """WHIP/WHEP POST: offer → (answer, absolute Location)."""
    from urllib.parse import urljoin

    import aiohttp

    from client.whip import post_offer

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
        answer = await post_offer(http, url, offer, headers)  # a cluster's 307 followed
    if answer.status != 201:
        raise RuntimeError(f"POST {answer.url}: HTTP {answer.status}: {answer.body[:200]}")
    location = answer.headers.get("Location")
    return answer.body, urljoin(answer.url, location) if location else None


async def delete_session(location: str | None, token: str | None, timeout_s: float = 5.0) -> None:
    if not location:
        return
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
            async with http.delete(location, headers=headers):
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


# -- viewers (bench.loadgen) -------------------------------------------------------------------


class SteadyRemb:
    """Stand-in for aiortc's receive-side bandwidth estimator in LIGHT viewers: one REMB per
    second announcing ``bitrate``, like a browser on a clean link (Chrome rate-limits its REMB).

    aiortc's own estimator costs ~10 % of a light viewer's CPU and, once its process falls
    behind, sends a REMB on every packet (OVERUSING), flooding the server with RTCP that no
    browser would send. Probes keep aiortc's estimator.
    """

    def __init__(self, bitrate: int = 2_000_000, interval_ms: int = 1000) -> None:
        self.bitrate = bitrate
        self.interval_ms = interval_ms
        self.last_ms: int | None = None

    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> tuple[int, list[int]] | None:
        if self.last_ms is None or arrival_time_ms - self.last_ms >= self.interval_ms:
            self.last_ms = arrival_time_ms
            return self.bitrate, [ssrc]
        return None


def udp_drops() -> dict[int, int]:
    """Local UDP port → datagrams the kernel dropped because that socket's buffer was full."""
    drops: dict[int, int] = {}
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            port = int(fields[1].split(":")[1], 16)
            drops[port] = drops.get(port, 0) + int(fields[-1])
    return drops


def stun_protocols(pc: RTCPeerConnection) -> list[Any]:
    """The aioice datagram protocols under a peer connection's ICE (aioice internals)."""
    found: list[Any] = []
    for transceiver in pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        for protocol in ice._connection._protocols:
            if protocol not in found:
                found.append(protocol)
    return found


def shared_token_env(sessions: int) -> dict[str, str]:
    """Server settings for a benchmark whose viewers all use one link: that link may hold
    ``sessions`` sessions, all connecting at once (the session limits guard against a person
    locking a consultation, and the offer rate limits against a flood, not against a load
    generator)."""
    return {
        "ENDOLINK_MAX_VIEWERS": str(sessions),
        "ENDOLINK_MAX_SESSIONS_PER_IDENTITY": str(sessions),
        "ENDOLINK_MAX_PENDING_PER_IDENTITY": str(sessions),
        # Offers per link and per address: every session of the run comes from one address.
        "ENDOLINK_SESSION_LIMIT_PER_IDENTITY": f"{sessions},0.01",
        "ENDOLINK_SESSION_LIMIT_PER_ADDRESS": f"{sessions},0.01",
    }


def stop_by_pid(process: subprocess.Popen[Any], sig: int, timeout_s: float) -> None:
    """Ask ``process`` to end (``sig``, by its pid), SIGKILL if it has not within
    ``timeout_s``; returns once it is gone. Nothing to do for one that has ended."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout_s)


def free_port() -> int:
    """A TCP port nobody listens on now on the loopback (a server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


NAMED_LINKS = (
    *("--clinic-name", "Clinic"),
    *("--surgeon-name", "Surgeon"),
    *("--observer-name", "Observer"),
)
"""``consult create`` arguments naming each link after its role: pages opened by a bench (or a
test) then never stop to ask for a name, and show what they showed before names existed."""
