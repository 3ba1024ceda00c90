"""The placements of anchored marks in a recording's timeline: on the recording clock by their own
pts, in time order, damaged ones dropped (recorder/timeline.py)."""

from __future__ import annotations

from recorder.log_entry import LogEntry, LogOp
from recorder.timeline import build_timeline
from tests.replay_support import stroke, ten_second_manifest

M = [1.0, 0.0, 0.1, 0.0, 1.0, 0.0]


def _entry(op: str, pts: int | None, second: int = 5, **payload: object) -> LogEntry:
    ts = f"2025-01-01T00:00:{second:02d}.000+00:00"
    entry = LogEntry.from_json({"ts": ts, "op": op, "by": None, **payload, "media_pts": pts})
    assert entry is not None
    return entry


def test_placements_are_placed_by_their_own_pts_in_time_order_and_damage_is_dropped() -> None:
    good = {"author": "s", "id": "m1", "m": M, "confidence": 0.912345, "lost": False}
    entries = [
        _entry("add", 180_000, annotation=stroke(author="s")),
        # written after the add, of a frame analysed before it: kept at its own time
        _entry("placements", 171_000, marks=[good]),
        _entry("placements", 174_000, marks=[{**good, "lost": True}, {**good, "m": [1, 2]}]),
        _entry("placements", 177_000, marks=[{**good, "m": [float("nan")] * 6}, "junk"]),
        _entry("placements", None, 30, marks=[good]),  # after the recording: dropped
    ]
    assert entries[1].kind is LogOp.PLACEMENTS
    timeline = build_timeline(entries, ten_second_manifest(0))
    assert [p.t for p in timeline.placements] == [1.9, 1.9333333333333333, 1.9666666666666666]
    first, lost, damaged = timeline.placements
    assert first.marks == [{**good, "confidence": 0.912}]
    assert lost.marks == [{**good, "confidence": 0.912, "lost": True}]
    assert damaged.marks == []
    assert timeline.marks[0].start_t == 2.0  # the add is where it was
    assert timeline.to_json()["placements"][0] == [1.9, [{**good, "confidence": 0.912}]]
