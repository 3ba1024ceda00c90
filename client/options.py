"""How ``endolink publish`` opens its source: kept apart from the media code so the command line
can offer the choices without importing PyAV."""

from __future__ import annotations

from dataclasses import dataclass, fields

RTSP_TRANSPORTS = ("tcp", "udp")
"TCP: interleaved in the RTSP connection (through firewalls, no loss); UDP: lower latency."
INPUT_FORMATS = ("mjpeg", "yuyv422", "h264")
"Capture-card formats FFmpeg's v4l2 input can ask for (``v4l2-ctl --list-formats-ext``)."


@dataclass(frozen=True)
class SourceOptions:
    """How to open a source: ``loop`` for files; size, rate and pixel format for a V4L2 card
    (None: the card's defaults); the RTSP transport."""

    loop: bool = False
    video_size: str | None = None
    framerate: str | None = None
    input_format: str | None = None
    rtsp_transport: str = "tcp"

    @classmethod
    def of(cls, values: object) -> SourceOptions:
        """From an object with these names as attributes (the parsed command line)."""
        return cls(**{field.name: getattr(values, field.name) for field in fields(cls)})

    def device(self) -> dict[str, str]:
        """FFmpeg v4l2 input options."""
        options = {
            "video_size": self.video_size,
            "framerate": self.framerate,
            "input_format": self.input_format,
        }
        return {name: value for name, value in options.items() if value}
