// Surgeon / observer page: WHEP playback of the clinic's endoscope feed, the surgeon's talk-back
// microphone (WHIP, audio only), live annotation over the video (annotations.js: tools, freeze
// frame, snapshots; observers only see the marks), stats, presence and chat.

import { endoscopeStats, joinRoom, loadConsultation, showConnectionState } from "./consultation.js";
import { LinkBanner, serverLink } from "./link.js";
import { FeedPlayer, Publisher } from "./media.js";
import { startPage } from "./page.js";
import { iceServersFrom } from "./session.js";
import { $, Notices, roleLabel, setChip } from "./ui.js";

const STALL_MS = 2500;
const TALK_LOST = "reconnecting – the clinic cannot hear you";

const notices = new Notices($("#notices"));
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
  feedReason: null, // why the endoscope feed is offline: "ended" (Stop) or "lost"; kept across a restart
  banner: null,
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
    state.banner = new LinkBanner(notices, linkCondition);
    serverLink.addEventListener("state", () => updateOverlay());
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
    setFeedLive(endoscope?.state === "live", endoscope?.reason);
    if (endoscope?.state === "live") state.player?.feedLive();
  });
  room.addEventListener("state", () => updateOverlay());
  room.addEventListener("feed", (event) => {
    const { feed, state: feedState, reason } = event.detail;
    if (feed === "endoscope") {
      setFeedLive(feedState === "live", reason);
      if (feedState === "live") state.player?.feedLive();
      else state.player?.feedOffline();
    } else if (feed === "talkback" && feedState === "offline" && state.talk && state.talk.phase === "connected") {
      notices.show("talk", "The server reports your talk-back as offline; it reconnects automatically.", "warn");
    }
  });
  room.connect();
}

function setFeedLive(live, reason = null) {
  state.feedLive = live;
  // A fresh server knows no reason: what we knew before it restarted still holds.
  state.feedReason = live ? null : (reason ?? state.feedReason);
  showPublisherState(live ? "live" : "offline");
  updateOverlay();
}

function showPublisherState(text) {
  els.publisherState.textContent = text;
  els.publisherState.dataset.state = text;
  els.publisherChip.dataset.tone = { live: "live", unknown: "warn" }[text] || "idle";
}

/** Whether the server is out of reach: the room is down after having been open, or probes fail. */
function serverLost() {
  return !serverLink.reachable || (state.room?.everOpen && state.room.state !== "open");
}

/**
 * The one connection condition the surgeon is told about (LinkBanner), or null: the server out
 * of reach, the clinic's stream ended on purpose or lost, our own video connection lost.
 */
function linkCondition() {
  if (serverLost()) return { key: "server", text: "Connection to the server lost — reconnecting…", trouble: true };
  if (receivingFrames() || ["refused", "expired"].includes(state.player?.phase)) return null;
  if (!state.feedLive) {
    if (state.feedReason === "ended") return { key: "ended", text: "The clinic ended the stream.", level: "info" };
    if (state.feedReason === "lost" || state.lastFrameAt > 0) {
      return { key: "clinic-lost", text: "Clinic's connection lost — reconnecting…", trouble: true };
    }
    return null;
  }
  if (state.lastFrameAt > 0) return { key: "video", text: "Video connection lost — reconnecting…", trouble: true };
  return null;
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
  // Frames still trickling in from before the server vanished do not make the feed live.
  const frames = receivingFrames() && !serverLost();
  els.liveBadge.hidden = !frames;
  state.banner?.update();
  if (frames) {
    els.overlay.hidden = true;
    els.overlay.dataset.reason = "";
    // The room may lag behind the media: frames arriving means the publisher is live.
    if (!state.feedLive) showPublisherState("live");
    return;
  }
  const condition = linkCondition();
  let text;
  let reason;
  const phase = state.player?.phase;
  if (phase === "refused" || phase === "expired") {
    reason = "error";
    text = playerErrorText(state.player);
  } else if (condition) {
    // The same words as the banner: never two different stories about one interruption.
    reason = condition.key;
    text = condition.text;
  } else if (!state.feedLive) {
    reason = "offline";
    text = "Publisher offline – waiting for the clinic to start the endoscope stream.";
  } else {
    reason = "connecting";
    text = "Publisher live – connecting to the stream…";
  }
  if (serverLost()) showPublisherState("unknown");
  else if (!state.feedLive && els.publisherState.dataset.state !== "offline") showPublisherState("offline");
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
    const { phase, connectionState, error } = event.detail;
    showConnectionState(connectionState);
    // Interruptions are the banner's (linkCondition); refusals get their own notice.
    if (phase === "connected") {
      notices.clear("player");
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
  serverLink.addEventListener("state", (event) => {
    if (!event.detail.reachable && state.talk) setChip(els.talkChip, TALK_LOST, "warn");
  });
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
    const { phase, connectionState, error } = event.detail;
    if (phase === "connected") {
      setChip(els.talkChip, "clinic hears you", "live");
      notices.clear("talk");
    } else if (phase === "connecting" || phase === "negotiated") {
      setChip(els.talkChip, "connecting microphone…", "warn");
    } else if (phase === "retrying" || phase === "unstable") {
      setChip(els.talkChip, TALK_LOST, "warn");
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
