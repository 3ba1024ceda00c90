"""Follow the uplink: ``endolink publish`` re-encodes at the rate the relay's estimate allows,
at the highest resolution that rate carries, and keeps the frame rate.

aiortc's encoders follow the receiver's REMB only inside a fixed clamp (VP8 250 kbit/s–1.5
Mbit/s, H.264 0.5–3 Mbit/s) and never change resolution: on a 400 kbit/s clinic uplink a 720p
stream at its 500 kbit/s floor overfills the link, packets queue and drop, and the surgeon sees
freezes. ``AdaptiveEncoder`` wraps aiortc's encoder for one sender: it takes the estimate down
to ``FLOOR_BPS``, and scales each frame to the level the rate allows (``LevelChooser``: down
quickly, up only after the rate held for a few seconds) inside ``encode``, which aiortc runs in
its executor, so the scaling never touches the event loop. The clinic page follows the same
levels (web/js/uplink.js).

A live source sent as it is (an RTSP camera or card in the consultation's codec) is never
decoded, so it cannot adapt: it says so once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpCodecParameters, RTCRtpSender
from aiortc.codecs import get_encoder
from aiortc.codecs.base import Encoder
from av.frame import Frame
from av.packet import Packet
from av.video.frame import VideoFrame


@dataclass(frozen=True)
class Level:
    """A picture size for a rate: ``height`` lines from ``min_kbps`` of estimate upward."""

    name: str
    height: int
    min_kbps: int


LEVELS = (
    Level("720p", 720, 1500),
    Level("540p", 540, 800),
    Level("360p", 360, 350),
    Level("low", 270, 0),
)
"Highest first; the same table as web/js/uplink.js (720p needs ~1.5 Mbit/s for mucosal detail)."
DOWN_HOLD_S = 1.5
"The rate below the level's need this long: step down at once to the level that fits."
UP_HOLD_S = 4.0
UP_MARGIN = 1.15
"The rate this much above the next level's need for ``UP_HOLD_S``: one level up."
FLOOR_BPS = 100_000
"Below aiortc's floors (VP8 250k, H.264 500k): a 150 kbit/s link still carries moving video."
CEILING_BPS = {"video/vp8": 2_500_000, "video/h264": 3_000_000}
"VP8 above aiortc's 1.5 Mbit/s so 720p (and the way up to it) is reachable."
RECREATE_STEP = 0.25
"""aiortc makes a new codec — and a keyframe — whenever its target moves by 10 %; REMB moves it
every second. On a narrow link each keyframe queues and drops, and a drop asks for another
keyframe: the encoder is given a new rate only when it moved by this much (the level follows
every sample)."""
START_BPS = 1_500_000
"""Where a session starts (aiortc: VP8 500k, H.264 1M): 720p from the first frame, like the
browser's ``x-google-start-bitrate``; the relay's estimate takes it down within seconds if the
link is narrower (its estimate rises only 8 % a second, so starting low costs ~15 s of 360p)."""


class LevelChooser:
    """Which level for a stream of rate samples, with hysteresis (pure: time is passed in)."""

    def __init__(self) -> None:
        self.level: Level | None = None
        self._below_since: float | None = None
        self._above_since: float | None = None

    def update(self, kbps: float, now: float) -> Level:
        """The level after one more sample of the estimate (kbit/s) at ``now`` (seconds)."""
        fits = next(level for level in LEVELS if kbps >= level.min_kbps)
        if self.level is None:
            self.level = fits
            return fits
        rank = LEVELS.index(self.level)
        if LEVELS.index(fits) > rank:  # the rate no longer carries this level
            self._above_since = None
            self._below_since = self._below_since if self._below_since is not None else now
            if now - self._below_since >= DOWN_HOLD_S:
                self.level, self._below_since = fits, None
            return self.level
        self._below_since = None
        if rank > 0 and kbps >= LEVELS[rank - 1].min_kbps * UP_MARGIN:
            self._above_since = self._above_since if self._above_since is not None else now
            if now - self._above_since >= UP_HOLD_S:
                self.level, self._above_since = LEVELS[rank - 1], None
        else:
            self._above_since = None
        return self.level


def scaled_size(width: int, height: int, level: Level) -> tuple[int, int]:
    """The frame size for ``level``: never upscaled, the aspect kept, both sides even."""
    if height <= level.height:
        return width, height
    return max(2, round(width * level.height / height / 2) * 2), level.height


class AdaptiveEncoder(Encoder):
    """aiortc's encoder for ``codec`` with a wider bitrate range and the frame scaled to the
    level its target rate allows. ``on_level(level, kbps)`` hears each change (from aiortc's
    executor thread); ``on_passthrough()`` hears, once, that packets are sent as they are."""

    def __init__(
        self,
        codec: RTCRtpCodecParameters,
        on_level: Callable[[Level, int], None] = lambda level, kbps: None,
        on_passthrough: Callable[[], None] = lambda: None,
    ) -> None:
        self._inner = get_encoder(codec)
        # aiortc keeps the rate in a private attribute behind a clamping setter: set it here.
        self._rate_attribute = f"_{type(self._inner).__name__}__target_bitrate"
        self._ceiling = CEILING_BPS[codec.mimeType.lower()]
        self._chooser = LevelChooser()
        self._on_level, self._on_passthrough = on_level, on_passthrough
        self._passthrough_said = False
        self._wanted = START_BPS
        setattr(self._inner, self._rate_attribute, START_BPS)

    @property
    def target_bitrate(self) -> int:
        """The estimate, within this encoder's range (what the level is chosen by)."""
        return self._wanted

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._wanted = max(FLOOR_BPS, min(bitrate, self._ceiling))
        encoding: int = getattr(self._inner, self._rate_attribute)
        if abs(self._wanted - encoding) > RECREATE_STEP * encoding:
            setattr(self._inner, self._rate_attribute, self._wanted)

    @property
    def level(self) -> Level | None:
        return self._chooser.level

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        assert isinstance(frame, VideoFrame)
        kbps = self.target_bitrate // 1000
        before = self._chooser.level
        level = self._chooser.update(kbps, time.monotonic())
        if level is not before:
            self._on_level(level, kbps)
        width, height = scaled_size(frame.width, frame.height, level)
        if (width, height) != (frame.width, frame.height):
            frame = frame.reformat(width=width, height=height, format="yuv420p")
        return self._inner.encode(frame, force_keyframe)

    def pack(self, packet: Packet[Any]) -> tuple[list[bytes], int]:
        if not self._passthrough_said:
            self._passthrough_said = True
            self._on_passthrough()
        return self._inner.pack(packet)


def follow_the_link(
    sender: RTCRtpSender, codec: RTCRtpCodecParameters, say: Callable[[str], None]
) -> AdaptiveEncoder:
    """Give a negotiated video ``sender`` an ``AdaptiveEncoder`` (in place of the one aiortc
    would make at its first frame: a private slot, pinned with aiortc 1.16 and tested)."""

    def on_level(level: Level, kbps: int) -> None:
        say(f"the uplink carries about {kbps} kbit/s: sending {level.height}p")

    def on_passthrough() -> None:
        say("the source is sent as it is: its picture cannot follow a narrow uplink")

    encoder = AdaptiveEncoder(codec, on_level, on_passthrough)
    sender._RTCRtpSender__encoder = encoder  # type: ignore[attr-defined]
    return encoder
