// libwebrtc (through @roamhq/wrtc) publishing to or playing from EndoLink, for tests/interop:
//   ENDOLINK_TOKEN=... node wrtc.js publish URL SECONDS
//   ENDOLINK_TOKEN=... node wrtc.js play URL SECONDS FRAMES
// publish: libwebrtc encodes stamped I420 frames (VP8; this libwebrtc has no H.264 encoder).
// play: libwebrtc decodes; the stamp's counter is read from each frame, until FRAMES or SECONDS.
// Prints one JSON line: {status, reason, connected, sent | frames, width, height, counters}.
"use strict";

const { RTCPeerConnection, nonstandard } = require("@roamhq/wrtc");
const { connect, connected, hangUp, playUntil, run, sleep } = require("./whip");
const { i420Frame, readCounter } = require("./stamp");

const WIDTH = 640;
const HEIGHT = 480;
const FPS = 30;

async function publish(pc, url, seconds) {
  const source = new nonstandard.RTCVideoSource();
  const track = source.createTrack();
  pc.addTransceiver(track, { direction: "sendonly" });
  const session = await connect(pc, url);
  if (session.status !== 201) {
    track.stop();
    return session;
  }
  const up = await connected(pc, 10000);
  let sent = 0;
  const start = Date.now();
  while (up && Date.now() - start < seconds * 1000) {
    source.onFrame(i420Frame(WIDTH, HEIGHT, sent));
    sent += 1;
    await sleep(Math.max(0, start + (sent * 1000) / FPS - Date.now()));
  }
  track.stop();
  await hangUp(session.location);
  return { status: 201, connected: up, sent };
}

async function play(pc, url, seconds, frames) {
  const seen = { counters: [], width: 0, height: 0 };
  const sinks = [];
  pc.ontrack = (event) => {
    const sink = new nonstandard.RTCVideoSink(event.track);
    sink.onframe = ({ frame }) => {
      seen.counters.push(readCounter(frame.data, frame.width));
      seen.width = frame.width;
      seen.height = frame.height;
    };
    sinks.push(sink);
  };
  pc.addTransceiver("video", { direction: "recvonly" });
  const { session, up } = await playUntil(pc, url, seconds, () => seen.counters.length >= frames);
  if (session.status !== 201) {
    return session;
  }
  sinks.forEach((sink) => sink.stop());
  return { status: 201, connected: up, frames: seen.counters.length, ...seen };
}

const [mode, url, seconds, frames] = process.argv.slice(2);
const pc = new RTCPeerConnection({ iceServers: [] });
run(pc, () =>
  mode === "publish"
    ? publish(pc, url, Number(seconds))
    : play(pc, url, Number(seconds), Number(frames)),
);
