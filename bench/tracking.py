"""Anchored marks: tracking accuracy and CPU on the synthetic endoscopy sequence.

The real ``relay.tracker.Tracker`` follows five marks through ``client.endoscopy`` (720p30 by
default: drift, rotation, zoom, deformation, specular flicker, blur bursts, the scope pulled out
from 7 to 9 s), fed gray frames downscaled to the analysis size at the analysis rate, as the
relay does. Each mark's place is compared with the sequence's ground truth:

* drift at 1, 5 and 10 s: distance between where the mark is shown and where its tissue is
  (px at the source size and % of the width), median and max over the marks;
* lost-track rate: share of the analysed frames with the mark's tissue in view where it is lost;
* false confidence: frames where a mark is shown confidently more than 5 % of the width off, or
  confidently while the scope is out;
* CPU: process time (all threads: OpenCV's own included) of ``Tracker.update`` and, apart, of
  the downscale, as % of one core.

The baseline in the same run is what the product does today: static marks (no tracking).

With ``--codec vp8 --kbps 1500`` every frame of the sequence is first encoded at the source size
(PyAV's libvpx at its fastest speed, no look-ahead, one thread: the same bits on every run; the
real-time deadline would adapt its speed to the load) and decoded back, and the tracker is given
the decoded frames: what the relay sees of a real feed (smoothed texture, blocking), measured
offline, deterministic and independent of the machine's load.

    python -m bench.tracking [--seconds 12] [--analysis 320x180] [--rate 15] [--size 1280x720]
                             [--codec vp8 --kbps 1500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import cv2
import numpy as np

from client.endoscopy import SyntheticEndoscopy, SyntheticFrame
from relay.relay import CV_THREADS
from relay.tracker import Placement, Tracker

MARKS: tuple[tuple[float, float], ...] = (
    (0.50, 0.50),
    (0.38, 0.34),
    (0.63, 0.62),
    (0.41, 0.68),
    (0.61, 0.35),
)
"""Mark centres on the first frame (normalised): the middle and four places around it."""
MARK_RADIUS = 0.02
"""Each mark is a small circle (8 points) of this radius (fraction of the width)."""
CHECKPOINTS_S = (1.0, 5.0, 10.0)
WRONG = 0.05
"""A confident mark more than this fraction of the width from its tissue is a false confidence."""


@dataclass
class Run:
    """Everything measured in one pass of the sequence."""

    width: int
    fps: int
    rate: int
    seconds: float
    errors: dict[str, dict[int, list[float | None]]] = field(default_factory=dict)
    """method → mark → per analysed frame, px error at the source size (None: not in view)."""
    lost: list[list[bool]] = field(default_factory=list)
    """per analysed frame, per mark: lost."""
    in_view: list[bool] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    track_cpu_s: float = 0.0
    scale_cpu_s: float = 0.0

    def at(self, t: float) -> int:
        """The analysed frame nearest ``t`` seconds."""
        return min(range(len(self.times)), key=lambda k: abs(self.times[k] - t))

    def drift(self, method: str, t: float) -> list[float]:
        """Each mark's error at the analysed frame nearest ``t`` (marks not in view left out)."""
        values = [e[self.at(t)] for e in self.errors[method].values()]
        return [v for v in values if v is not None]

    def lost_rate(self) -> float:
        cases = [
            lost
            for i, row in enumerate(self.lost)
            for lost, error in zip(row, self._row("tracked", i), strict=True)
            if error is not None
        ]
        return sum(cases) / max(1, len(cases))

    def false_confidence(self, method: str) -> tuple[int, int]:
        """(frames × marks shown confidently in the wrong place or while out, all of them)."""
        wrong = total = 0
        for i, row in enumerate(self.lost):
            for m, error in enumerate(self._row(method, i)):
                total += 1
                confident = method == "static" or not row[m]
                if not confident:
                    continue
                if not self.in_view[i] or (error is not None and error > WRONG * self.width):
                    wrong += 1
        return wrong, total

    def _row(self, method: str, i: int) -> list[float | None]:
        return [e[i] for e in self.errors[method].values()]

    def cpu_percent(self, seconds: float) -> float:
        return 100 * seconds / self.seconds


def run(
    size: tuple[int, int] = (1280, 720),
    analysis: tuple[int, int] = (320, 180),
    rate: int = 15,
    seconds: float = 12.0,
    seed: int = 1,
    codec: str | None = None,
    kbps: int = 1500,
) -> Run:
    """One pass of the sequence: the tracker against static marks (given the frames as drawn,
    or through ``codec`` at ``kbps``)."""
    sequence = SyntheticEndoscopy(size[0], size[1], seconds=seconds, seed=seed)
    every = max(1, round(sequence.fps / rate))
    pictures = _pictures(sequence, codec, kbps)
    tracker = Tracker(*analysis)
    result = Run(size[0], sequence.fps, rate, seconds)
    result.errors = {method: {m: [] for m in range(len(MARKS))} for method in ("tracked", "static")}
    for m, centre in enumerate(MARKS):  # anchored on the first frame to come
        tracker.anchor(("surgeon", f"m{m}"), _circle(centre, size), None)
    for frame, bgr in pictures:
        index = frame.index
        if index % every:
            continue
        started = time.process_time()
        gray = cv2.resize(
            cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), analysis, interpolation=cv2.INTER_AREA
        )
        result.scale_cpu_s += time.process_time() - started
        pts = index * 3000
        started = time.process_time()
        placements = tracker.update(gray, pts)
        result.track_cpu_s += time.process_time() - started
        result.times.append(index / sequence.fps)
        result.in_view.append(frame.in_view)
        result.lost.append([placements[("surgeon", f"m{m}")].lost for m in range(len(MARKS))])
        for m, centre in enumerate(MARKS):
            truth = sequence.true_point(index, centre[0] * size[0] - 0.5, centre[1] * size[1] - 0.5)
            shown = _apply(placements[("surgeon", f"m{m}")], centre)
            for method, place in (("tracked", shown), ("static", centre)):
                error = None
                if truth is not None:
                    dx = place[0] * size[0] - 0.5 - truth[0]
                    dy = place[1] * size[1] - 0.5 - truth[1]
                    error = float(np.hypot(dx, dy))
                result.errors[method][m].append(error)
    return result


