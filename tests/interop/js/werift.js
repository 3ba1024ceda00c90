// werift (npm, WebRTC in pure TypeScript) publishing to or playing from EndoLink, for tests/interop:
//   ENDOLINK_TOKEN=... node werift.js publish URL CODEC SECONDS
//   ENDOLINK_TOKEN=... node werift.js play URL CODEC SECONDS FRAMES OUT
// CODEC: VP8 or H264. werift has no encoder: publish forwards RTP it is sent on UDP (it prints
// "rtp 127.0.0.1:PORT" once connected) with its own SSRC, payload type and SRTP. play reassembles
// the received RTP into frames and writes them to OUT (VP8: IVF; H.264: Annex-B) for the test
// to decode. Prints one JSON line: {status, reason, connected, forwarded | frames, keyframes}.
"use strict";

const dgram = require("node:dgram");
const fs = require("node:fs");
const {
  MediaStreamTrack,
  RTCPeerConnection,
  RTCRtpCodecParameters,
  dePacketizeRtpPackets,
} = require("werift");
const { connect, connected, hangUp, playUntil, run, sleep } = require("./whip");

const FEEDBACK = [{ type: "nack" }, { type: "nack", parameter: "pli" }];
const CODECS = {
  VP8: { mimeType: "video/VP8", clockRate: 90000, rtcpFeedback: FEEDBACK },
  H264: {
    mimeType: "video/H264",
    clockRate: 90000,
    rtcpFeedback: FEEDBACK,
    parameters: "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
  },
};

async function publish(pc, url, seconds) {
  const track = new MediaStreamTrack({ kind: "video" });
  pc.addTransceiver(track, { direction: "sendonly" });
  const session = await connect(pc, url);
  if (session.status !== 201) {
    return session;
  }
  const up = await connected(pc, 10000);
  const socket = dgram.createSocket("udp4");
  let forwarded = 0;
  socket.on("message", (packet) => {
    track.writeRtp(packet);
    forwarded += 1;
  });
  await new Promise((resolve) => socket.bind(0, "127.0.0.1", resolve));
  process.stdout.write(`rtp 127.0.0.1:${socket.address().port}\n`);
  await sleep(up ? seconds * 1000 : 0);
  socket.close();
  await hangUp(session.location);
  return { status: 201, connected: up, forwarded };
}

async function play(pc, url, codec, seconds, frames, out) {
  const got = { frames: [], keyframes: 0, dropped: 0 };
  let packets = [];
  let expected = null; // the sequence number after the last frame's marker packet
  let broken = true; // a frame was incomplete: drop the ones after it until a keyframe
  pc.addTransceiver("video", { direction: "recvonly" }).onTrack.subscribe((track) => {
    track.onReceiveRtp.subscribe((rtp) => {
      packets.push(rtp);
      if (!rtp.header.marker) {
        return;
      }
      const frame = packets.filter((p) => p.header.timestamp === rtp.header.timestamp);
      frame.sort((a, b) => ((a.header.sequenceNumber - b.header.sequenceNumber + 98304) % 65536) - 32768);
      packets = [];
      // No jitter buffer here: a frame is whole when its packets follow the last marker without
      // a gap (a lost or late packet breaks it, and every frame after it until a keyframe).
      const numbers = frame.map((p) => p.header.sequenceNumber);
      const whole =
        numbers[0] === expected && numbers.every((n, i) => i === 0 || n === (numbers[i - 1] + 1) % 65536);
      expected = (rtp.header.sequenceNumber + 1) % 65536;
      const { data, isKeyframe } = dePacketizeRtpPackets(codec === "VP8" ? "vp8" : "MPEG4/ISO/AVC", frame);
      broken = !whole || (broken && !isKeyframe);
      if (broken) {
        got.dropped += 1;
        return;
      }
      got.keyframes += isKeyframe ? 1 : 0;
      got.frames.push(data);
    });
  });
  const { session, up } = await playUntil(pc, url, seconds, () => got.frames.length >= frames);
  if (session.status !== 201) {
    return session;
  }
  fs.writeFileSync(out, codec === "VP8" ? ivf(got.frames) : Buffer.concat(got.frames));
  const { keyframes, dropped } = got;
  return { status: 201, connected: up, frames: got.frames.length, keyframes, dropped };
}

// VP8 frames in an IVF file (the size is read from the first keyframe's header).
function ivf(frames) {
  const header = Buffer.alloc(32);
  header.write("DKIF", 0);
  header.writeUInt16LE(32, 6);
  header.write("VP80", 8);
  if (frames.length > 0) {
    header.writeUInt16LE(frames[0].readUInt16LE(6) & 0x3fff, 12);
    header.writeUInt16LE(frames[0].readUInt16LE(8) & 0x3fff, 14);
  }
  header.writeUInt32LE(30, 16);
  header.writeUInt32LE(1, 20);
  header.writeUInt32LE(frames.length, 24);
  const parts = [header];
  frames.forEach((frame, index) => {
    const frameHeader = Buffer.alloc(12);
    frameHeader.writeUInt32LE(frame.length, 0);
    frameHeader.writeBigUInt64LE(BigInt(index), 4);
    parts.push(frameHeader, frame);
  });
  return Buffer.concat(parts);
}

const [mode, url, codec, seconds, frames, out] = process.argv.slice(2);
const pc = new RTCPeerConnection({
  iceServers: [],
  // The test server listens on loopback only; werift leaves 127.0.0.1 out of its candidates.
  iceAdditionalHostAddresses: ["127.0.0.1"],
  codecs: { video: [new RTCRtpCodecParameters(CODECS[codec])], audio: [] },
});
run(pc, () =>
  mode === "publish"
    ? publish(pc, url, Number(seconds))
    : play(pc, url, codec, Number(seconds), Number(frames), out),
);
