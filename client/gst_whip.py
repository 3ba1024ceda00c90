#!/usr/bin/python3
"""WHIP publisher and WHEP player for GStreamer 1.22 (Debian 12), driving ``webrtcbin``.

GStreamer 1.24+ has ``whipclientsink``/``whepsrc`` (gst-plugins-rs); Debian 12 has neither. This
file stands alone — the standard library and Debian's GObject introspection (``python3-gi``),
no EndoLink import — so a hospital can copy it next to its pipeline and run it with
``/usr/bin/python3`` (the project's virtualenv cannot import ``gi``).

  publish URL [--codec VP8|H264] [--source 'v4l2src device=/dev/video0']
      without --source: a test picture whose frames carry the stamp of
      ``client/testpattern.py`` (64 blocks along the top: frame counter, wall-clock ms), so a
      viewer can check which frames arrived and how late.
  play URL [--seconds N]
      decodes the feed; its report counts frames, size, frame rate and the stamps it read.

The Bearer token comes from ``$ENDOLINK_TOKEN`` (like ``endolink publish``), out of ``ps`` and
the shell history; ``--token`` also works.

Standard output is JSON lines: ``{"state": "connected"}`` once ICE and DTLS are up, then the
report when it ends (``--seconds`` after connecting, Ctrl-C, or an error: exit status 1).

No trickle ICE: the offer goes out when candidate gathering is complete. DTLS: webrtcbin's
certificate is RSA-2048; EndoLink's relay accepts it (``relay/dtls.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urljoin

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

STAMP_BITS = 64
COUNTER_BITS = 24
CLOCK_MASK = (1 << 40) - 1
HTTP_TIMEOUT_S = 10
CONNECT_TIMEOUT_S = 30
RTP_CAPS = {
    "VP8": "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
    "H264": "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000",
}
"A publisher's payloader adds the H.264 parameters of its stream (profile-level-id from the SPS)."
PLAY_CAPS = ";".join(
    (RTP_CAPS["VP8"], RTP_CAPS["H264"] + ",packetization-mode=(string)1,profile-level-id=42e01f")
)
"A player offers VP8 and constrained-baseline H.264: the consultation's codec is answered."
ENCODERS = {
    "VP8": "vp8enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate={bps} lag-in-frames=0"
    " keyframe-max-dist={gop} threads=1 ! rtpvp8pay pt=96 picture-id-mode=15-bit",
    "H264": "openh264enc bitrate={bps} gop-size={gop} rate-control=bitrate complexity=low"
    " ! video/x-h264,profile=constrained-baseline ! h264parse"
    " ! rtph264pay pt=102 config-interval=-1 aggregate-mode=zero-latency",
}


class Session:
    """One webrtcbin and its WHIP/WHEP resource: offer when gathered, POST, apply the answer."""

    def __init__(self, pipeline: Any, url: str, token: str, loop: Any, seconds: float) -> None:
        self.pipeline, self.url, self.token, self.loop = pipeline, url, token, loop
        self.seconds = seconds
        self.webrtc = pipeline.get_by_name("webrtc")
        self.location: str | None = None
        self.offered = False
        self.ice: Any = None
        self.failure: str | None = None
        self.connected_at: float | None = None
        self.webrtc.connect("on-negotiation-needed", self._negotiate)
        self.webrtc.connect("notify::ice-gathering-state", self._gathering)
        self.webrtc.connect("notify::connection-state", self._connection)
        bus = pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._error)
        GLib.timeout_add_seconds(CONNECT_TIMEOUT_S, self._connect_deadline)

    def gather_on(self, addresses: list[str]) -> None:
        """Candidates on these local addresses only. libnice pins each host candidate to its
        interface, so one on eth0 cannot reach a server that listens on 127.0.0.1 (loopback
        candidates it never gathers by itself); also how a multi-homed tower picks its network."""
        gi.require_version("Nice", "0.1")
        from gi.repository import Nice

        # PyGObject takes over webrtcbin's only reference to its ICE object (1.22 leaves it
        # floating): the wrapper must live as long as the pipeline, or the object is freed.
        self.ice = self.webrtc.get_property("ice-agent")
        agent = self.ice.get_property("agent")
        for text in addresses:
            address = Nice.Address.new()
            if not address.set_from_string(text):
                raise SystemExit(f"--ice-address {text}: not an IP address")
            agent.add_local_address(address)

    def _negotiate(self, webrtc: Any) -> None:
        promise = Gst.Promise.new_with_change_func(self._offer_created, None)
        webrtc.emit("create-offer", None, promise)

    def _offer_created(self, promise: Any, _: object) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer")  # ``reply`` kept: the offer lives in it
        if offer is None or offer.sdp is None or self.offered:
            return  # negotiation needed again before caps were known, or after the offer went
        self.offered = True
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def _gathering(self, webrtc: Any, _: object) -> None:
        if webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self._post_offer)

    def _post_offer(self) -> bool:
        offer = self.webrtc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(
            self.url, data=offer.encode(), method="POST", headers=self._headers("application/sdp")
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                answer = response.read().decode()
                self.location = urljoin(self.url, response.headers.get("Location", ""))
        except urllib.error.HTTPError as exc:
            self.fail(f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}")
            return False
        except OSError as exc:
            self.fail(f"cannot reach {self.url}: {exc}")
            return False
        _, message = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(
            GstWebRTC.WebRTCSDPType.ANSWER, message
        )
        self.webrtc.emit("set-remote-description", description, Gst.Promise.new())
        return False

    def _connection(self, webrtc: Any, _: object) -> None:
        state = webrtc.get_property("connection-state")
        log(f"connection {state.value_nick}")
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            self.connected_at = time.monotonic()
            print(json.dumps({"state": "connected"}), flush=True)
            if self.seconds > 0:
                GLib.idle_add(GLib.timeout_add, int(self.seconds * 1000), _quit, self.loop)
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            GLib.idle_add(self.fail, "ICE/DTLS failed")

    def _connect_deadline(self) -> bool:
        if self.connected_at is None:
            self.fail(f"not connected within {CONNECT_TIMEOUT_S} s")
        return False

    def _error(self, _: Any, message: Any) -> None:
        error, debug = message.parse_error()
        self.fail(f"{message.src.get_name()}: {error.message} ({debug})")

    def fail(self, reason: str) -> bool:
        if self.failure is None:
            self.failure = reason
        self.loop.quit()
        return False

    def close(self) -> None:
        """End the session on the server (DELETE the resource), then stop the pipeline."""
        if self.location:
            request = urllib.request.Request(
                self.location, method="DELETE", headers=self._headers()
            )
            try:
                urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S).close()
            except OSError as exc:
                log(f"DELETE failed: {exc}")
        self.pipeline.set_state(Gst.State.NULL)

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        return headers


class StampedPattern:
    """Pushes the stamped test picture into ``appsrc name=pattern`` at ``fps`` in real time: a
    vertical gradient crossed by a drifting bar (cheap to encode on a busy machine), the 64-block
    stamp along the top rows."""

    def __init__(self, appsrc: Any, width: int, height: int, fps: int) -> None:
        if width % STAMP_BITS or height % 2:
            raise SystemExit("--width must be a multiple of 64 and --height even")
        self.appsrc, self.width, self.height, self.fps = appsrc, width, height, fps
        self.block = width // STAMP_BITS
        self.shades = [40 + 150 * y // height for y in range(self.block, height)]
        self.chroma = bytes([110]) * (width * height // 4) + bytes([150]) * (width * height // 4)
        self.counter = 0
        self.start = time.monotonic()

    def push_due(self) -> bool:
        while self.start + self.counter / self.fps <= time.monotonic():
            buffer = Gst.Buffer.new_wrapped(self.frame(self.counter, int(time.time() * 1000)))
            buffer.pts = self.counter * Gst.SECOND // self.fps
            buffer.duration = Gst.SECOND // self.fps
            self.appsrc.emit("push-buffer", buffer)
            self.counter += 1
        return True

    def frame(self, counter: int, wall_ms: int) -> bytes:
        value = (counter & ((1 << COUNTER_BITS) - 1)) | ((wall_ms & CLOCK_MASK) << COUNTER_BITS)
        stamp = b"".join(
            bytes([235 if value >> bit & 1 else 16]) * self.block for bit in range(STAMP_BITS)
        )
        bar = self.block * 4
        left = counter * 4 % (self.width - bar)
        right = self.width - bar - left
        rows = (
            bytes([y]) * left + bytes([235 - y]) * bar + bytes([y]) * right for y in self.shades
        )
        return stamp * self.block + b"".join(rows) + self.chroma


class Player:
    """Counts the decoded frames reaching ``appsink name=frames`` (GRAY8) and reads their stamps."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self.counters: list[int] = []
        self.ages_ms: list[int] = []
        self.first_at: float | None = None
        self.last_at: float | None = None
        webrtc = pipeline.get_by_name("webrtc")
        webrtc.connect("pad-added", self._rtp_pad)
        pipeline.get_by_name("frames").connect("new-sample", self._sample)

    def _rtp_pad(self, _: Any, pad: Any) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decode = Gst.ElementFactory.make("decodebin")
        decode.connect("pad-added", self._decoded_pad)
        decode.connect("deep-element-added", _ask_for_keyframes)
        self.pipeline.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    def _decoded_pad(self, _: Any, pad: Any) -> None:
        if pad.query_caps(None).to_string().startswith("video/"):
            convert = self.pipeline.get_by_name("convert")
            pad.link(convert.get_static_pad("sink"))

    def _sample(self, sink: Any) -> Any:
        sample = sink.emit("pull-sample")
        caps = sample.get_caps().get_structure(0)
        width, height = caps.get_value("width"), caps.get_value("height")
        now = time.monotonic()
        self.first_at = self.first_at or now
        self.last_at = now
        self.frames += 1
        self.size = (width, height)
        stride = (width + 3) // 4 * 4
        block = width / STAMP_BITS
        row = sample.get_buffer().extract_dup(int(block / 2) * stride, width)
        value = sum(1 << bit for bit in range(STAMP_BITS) if row[int((bit + 0.5) * block)] > 128)
        self.counters.append(value & ((1 << COUNTER_BITS) - 1))
        self.ages_ms.append((int(time.time() * 1000) - (value >> COUNTER_BITS)) & CLOCK_MASK)
        return Gst.FlowReturn.OK

    def report(self) -> dict[str, Any]:
        span = (self.last_at or 0.0) - (self.first_at or 0.0)
        ages = sorted(self.ages_ms)
        return {
            "frames": self.frames,
            "width": self.size[0] if self.size else None,
            "height": self.size[1] if self.size else None,
            "fps": round((self.frames - 1) / span, 1) if span > 0 else 0.0,
            "distinct_stamps": len(set(self.counters)),
            "in_order": all(b > a for a, b in zip(self.counters, self.counters[1:], strict=False)),
            "median_age_ms": ages[len(ages) // 2] if ages else None,
        }


def _ask_for_keyframes(_: Any, __: Any, element: Any) -> None:
    """A depayloader that lost packets asks the sender for a keyframe (RTCP PLI) and drops what
    cannot be decoded until it comes; GStreamer 1.22 does neither by default."""
    if element.find_property("request-keyframe") is not None:
        element.set_property("request-keyframe", True)
        element.set_property("wait-for-keyframe", True)


def log(text: str) -> None:
    print(f"gst_whip: {text}", file=sys.stderr, flush=True)


def publish_pipeline(args: argparse.Namespace) -> str:
    if args.source:
        source = f"{args.source} ! videoconvert ! videoscale ! videorate"
    else:
        source = "appsrc name=pattern is-live=true format=time"
    raw = f"video/x-raw,format=I420,width={args.width},height={args.height},framerate={args.fps}/1"
    encode = ENCODERS[args.codec].format(bps=args.kbps * 1000, gop=args.fps * 2)
    return (
        f"{source} ! {raw} ! queue max-size-buffers=2 leaky=downstream ! {encode}"
        f" ! {RTP_CAPS[args.codec]} ! webrtc. webrtcbin name=webrtc bundle-policy=max-bundle"
    )


PLAY_PIPELINE = (
    "webrtcbin name=webrtc bundle-policy=max-bundle"
    " videoconvert name=convert ! video/x-raw,format=GRAY8"
    " ! appsink name=frames emit-signals=true sync=false max-buffers=4 drop=true"
)


TOKEN_VARIABLE = "ENDOLINK_TOKEN"


def run(args: argparse.Namespace) -> int:
    Gst.init(None)
    loop = GLib.MainLoop()
    playing = args.command == "play"
    pipeline = Gst.parse_launch(PLAY_PIPELINE if playing else publish_pipeline(args))
    session = Session(
        pipeline, args.url, args.token or os.environ[TOKEN_VARIABLE], loop, args.seconds
    )
    if args.ice_address:
        session.gather_on(args.ice_address)
    player = Player(pipeline) if playing else None
    pattern = None
    if playing:
        caps = Gst.Caps.from_string(PLAY_CAPS)
        direction = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
        session.webrtc.emit("add-transceiver", direction, caps)
    else:
        session.webrtc.connect("on-new-transceiver", _send_only)
        appsrc = pipeline.get_by_name("pattern")
        if appsrc is not None:
            pattern = StampedPattern(appsrc, args.width, args.height, args.fps)
    for signum in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, _quit, loop)
    pipeline.set_state(Gst.State.PLAYING)
    if pattern is not None:
        pattern.start = time.monotonic()
        GLib.timeout_add(5, pattern.push_due)
    loop.run()
    session.close()
    report: dict[str, Any] = (
        player.report() if player else {"frames_sent": pattern.counter if pattern else None}
    )
    report["connected"] = session.connected_at is not None
    if session.failure:
        report["error"] = session.failure
        log(session.failure)
    print(json.dumps(report), flush=True)
    return 1 if session.failure or not report["connected"] else 0


