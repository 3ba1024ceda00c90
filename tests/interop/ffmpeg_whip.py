"""FFmpeg's own WebRTC publisher (the ``whip`` muxer of the PyAV wheel's FFmpeg 8) in a process
of its own, so a test can bound and kill it:

    python -m tests.interop.ffmpeg_whip URL TOKEN SECONDS [CERT KEY]

Encodes the stamped test pattern (``client.testpattern``) with libx264 at 30 fps and hands every
packet to the muxer, which does WHIP, ICE, DTLS and SRTP itself: nothing of aiortc or EndoLink is
on the sending side. Without CERT/KEY the muxer makes its own DTLS certificate (GnuTLS: P-224).
Prints ``opened`` once the WHIP session is up, ``sent N`` every second, and on failure
``failed: <error>`` with exit code 1."""

from __future__ import annotations

import sys
import time

import av

from client.testpattern import TestPatternTrack

WIDTH, HEIGHT, FPS = 640, 480, 30


def publish(url: str, token: str, seconds: float, cert_key: list[str]) -> int:
    options = {"authorization": token, "handshake_timeout": "5000"}
    if cert_key:
        options.update(cert_file=cert_key[0], key_file=cert_key[1])
    pattern = TestPatternTrack(WIDTH, HEIGHT, FPS)
    try:
        output = av.open(url, mode="w", format="whip", options=options, timeout=10)
        stream = output.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        # No B-frames (WebRTC has none); a keyframe every second for viewers that join late.
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0", "g": str(FPS)}
        start = time.monotonic()
        index = 0
        while time.monotonic() - start < seconds:
            frame = pattern.frame(index, int(time.time() * 1000))
            frame.pts = index
            for packet in stream.encode(frame):
                output.mux(packet)  # the first one opens the session: WHIP, ICE, DTLS
            if index == 0:
                print("opened", flush=True)
                start = time.monotonic()
            index += 1
            if index % FPS == 0:
                print(f"sent {index}", flush=True)
            time.sleep(max(0.0, start + index / FPS - time.monotonic()))
        output.close()
    except (av.FFmpegError, OSError) as exc:
        print(f"failed: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(publish(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:6]))
