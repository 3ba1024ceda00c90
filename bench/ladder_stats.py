"""Pure parts of ``bench.ladder``: what a viewer's log of shown frames says, and the picture
quality of a (possibly scaled-down) frame against the regenerated test pattern.

A viewer logs one row per frame it showed: ``(arrival, counter, latency ms, width, height,
bit_exact)`` where ``bit_exact`` says the encoded frame's hash is one the publisher's encoder
produced (the original, forwarded untouched). The quality a frame was shown at follows from
that and its height: ``original`` if bit-exact, else the rung its height names.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from .common import LONG_FREEZE_MS, STAMP_ROWS, gaps_ms, luma, percentile, ssim

Frame = Sequence[Any]
"(arrival s, counter, latency ms, width, height, bit_exact)"

TARGET_FPS = 25.0
TARGET_RUNG_CPU = {"540p": 35.0, "360p": 20.0}
"% of one core for one rung (VP8), from the issue."


def quality_of(height: int, bit_exact: bool, source_height: int = 720) -> str:
    """``original`` for the forwarded stream; else the rung named by the picture's height (a
    re-encoded picture at the source's height is the annotated rendition or a full-size rung)."""
    if bit_exact:
        return "original"
    if height >= source_height:
        return f"{source_height}p re-encoded"
    return f"{height}p"


def timeline(frames: Sequence[Frame], origin: float, source_height: int = 720) -> list[list[Any]]:
    """``[[seconds after origin, quality], …]``: the first frame's quality and every change."""
    changes: list[list[Any]] = []
    for f in frames:
        quality = quality_of(f[4], bool(f[5]), source_height)
        if not changes or changes[-1][1] != quality:
            changes.append([round(f[0] - origin, 2), quality])
    return changes


def time_shares(frames: Sequence[Frame], t0: float, t1: float, source_height: int = 720) -> dict:
    """Share of the window's shown frames per quality (0..1)."""
    inside = [quality_of(f[4], bool(f[5]), source_height) for f in frames if t0 <= f[0] <= t1]
    return {q: inside.count(q) / len(inside) for q in sorted(set(inside))}


def summarise(frames: Sequence[Frame], t0: float, t1: float, source_height: int = 720) -> dict:
    """fps (distinct stamped counters shown per second), freezes (display gaps over 500 ms,
    the window's edges included; each as [start, ms]), latency p50/p95, sizes and
    bit-exactness inside [t0, t1]."""
    inside = [f for f in frames if t0 <= f[0] <= t1]
    times = [f[0] for f in frames]
    gaps = gaps_ms(times, t0, t1)
    long = [g for g in gaps if g > LONG_FREEZE_MS]
    edges = [t0, *(t for t in times if t0 <= t <= t1)]
    starts = [edges[i] for i, g in enumerate(gaps) if g > LONG_FREEZE_MS]
    latency = [f[2] for f in inside]
    sizes = sorted({f"{f[3]}x{f[4]}" for f in inside})
    exact = sum(1 for f in inside if f[5])
    return {
        "fps": len({f[1] for f in inside}) / (t1 - t0),
        "frames": len(inside),
        "freezes_500": len(long),
        "long_freezes": [[start, ms] for start, ms in zip(starts, long, strict=True)],
        "longest_gap_ms": max(gaps) if gaps else None,
        "latency_p50": percentile(latency, 50),
        "latency_p95": percentile(latency, 95),
        "sizes": sizes,
        "bit_exact": exact / len(inside) if inside else None,
        "shares": time_shares(frames, t0, t1, source_height),
    }


def received(encoded: Sequence[Sequence[Any]], t0: float, t1: float) -> dict[str, Any]:
    """What arrived in [t0, t1] from ``(arrival, bytes, keyframe)`` rows: kbit/s of video and
    the keyframes (count, largest bytes): a keyframe larger than the link's queue is lost."""
    inside = [e for e in encoded if t0 <= e[0] <= t1]
    keyframes = [e[1] for e in inside if e[2]]
    return {
        "video_kbps": sum(e[1] for e in inside) * 8 / 1000 / (t1 - t0),
        "keyframes": len(keyframes),
        "keyframe_max_bytes": max(keyframes, default=0),
    }


def meets_viewer_target(summary: dict) -> bool:
    """A capped viewer: ≥ 25 fps and no freeze over 500 ms."""
    return summary["fps"] >= TARGET_FPS and summary["freezes_500"] == 0


# -- picture quality ---------------------------------------------------------------------------


def stamp_rows(height: int, source_height: int) -> int:
    """Rows of a picture of ``height`` covered by the source's stamp rows (scaled, rounded up)."""
    return math.ceil(STAMP_ROWS * height / source_height)


def ssim_at_received(received: np.ndarray, source: np.ndarray) -> float:
    """SSIM of a received luma plane against the source scaled down to its size (area
    averaging, what a good scaler does): the quality of the rung for its resolution."""
    import cv2

    h, w = received.shape
    scaled = source
    if source.shape != received.shape:
        scaled = cv2.resize(source, (w, h), interpolation=cv2.INTER_AREA)
    skip = stamp_rows(h, source.shape[0])
    return ssim(received[skip:], scaled[skip:])


def ssim_as_shown(received: np.ndarray, source: np.ndarray) -> float:
    """SSIM of a received luma plane shown at the source's size (bilinear, as a browser scales
    a video) against the source: what detail the viewer lost, resolution included."""
    import cv2

    h, w = source.shape
    shown = received
    if received.shape != source.shape:
        shown = cv2.resize(received, (w, h), interpolation=cv2.INTER_LINEAR)
    skip = STAMP_ROWS
    return ssim(shown[skip:], source[skip:])


def ssim_vs_pattern(samples: dict[int, np.ndarray], width: int, height: int) -> list[list[Any]]:
    """``[[counter, height, ssim at received size, ssim as shown], …]`` for luma samples of the
    test pattern, each against the source frame of its counter regenerated (the pattern is a
    pure function of the counter; the stamp rows, which also carry the clock, are left out)."""
    from client.testpattern import TestPatternTrack

    pattern = TestPatternTrack(width, height)
    rows = []
    for counter, y in sorted(samples.items()):
        source = luma(pattern.frame(counter, 0))
        rows.append([counter, y.shape[0], ssim_at_received(y, source), ssim_as_shown(y, source)])
    return rows


def ssim_by_height(rows: Sequence[Sequence[Any]]) -> dict[int, tuple[float, float, int]]:
    """Height → (median SSIM at received size, median SSIM as shown, samples)."""
    heights: dict[int, list[Sequence[Any]]] = {}
    for row in rows:
        heights.setdefault(int(row[1]), []).append(row)
    return {
        h: (
            statistics.median(r[2] for r in rs),
            statistics.median(r[3] for r in rs),
            len(rs),
        )
        for h, rs in sorted(heights.items(), reverse=True)
    }
