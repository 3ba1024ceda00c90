"""Benchmark load generator: many WHEP viewers in one asyncio process.

* LIGHT viewers never decode: ``relay.forwarding.tap_receiver`` hands each completed encoded frame
  (released on its RTP marker bit) to a callback that only timestamps and hashes it.
* PROBE viewers also decode every frame (on the event loop, one thread, like a browser's decoder),
  read the stamp drawn into the picture (frame counter + sender wall-clock ms) and keep a few
  luma planes for SSIM.
* The DIRECT probe is a probe whose offer is answered by the publisher itself (no server).

    python -m bench.loadgen --whep URL --token T --publisher CONTROL_URL --light 8 --probes 2
                            [--impairment bursty10 --rtt-ms 150 --seed 1]

With an impairment, every viewer but the direct probe reaches the server through its own
``bench.udpproxy.ImpairmentProxy`` (seeded ``--seed`` + its index): the server→viewer hop.

stdout: ``{"event": "ready", ...}`` once every viewer has a frame; one JSON line per command.
stdin commands: ``join N GAP_S`` (late joins, measured and closed again), ``report T0 T1``
(statistics over that wall-clock window), ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import time
from array import array
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from client.testpattern import TestPatternTrack
from relay import recovery
from relay.codecs import is_keyframe, preferences
from relay.forwarding import send_pli, tap_receiver

from .common import (
    CLOCK_MASK,
    FREEZE_MS,
    STAMP_ROWS,
    SteadyRemb,
    delete_session,
    emit,
    frame_hash,
    gaps_ms,
    loopback_only,
    luma,
    post_sdp,
    proc_sample,
    read_stamp_luma,
    ssim,
    stdin_lines,
    stun_protocols,
    udp_drops,
)
from .udpproxy import ImpairmentProxy, add_impairment_args, impairment_from_args

logger = logging.getLogger("bench.loadgen")

SSIM_EVERY = 30
"""Probes keep the luma of every frame whose counter is a multiple of this (1 per second)."""
MAX_SSIM_SAMPLES = 40
MAX_PLAUSIBLE_AGE_MS = 60_000
CONNECT_CONCURRENCY = 6


class Viewer:
    def __init__(self, name: str, kind: str, codec: str) -> None:
        self.name = name
        self.kind = kind  # light | probe | direct | sink
        self.codec = codec
        self.pc: RTCPeerConnection | None = None
        self.location: str | None = None
        self.token: str | None = None
        self.arrivals = array("d")
        self.hashes = array("Q")
        self.discontinuities = 0
        self.discontinuity_at: list[float] = []
        self.answer_at: float | None = None
        self.error: str | None = None
        # probes only
        self.decoder: Any = None
        self.shown = array("d")
        self.latency_ms = array("d")
        self.counters = array("q")
        self.decode_errors = 0
        self.stamp_errors = 0
        self.skipped = 0
        self.synced = False
        self.tap: Any = None
        self.receiver: Any = None
        self.last_pli = 0.0
        self.since_keyframe = 0
        self.samples: dict[int, np.ndarray] = {}
        self.sunk = 0
        self.sunk_marks: list[int] = []
        self.sinking = False
        self.ports: list[int] = []
        self.proxy: ImpairmentProxy | None = None
        if kind in ("probe", "direct"):
            self.decoder = av.CodecContext.create("libvpx" if codec == "VP8" else "h264", "r")
            self.decoder.thread_count = 1

    def on_frame(self, data: bytes, timestamp: int, *_: object) -> None:
        if self.kind == "sink":
            self.arrivals.append(time.time())
            self._start_sinking()
            return
        # Like a browser: after a loss, show nothing until a keyframe (the receiver asked for
        # one): frames in between may reference lost data, or be the tail of a frame whose head
        # was given up. They are counted apart and excluded from fps and bit-exactness.
        keyframe = is_keyframe(self.codec, data)
        if not self.synced:
            if not keyframe:
                self.skipped += 1
                return
            self.synced = True
        self.since_keyframe = 0 if keyframe else self.since_keyframe + 1
        self.arrivals.append(time.time())
        self.hashes.append(frame_hash(data))
        if self.decoder is not None:
            self._decode(data)

    def _decode(self, data: bytes) -> None:
        try:
            frames = self.decoder.decode(av.Packet(data))
        except av.error.FFmpegError:
            self.decode_errors += 1
            return
        for frame in frames:
            y = luma(frame)
            counter, wall_ms = read_stamp_luma(y)
            now = time.time()
            now_ms = now * 1000
            age_ms = ((int(now_ms) - wall_ms) & CLOCK_MASK) + now_ms % 1
            if age_ms > MAX_PLAUSIBLE_AGE_MS:  # not a stamp this run drew: a damaged picture
                self.stamp_errors += 1
                if self.stamp_errors <= 3:
                    logger.warning(
                        "%s: implausible stamp (counter %d, age %.0f ms) in frame %d of %d bytes,"
                        " %d frames after the last keyframe, %d discontinuities so far",
                        self.name, counter, age_ms, len(self.arrivals), len(data),
                        self.since_keyframe, self.discontinuities,
                    )  # fmt: skip
                continue
            self.shown.append(now)
            self.latency_ms.append(age_ms)
            self.counters.append(counter)
            if counter % SSIM_EVERY == 0 and len(self.samples) < MAX_SSIM_SAMPLES:
                self.samples[counter] = y.copy()

    def _start_sinking(self) -> None:
        """From its first frame on, a SINK viewer drops media where the datagram arrives: the
        server still sends it every packet (it cannot tell), the client spends ~µs per packet
        instead of ~90 µs, and STUN still reaches ICE so consent keeps being answered."""
        if self.pc is None or self.sinking:
            return
        self.sinking = True
        for protocol in stun_protocols(self.pc):
            if protocol.transport is not None:
                self.ports.append(protocol.transport.get_extra_info("sockname")[1])
            deliver = protocol.datagram_received

            def sink(data: bytes, addr: Any, deliver: Any = deliver) -> None:
                # RFC 7983 demultiplexing: first byte 0–3 is STUN, 20–63 DTLS, 128–191 RTP/RTCP
                if data and data[0] > 3:
                    self.sunk += 1
                    return
                deliver(data, addr)

            protocol.datagram_received = sink

    def on_discontinuity(self) -> None:
        """The receiver lost data for good: like a browser, ask for a keyframe (at most every
        0.5 s) and, when decoding, show nothing until it arrives."""
        self.discontinuities += 1
        self.discontinuity_at.append(time.time())
        self.synced = False
        now = time.monotonic()
        if self.receiver is not None and now - self.last_pli >= 0.5:
            self.last_pli = now
            send_pli(self.receiver)

    @property
    def first_frame_at(self) -> float | None:
        return self.arrivals[0] if self.arrivals else None


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.viewers: list[Viewer] = []
        self.joins: list[dict[str, Any]] = []
        self.marks: list[float] = []

    async def connect(self, viewer: Viewer) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        viewer.pc = pc
        transceiver = pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences(preferences("video", self.args.codec))
        viewer.receiver = transceiver.receiver
        viewer.tap = tap_receiver(
            transceiver.receiver, "video", viewer.on_frame, viewer.on_discontinuity
        )
        if viewer.kind in ("light", "sink"):
            transceiver.receiver._RTCRtpReceiver__remote_bitrate_estimator = SteadyRemb()  # type: ignore[attr-defined]
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        if viewer.kind == "direct":
            url, token = f"{self.args.publisher}/direct", None
        else:
            url, token = self.args.whep, self.args.token
            impairment = impairment_from_args(self.args)
            if impairment.active:
                impairment.seed += len(self.viewers)  # each viewer its own loss pattern
                viewer.proxy = ImpairmentProxy(impairment)
                await viewer.proxy.start()
                offer = viewer.proxy.offer(offer)
        answer, viewer.location = await post_sdp(url, token, offer)
        if viewer.proxy is not None:
            answer = viewer.proxy.answer(answer)
            self._impair_when_connected(pc, viewer.proxy)
        viewer.token = token
        viewer.answer_at = time.time()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    @staticmethod
    def _impair_when_connected(pc: RTCPeerConnection, proxy: ImpairmentProxy) -> None:
        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                proxy.impair = True

    async def start(self) -> None:
        a = self.args
        plan = [("probe", a.probes), ("light", a.light), ("sink", a.sinks)]
        if a.direct:
            self.viewers.append(Viewer(f"{a.name}-direct", "direct", a.codec))
        for kind, count in plan:
            for i in range(count):
                self.viewers.append(Viewer(f"{a.name}-{kind}{i}", kind, a.codec))
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(viewer: Viewer) -> None:
            async with gate:
                try:
                    await self.connect(viewer)
                except Exception as exc:  # reported, the run goes on with the others
                    viewer.error = f"{type(exc).__name__}: {exc}"
                    logger.warning("%s failed to connect: %s", viewer.name, viewer.error)

        await asyncio.gather(*(one(v) for v in self.viewers))
        deadline = time.monotonic() + a.ready_timeout
        while time.monotonic() < deadline:
            if all(v.arrivals or v.error for v in self.viewers):
                break
            await asyncio.sleep(0.1)
        emit(
            {
                "event": "ready",
                "viewers": len(self.viewers),
                "receiving": sum(1 for v in self.viewers if v.arrivals),
                "errors": [v.error for v in self.viewers if v.error][:5],
            }
        )

    async def late_joins(self, count: int, gap_s: float) -> dict[str, Any]:
        """Viewers joining mid-stream: time from the WHEP answer to their first complete frame."""
        results = []
        for i in range(count):
            viewer = Viewer(f"{self.args.name}-late{len(self.joins) + i}", "light", self.args.codec)
            entry: dict[str, Any] = {"joined_at": time.time()}
            try:
                await self.connect(viewer)
                deadline = time.monotonic() + 5.0
                while not viewer.arrivals and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
                first = viewer.first_frame_at
                entry["answer_at"] = viewer.answer_at
                entry["first_frame_ms"] = (
                    (first - viewer.answer_at) * 1000 if first and viewer.answer_at else None
                )
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
            await self.close_viewer(viewer)
            results.append(entry)
            self.joins.append(entry)
            await asyncio.sleep(gap_s)
        return {"event": "joined", "joins": results}

    async def mark(self, which: str) -> dict[str, Any]:
        """Snapshot packet counters at the start (``mark start``) or end (``mark end``) of the
        window: datagrams that reached each sink's socket."""
        drops = udp_drops()
        for viewer in self.viewers:
            if viewer.kind == "sink":
                # what reached the socket = what the sink counted + what the kernel dropped
                # because this (starved) process read too slowly
                dropped = sum(drops.get(port, 0) for port in viewer.ports)
                viewer.sunk_marks.append(viewer.sunk + dropped)
        self.marks.append(time.time())
        return {"event": "marked", "which": which}

    async def close_viewer(self, viewer: Viewer) -> None:
        close_tap = getattr(viewer.tap, "close", None)
        if close_tap is not None:
            close_tap()
        await delete_session(viewer.location, viewer.token)
        if viewer.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(viewer.pc.close(), 5)
        if viewer.proxy is not None:
            viewer.proxy.close()

    async def report(self, t0: float, t1: float) -> dict[str, Any]:
        published = await self._published_frames()
        pattern: TestPatternTrack | None = None
        per_viewer = []
        direct = next((v for v in self.viewers if v.kind == "direct"), None)
        sinks = []
        if len(self.marks) >= 2 and self.marks[-1] > self.marks[0]:
            span = self.marks[-1] - self.marks[0]
            sinks = [
                (v.sunk_marks[-1] - v.sunk_marks[0]) / span
                for v in self.viewers
                if v.kind == "sink" and len(v.sunk_marks) >= 2
            ]
        for viewer in self.viewers:
            if viewer.kind == "sink":
                continue
            inside = [i for i, t in enumerate(viewer.arrivals) if t0 <= t <= t1]
            gaps = gaps_ms(viewer.arrivals, t0, t1)
            matched = sum(1 for i in inside if viewer.hashes[i] in published)
            stats: dict[str, Any] = {
                "name": viewer.name,
                "kind": viewer.kind,
                "error": viewer.error,
                "frames": len(inside),
                "fps": len(inside) / (t1 - t0),
                "freezes": sum(1 for g in gaps if g > 200),
                "freezes_500": sum(1 for g in gaps if g > 500),
                "longest_gap_ms": max(gaps) if gaps else None,
                "bit_exact": matched,
                "discontinuities": viewer.discontinuities,
                "proxy": viewer.proxy.stats() if viewer.proxy else None,
                "discontinuity_at": viewer.discontinuity_at,
                "recovery": _recovery_counts(viewer.tap),
                "not_shown_until_keyframe": viewer.skipped,
                "first_frame_ms": (
                    (viewer.first_frame_at - viewer.answer_at) * 1000
                    if viewer.first_frame_at and viewer.answer_at
                    else None
                ),
            }
            # Latency of every viewer, decoded or not: the hash names the frame, the publisher
            # logged the stamp it drew into it.
            stats["hash_latency_ms"] = [
                round(viewer.arrivals[i] * 1000 - published[viewer.hashes[i]], 2)
                for i in inside
                if viewer.hashes[i] in published
            ]
            if viewer.decoder is not None:
                shown = [i for i, t in enumerate(viewer.shown) if t0 <= t <= t1]
                counters = [viewer.counters[i] for i in shown]
                display_gaps = gaps_ms(viewer.shown, t0, t1)
                stats.update(
                    {
                        "decoded": len(shown),
                        "decode_errors": viewer.decode_errors,
                        "stamp_errors": viewer.stamp_errors,
                        "skipped_until_keyframe": viewer.skipped,
                        "latency_ms": [round(viewer.latency_ms[i], 2) for i in shown],
                        "stamp_order_errors": sum(
                            1 for a, b in zip(counters, counters[1:], strict=False) if b <= a
                        ),
                        "freezes": sum(1 for g in display_gaps if g > 200),
                        "freezes_500": sum(1 for g in display_gaps if g > 500),
                        "longest_gap_ms": max(display_gaps) if display_gaps else None,
                        "freeze_list": _freeze_list(viewer, shown, t0, t1),
                        "stamps_read": len(counters),
                    }
                )
                if pattern is None:
                    pattern = TestPatternTrack(self.args.width, self.args.height)
                stats["ssim_source"] = _ssim_vs_source(viewer, pattern)
                if direct is not None and viewer is not direct:
                    stats["ssim_direct"] = _ssim_vs_other(viewer, direct)
            per_viewer.append(stats)
        return {
            "event": "report",
            "viewers": per_viewer,
            "sink_packets_per_s": sinks,
            "sink_connected": sum(1 for v in self.viewers if v.kind == "sink" and v.arrivals),
            "published_frames": len(published),
            "process": proc_sample(os.getpid()),
        }

    async def _published_frames(self) -> dict[int, int]:
        """hash → stamp ms of every frame the publisher's encoder produced."""
        import aiohttp

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
                async with http.get(f"{self.args.publisher}/frames") as response:
                    body = await response.json()
        except (TimeoutError, aiohttp.ClientError) as exc:
            logger.warning("publisher frames unavailable: %s", exc)
            return {}
        return {entry[0]: entry[2] for entry in body["frames"]}

    async def close(self) -> None:
        await asyncio.gather(*(self.close_viewer(v) for v in self.viewers))


