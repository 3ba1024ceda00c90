// Surgeon / observer page: WHEP playback of the clinic's endoscope feed, the surgeon's talk-back
// microphone (WHIP, audio only), live annotation over the video (annotations.js: tools, freeze
// frame, snapshots; observers only see the marks), stats, presence and chat.

import { endoscopeStats, joinRoom, loadConsultation, showConnectionState } from "./consultation.js";
import { FeedPlayer, Publisher } from "./media.js";
import { startPage } from "./page.js";
import { FORCED_RELAY_NOTICE, forceRelay, iceServersFrom } from "./session.js";
import { $, Notices, roleLabel, setChip } from "./ui.js";

const STALL_MS = 2500;

const notices = new Notices($("#notices"));
if (forceRelay()) notices.show("relay", FORCED_RELAY_NOTICE);
const els = {
  video: $("#remote-video"),
  frame: $("#video-frame"),
  overlay: $("#remote-overlay"),
  overlayText: $("#remote-overlay-text"),
  liveBadge: $("#live-badge"),
  publisherChip: $("#publisher-chip"),
  publisherState: $('[data-testid="publisher-state"]'),
  talk: $("#talk-toggle"),
  talkMic: $("#talk-mic"),
  talkMicLabel: $("#talk-mic-label"),
  talkChip: $("#talk-chip"),
  unmute: $("#unmute"),
  fullscreen: $("#fullscreen"),
  observerHint: $("#observer-hint"),
};

const state = {
  token: null,
  session: null,
  cid: null,
  room: null,
  player: null,
  annotations: null,
  talk: null, // Publisher while talking
  micStream: null,
  feedLive: false,
  lastFrameAt: 0,
  frames: 0,
  firstFrameAt: null,
};

// Read-only handles for diagnostics and the browser tests (no token, no patient data).
window.endolink = Object.freeze({
  page: "surgeon",
  get playerPc() {
    return state.player?.pc ?? null;
  },
  get talkPc() {
    return state.talk?.pc ?? null;
  },
  get role() {
    return state.session?.role ?? null;
  },
  get framesRendered() {
    return state.frames;
  },
  get annotations() {
    return state.annotations?.debug ?? null;
  },
});

startPage({
  key: "surgeon",
  roles: ["surgeon", "observer"],
  start: async ({ token, session }) => {
    state.token = token;
    state.session = session;
    state.cid = session.consultation;
    setChip($("#role-chip"), roleLabel(session.role), "idle");
    document.body.dataset.role = session.role;
    loadConsultation(session, token, notices);
    setupTalk();
    setupVideo();
    setupRoom();
    startPlayer();
  },
});

// ---------------------------------------------------------------- room

function setupRoom() {
  const { room, annotations } = joinRoom({
    page: "surgeon",
    session: state.session,
    token: state.token,
    notices,
    video: els.video,
    galleryHost: $('[data-testid="snapshots"]'),
  });
  state.room = room;
  state.annotations = annotations;
  room.addEventListener("welcome", () => {
    const endoscope = room.feeds.endoscope;
    setFeedLive(endoscope?.state === "live");
    if (endoscope?.state === "live") state.player?.feedLive();
  });
  room.addEventListener("feed", (event) => {
    const { feed, state: feedState } = event.detail;
    if (feed === "endoscope") {
      setFeedLive(feedState === "live");
      if (feedState === "live") state.player?.feedLive();
      else state.player?.feedOffline();
    } else if (feed === "talkback" && feedState === "offline" && state.talk && state.talk.phase === "connected") {
      notices.show("talk", "The server reports your talk-back as offline; it reconnects automatically.", "warn");
    }
  });
  room.connect();
}

function setFeedLive(live) {
  state.feedLive = live;
  els.publisherState.textContent = live ? "live" : "offline";
  els.publisherState.dataset.state = live ? "live" : "offline";
  els.publisherChip.dataset.tone = live ? "live" : "idle";
  updateOverlay();
}

// ---------------------------------------------------------------- video

