"""What the app decides about recording: thresholds and switches (``Settings`` feeds them)."""

from __future__ import annotations

from dataclasses import dataclass

from .writer import QUEUE_FRAMES


@dataclass(frozen=True)
class RecorderConfig:
    offline_s: float = 60.0
    "An endoscope feed offline longer than this ends the recording; a return within it continues."
    min_free_mb: int = 500
    "Below this much free space (MiB) in the data dir, recording stops (and does not start)."
    keyframe_interval_s: float = 2.0
    "Ask the clinic for a keyframe when none came for this long: seek points, clean segments."
    disk_check_interval_s: float = 1.0
    queue_frames: int = QUEUE_FRAMES
    repair: bool = True
    "After a crash, also write a finalized stream copy of the interrupted segment."