def _recovery_counts(tap: Any) -> dict[str, int] | None:
    recovery = getattr(tap, "recovery", None)
    if recovery is None:
        return None
    return {"renacks": recovery.renacks, "skipped": recovery.skipped}


def _freeze_list(viewer: Viewer, shown: list[int], t0: float, t1: float) -> list[list[float]]:
    """``[gap start, gap ms, counter before, counter after]`` for every display gap over
    ``FREEZE_MS`` inside the window: the harness tells from these what caused each freeze."""
    edges = [(t0, -1), *((viewer.shown[i], viewer.counters[i]) for i in shown), (t1, -1)]
    return [
        [a, (b - a) * 1000.0, ca, cb]
        for (a, ca), (b, cb) in zip(edges, edges[1:], strict=False)
        if (b - a) * 1000.0 > FREEZE_MS
    ]


def _ssim_vs_source(viewer: Viewer, pattern: TestPatternTrack) -> list[float]:
    scores = []
    for counter, y in sorted(viewer.samples.items()):
        source = luma(pattern.frame(counter, 0))
        scores.append(ssim(y[STAMP_ROWS:], source[STAMP_ROWS:]))
    return scores


def _ssim_vs_other(viewer: Viewer, other: Viewer) -> list[float]:
    return [
        ssim(y[STAMP_ROWS:], other.samples[c][STAMP_ROWS:])
        for c, y in sorted(viewer.samples.items())
        if c in other.samples
    ]


async def main(args: argparse.Namespace) -> None:
    loopback_only()
    recovery.use(args.recovery)
    loadgen = LoadGen(args)
    try:
        await loadgen.start()
        async for command in stdin_lines():
            words = command.split()
            if words[0] == "join":
                emit(await loadgen.late_joins(int(words[1]), float(words[2])))
            elif words[0] == "mark":
                emit(await loadgen.mark(words[1]))
            elif words[0] == "report":
                emit(await loadgen.report(float(words[1]), float(words[2])))
            elif words[0] == "quit":
                break
    finally:
        await asyncio.wait_for(loadgen.close(), 30)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--whep", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--publisher", required=True, help="publisher control URL")
    parser.add_argument("--codec", default="VP8", choices=("VP8", "H264"))
    parser.add_argument("--probes", type=int, default=0)
    parser.add_argument("--light", type=int, default=0)
    parser.add_argument(
        "--sinks", type=int, default=0, help="viewers that drop media after their first frame"
    )
    parser.add_argument("--direct", action="store_true", help="also run the direct probe")
    parser.add_argument("--name", default="lg0")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    add_impairment_args(parser)
    parser.add_argument("--recovery", choices=recovery.PROFILES, default="tuned")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="loadgen %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