def _send_only(_: Any, transceiver: Any) -> None:
    transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)


def _quit(loop: Any) -> bool:
    loop.quit()
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("publish", "WHIP: send video"), ("play", "WHEP: receive video")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("url", help="the WHIP (/whip/ID) or WHEP (/whep/ID) endpoint")
        command.add_argument(
            "--token",
            help=f"the Bearer token of the link (default ${TOKEN_VARIABLE}: keeps it out of `ps`)",
        )
        command.add_argument(
            "--seconds",
            type=float,
            default=0,
            help="stop this long after connecting (0: at Ctrl-C)",
        )
        command.add_argument(
            "--ice-address",
            action="append",
            help="gather ICE candidates on this local IP only (repeatable; needs gir1.2-nice-0.1)",
        )
    publish = commands.choices["publish"]
    publish.add_argument("--codec", choices=sorted(ENCODERS), default="VP8")
    publish.add_argument("--source", help="a GStreamer source, e.g. 'v4l2src device=/dev/video0'")
    publish.add_argument("--width", type=int, default=1280)
    publish.add_argument("--height", type=int, default=720)
    publish.add_argument("--fps", type=int, default=30)
    publish.add_argument("--kbps", type=int, default=2500, help="video bitrate")
    args = parser.parse_args(argv)
    if not (args.token or os.environ.get(TOKEN_VARIABLE)):
        parser.error(f"a token is needed: ${TOKEN_VARIABLE} (or --token)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