def _pictures(
    sequence: SyntheticEndoscopy, codec: str | None, kbps: int
) -> Iterator[tuple[SyntheticFrame, np.ndarray]]:
    """Every frame of the sequence with the picture the tracker gets: as drawn, or encoded with
    ``codec`` (one stream, settings that give the same bits on every run) and decoded back."""
    if codec is None:
        for frame in sequence.frames():
            yield frame, frame.bgr
        return
    encoder = av.CodecContext.create({"vp8": "libvpx"}.get(codec, codec), "w")
    assert isinstance(encoder, av.VideoCodecContext)
    encoder.width, encoder.height = sequence.width, sequence.height
    encoder.pix_fmt = "yuv420p"
    encoder.framerate = Fraction(sequence.fps)
    encoder.time_base = Fraction(1, sequence.fps)
    encoder.bit_rate = kbps * 1000
    encoder.thread_count = 1
    encoder.options = {"deadline": "good", "cpu-used": "8", "lag-in-frames": "0"}
    decoder = av.CodecContext.create(encoder.name, "r")
    assert isinstance(decoder, av.VideoCodecContext)
    waiting: dict[int, SyntheticFrame] = {}
    for frame in sequence.frames():
        waiting[frame.index] = frame
        picture = av.VideoFrame.from_ndarray(frame.bgr, format="bgr24").reformat(format="yuv420p")
        picture.pts = frame.index
        for packet in encoder.encode(picture):
            for decoded in decoder.decode(packet):
                # matched by pts: a frame the encoder dropped (rate control) is simply not seen
                bgr = decoded.to_ndarray(format="bgr24")
                yield waiting.pop(int(decoded.pts or 0)), bgr


def _circle(centre: tuple[float, float], size: tuple[int, int]) -> list[tuple[float, float]]:
    r = MARK_RADIUS
    aspect = size[0] / size[1]
    return [
        (centre[0] + r * np.cos(a), centre[1] + r * aspect * np.sin(a))
        for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)
    ]


def _apply(placement: Placement, point: tuple[float, float]) -> tuple[float, float]:
    a, b, c, d, e, f = placement.matrix
    x, y = point
    return a * x + b * y + c, d * x + e * y + f


def table(result: Run) -> str:
    """The accuracy table (markdown)."""
    w = result.width
    lines = [
        "| method | drift 1 s median / max | drift 5 s median / max | drift 10 s median / max "
        "| lost-track | false confidence |",
        "|---|---|---|---|---|---|",
    ]
    for method, label in (("static", "static marks (today)"), ("tracked", "tracked")):
        cells = []
        for t in CHECKPOINTS_S:
            values = result.drift(method, t)
            if not values:
                cells.append("not in view")
                continue
            med, top = statistics.median(values), max(values)
            cell = f"{med:.1f} px ({100 * med / w:.2f} %) / {top:.1f} px ({100 * top / w:.2f} %)"
            if method == "tracked":
                cell += f", {sum(result.lost[result.at(t)])} lost"
            cells.append(cell)
        wrong, total = result.false_confidence(method)
        lost = f"{100 * result.lost_rate():.1f} %" if method == "tracked" else "—"
        false = f"{100 * wrong / total:.1f} % ({wrong}/{total})"
        lines.append(f"| {label} | {' | '.join(cells)} | {lost} | {false} |")
    lines.append("")
    lines.append(
        f"CPU (process time, {result.rate} Hz analysis of a {result.fps} fps source, "
        f"{len(MARKS)} marks, OpenCV threads {cv2.getNumThreads()}): "
        f"tracker {result.cpu_percent(result.track_cpu_s):.1f} % of a core, "
        f"downscale to gray {result.cpu_percent(result.scale_cpu_s):.1f} % (decode not included)"
    )
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=_size, default=(1280, 720), help="source size WxH")
    parser.add_argument("--analysis", type=_size, default=(320, 180), help="analysis size WxH")
    parser.add_argument("--rate", type=int, default=15, help="analysis frames per second")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--codec", choices=("vp8",), help="track the frames through this codec")
    parser.add_argument("--kbps", type=int, default=1500, help="the codec's bit rate")
    parser.add_argument(
        "--cv-threads",
        type=int,
        default=CV_THREADS,
        help="OpenCV's thread pool (default: as the relay sets it; -1: OpenCV's default)",
    )
    args = parser.parse_args()
    cv2.setNumThreads(args.cv_threads)
    started = time.monotonic()
    result = run(
        args.size, args.analysis, args.rate, args.seconds, args.seed, args.codec, args.kbps
    )
    print(table(result))
    load = os.getloadavg()[0]
    print(
        f"(wall clock {time.monotonic() - started:.0f} s with the sequence drawn; load {load:.1f})"
    )


if __name__ == "__main__":
    main()
