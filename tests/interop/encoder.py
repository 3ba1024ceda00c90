"""The stamped test pattern (``client.testpattern``) encoded by the PyAV wheel's FFmpeg 8 and sent
by one of FFmpeg's muxers, in a process of its own so a test can bound and kill it:

    python -m tests.interop.encoder whip URL TOKEN SECONDS [CERT KEY]
    python -m tests.interop.encoder rtp HOST:PORT CODEC SECONDS

``whip``: FFmpeg's own WebRTC publisher (H.264 only) does WHIP, ICE, DTLS and SRTP itself; nothing
of aiortc or EndoLink is on the sending side. Without CERT/KEY it makes its own DTLS certificate
(GnuTLS: P-224). ``rtp``: plain RTP (VP8 or H264) to a client that has no encoder (werift).
Prints ``opened`` once the first frame is out, ``sent N`` every second, and on failure
``failed: <error>`` with exit code 1."""

from __future__ import annotations

import sys
import time

import av

from client.testpattern import TestPatternTrack

WIDTH, HEIGHT, FPS = 640, 480, 30
ENCODERS = {"H264": "libx264", "VP8": "libvpx"}
OPTIONS = {
    # No B-frames (WebRTC has none), Constrained Baseline like a browser's.
    "libx264": {"preset": "ultrafast", "tune": "zerolatency", "bf": "0", "profile": "baseline"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"},
}


def send(output: av.container.OutputContainer, codec: str, seconds: float) -> int:
    """Encode and mux ``seconds`` of the pattern at ``FPS``, paced in real time."""
    try:
        encoder = ENCODERS[codec]
        stream = output.add_stream(encoder, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = 1_000_000
        # A keyframe every second: the sender may ignore keyframe requests (werift forwards RTP).
        stream.options = {**OPTIONS[encoder], "g": str(FPS)}
        pattern = TestPatternTrack(WIDTH, HEIGHT, FPS)
        start = time.monotonic()
        index = 0
        while time.monotonic() - start < seconds:
            frame = pattern.frame(index, int(time.time() * 1000))
            frame.pts = index
            for packet in stream.encode(frame):
                output.mux(packet)  # for whip, the first one opens the session: WHIP, ICE, DTLS
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


def whip(url: str, token: str, seconds: float, cert_key: list[str]) -> int:
    options = {"authorization": token, "handshake_timeout": "5000"}
    if cert_key:
        options.update(cert_file=cert_key[0], key_file=cert_key[1])
    output = av.open(url, mode="w", format="whip", options=options, timeout=10)
    return send(output, "H264", seconds)


def rtp(address: str, codec: str, seconds: float) -> int:
    output = av.open(f"rtp://{address}?pkt_size=1200", mode="w", format="rtp")
    return send(output, codec, seconds)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "whip":
        sys.exit(whip(args[0], args[1], float(args[2]), args[3:5]))
    sys.exit(rtp(args[0], args[1], float(args[2])))