function setupVideo() {
  const onFrame = (now) => {
    state.lastFrameAt = performance.now();
    state.frames += 1;
    if (state.firstFrameAt == null) state.firstFrameAt = state.lastFrameAt;
    updateOverlay();
    els.video.requestVideoFrameCallback(onFrame);
  };
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    els.video.requestVideoFrameCallback(onFrame);
  } else {
    els.video.addEventListener("timeupdate", () => onFrame(performance.now()));
  }
  // Frames stop arriving without any event: check regularly.
  setInterval(updateOverlay, 1000);

  els.unmute.addEventListener("click", () => {
    els.video.muted = false;
    els.video.play().then(
      () => {
        els.unmute.hidden = true;
      },
      () => {},
    );
  });
  els.fullscreen.addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    // The stage (video and drawing tools), so the surgeon can still switch tools.
    else (els.frame.closest(".stage") || els.frame).requestFullscreen?.().catch(() => {});
  });
}

function receivingFrames() {
  return state.lastFrameAt > 0 && performance.now() - state.lastFrameAt < STALL_MS;
}

function updateOverlay() {
  const frames = receivingFrames();
  els.liveBadge.hidden = !frames;
  if (frames) {
    els.overlay.hidden = true;
    els.overlay.dataset.reason = "";
    // The room may lag behind the media: frames arriving means the publisher is live.
    if (!state.feedLive) {
      els.publisherState.textContent = "live";
      els.publisherState.dataset.state = "live";
      els.publisherChip.dataset.tone = "live";
    }
    return;
  }
  let text;
  let reason;
  const phase = state.player?.phase;
  if (phase === "refused" || phase === "expired") {
    reason = "error";
    text = playerErrorText(state.player);
  } else if (!state.feedLive) {
    reason = "offline";
    text = "Publisher offline – waiting for the clinic to start the endoscope stream.";
    if (els.publisherState.dataset.state === "live") setFeedLive(false);
  } else if (state.lastFrameAt > 0) {
    reason = "stalled";
    text = "Video interrupted – reconnecting…";
  } else {
    reason = "connecting";
    text = "Publisher live – connecting to the stream…";
  }
  els.overlay.hidden = false;
  els.overlay.dataset.reason = reason;
  if (els.overlayText.textContent !== text) els.overlayText.textContent = text;
}

function playerErrorText(player) {
  const err = player?.error;
  if (player?.phase === "expired") return "This link has expired: ask the consultation coordinator for a new one.";
  return `The server refused the video: ${err?.reason || err?.message || "unknown reason"}${
    err?.status ? ` (HTTP ${err.status})` : ""
  }.`;
}

function startPlayer() {
  const player = new FeedPlayer({
    endpoint: `/whep/${encodeURIComponent(state.cid)}?feed=endoscope`,
    token: state.token,
    iceServers: iceServersFrom(state.session),
    kinds: ["video", "audio"],
    onTrack: (event, stream) => {
      if (els.video.srcObject !== stream) els.video.srcObject = stream;
      playVideo();
    },
    stats: endoscopeStats(state.room),
  });
  state.player = player;
  player.addEventListener("state", (event) => {
    const { phase, connectionState, error, delayMs, reason } = event.detail;
    showConnectionState(connectionState);
    if (phase === "connected") {
      notices.clear("player");
    } else if (phase === "retrying") {
      notices.show(
        "player",
        `Video connection lost (${reason || "network"}); reconnecting in ${Math.ceil(delayMs / 1000)} s.`,
        "warn",
      );
    } else if (phase === "unstable") {
      notices.show("player", "The video connection is unstable; waiting for it to recover…", "warn");
    } else if (phase === "refused" || phase === "expired") {
      notices.show("player", playerErrorText(player), "error");
      if (error?.status === 403 || phase === "expired") showConnectionState("refused");
    }
    updateOverlay();
  });
  player.addEventListener("receiving", () => updateOverlay());
  player.start();
}

function playVideo() {
  els.video.play().catch(() => {
    // Autoplay with sound blocked: play muted and offer to unmute.
    els.video.muted = true;
    els.unmute.hidden = false;
    els.video.play().catch(() => {});
  });
}

// ---------------------------------------------------------------- talk-back

