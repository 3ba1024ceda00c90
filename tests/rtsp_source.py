"""A local RTSP camera for the tests: GStreamer's RTSP server serving a moving test pattern.

Runs under Debian's /usr/bin/python3 (python3-gi; the project's venv cannot import gi), so it
imports only the stdlib and gi. Usage: ``rtsp_source.py PORT CODEC [FPS]`` with CODEC ``h264`` or
``vp8``; it prints ``ready rtsp://127.0.0.1:PORT/scope`` once listening, serves until SIGTERM.
The stream is 640×360 at FPS with a keyframe every second, H.264 constrained baseline (what a
browser negotiates) with SPS/PPS in band, like an IP camera's sub-stream. CODEC may instead be an
MP4 file with H.264 in it (any profile, e.g. High with B-frames, which Debian's GStreamer cannot
encode): its stream is served as it is, at its own rate.
"""

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

ENCODERS = {
    "h264": (
        "openh264enc bitrate=1500000 gop-size={fps} complexity=low"
        " ! h264parse ! video/x-h264,profile=constrained-baseline"
        " ! rtph264pay name=pay0 pt=96 config-interval=-1"
    ),
    "vp8": (
        "vp8enc deadline=1 keyframe-max-dist={fps} target-bitrate=1500000"
        " ! rtpvp8pay name=pay0 pt=96"
    ),
}


def main() -> None:
    port, codec = sys.argv[1], sys.argv[2]
    fps = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    if codec.endswith(".mp4"):
        factory.set_launch(
            f"( filesrc location={codec} ! qtdemux ! h264parse"
            " ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
    else:
        factory.set_launch(
            f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,"
            f"framerate={fps}/1 ! videoconvert ! " + ENCODERS[codec].format(fps=fps) + " )"
        )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/scope", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"ready rtsp://127.0.0.1:{port}/scope", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