function setupTalk() {
  const canTalk = state.session.role === "surgeon" && state.session.may_publish === true;
  els.talk.hidden = !canTalk;
  els.talkChip.hidden = !canTalk;
  els.observerHint.hidden = state.session.role !== "observer";
  if (!canTalk) return; // observers: the control stays hidden (and out of the a11y tree)
  els.talk.addEventListener("click", () => (state.talk ? stopTalk() : startTalk()));
  els.talkMic.addEventListener("change", async () => {
    if (!state.talk) return;
    const stream = await openMic(els.talkMic.value);
    if (stream) {
      const old = state.micStream;
      state.micStream = stream;
      await state.talk.replaceStream(stream);
      old?.getTracks().forEach((t) => t.stop());
    }
  });
}

async function openMic(deviceId = null) {
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: {
        echoCancellation: true,
        noiseSuppression: true,
        autoGainControl: true,
        ...(deviceId ? { deviceId: { exact: deviceId } } : {}),
      },
      video: false,
    });
  } catch (err) {
    const text =
      err?.name === "NotAllowedError"
        ? "Microphone access is blocked: allow it for this site (icon in the address bar) to talk to the clinic."
        : err?.name === "NotFoundError"
          ? "No microphone found: connect a headset to talk to the clinic."
          : `The microphone could not be opened (${err?.name || "error"}).`;
    notices.show("talk", text, "error");
    setChip(els.talkChip, "microphone unavailable", "bad");
    return null;
  }
}

async function fillMics(current) {
  let devices = [];
  try {
    devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  } catch {
    return;
  }
  els.talkMic.replaceChildren();
  devices.forEach((d, i) => {
    const option = document.createElement("option");
    option.value = d.deviceId;
    option.textContent = d.label || `Microphone ${i + 1}`;
    els.talkMic.append(option);
  });
  if (current) els.talkMic.value = current;
  const show = devices.length > 1;
  els.talkMic.hidden = !show;
  els.talkMicLabel.hidden = !show;
}

async function startTalk() {
  els.talk.disabled = true;
  setChip(els.talkChip, "opening microphone…", "warn");
  const stream = await openMic(els.talkMic.value || null);
  els.talk.disabled = false;
  if (!stream) return;
  state.micStream = stream;
  fillMics(stream.getAudioTracks()[0]?.getSettings().deviceId);
  const talk = new Publisher({
    endpoint: `/whip/${encodeURIComponent(state.cid)}`,
    token: state.token,
    iceServers: iceServersFrom(state.session),
    stream,
    kinds: ["audio"],
  });
  state.talk = talk;
  els.talk.setAttribute("aria-pressed", "true");
  els.talk.textContent = "Stop talking";
  els.talk.classList.add("active");
  talk.addEventListener("state", (event) => {
    if (talk !== state.talk) return;
    const { phase, connectionState, error, delayMs } = event.detail;
    if (phase === "connected") {
      setChip(els.talkChip, "clinic hears you", "live");
      notices.clear("talk");
    } else if (phase === "connecting" || phase === "negotiated") {
      setChip(els.talkChip, "connecting microphone…", "warn");
    } else if (phase === "retrying") {
      setChip(els.talkChip, "reconnecting…", "warn");
      notices.show("talk", `Talk-back interrupted; reconnecting in ${Math.ceil(delayMs / 1000)} s.`, "warn");
    } else if (phase === "refused" || phase === "expired") {
      const reason = error?.reason || error?.message || phase;
      notices.show("talk", `Talk-back refused by the server: ${reason}.`, "error");
      setChip(els.talkChip, "talk-back refused", "bad");
      stopTalk({ keepChip: true });
    } else if (connectionState === "failed") {
      setChip(els.talkChip, "talk-back failed", "bad");
    }
  });
  await talk.start();
}

async function stopTalk({ keepChip = false } = {}) {
  const talk = state.talk;
  state.talk = null;
  els.talk.setAttribute("aria-pressed", "false");
  els.talk.textContent = "Talk to the clinic";
  els.talk.classList.remove("active");
  if (!keepChip) setChip(els.talkChip, "microphone off", "idle");
  if (talk) await talk.stop();
  state.micStream?.getTracks().forEach((t) => t.stop());
  state.micStream = null;
}
