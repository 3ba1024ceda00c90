// Surgeon / observer page: WHEP playback of the clinic's endoscope feed, the surgeon's talk-back
// microphone (talkback.js), live annotation over the video (annotations.js: tools, freeze
// frame, snapshots; observers only see the marks), stats, presence and chat.

import { endoscopeStats, joinRoom, loadConsultation, showConnectionState } from "./consultation.js";
import { LinkBanner, serverLink } from "./link.js";
import { FeedPlayer } from "./media.js";
import { connectWithName } from "./names.js";
import { startPage } from "./page.js";
import { FORCED_RELAY_NOTICE, forceRelay, iceServersFrom } from "./session.js";
import { currentTalk, setupTalk } from "./talkback.js";
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
  unmute: $("#unmute"),
  fullscreen: $("#fullscreen"),
};

const state = {
  token: null,
  session: null,
  cid: null,
  room: null,
  player: null,
  annotations: null,
  feedLive: false,
  feedLiveAt: 0,
  interrupted: false, // trouble was shown and the picture has not moved since
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
    return currentTalk()?.pc ?? null;
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
    setupTalk({ session, cid: state.cid, token, notices });
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
    } else if (feed === "talkback" && feedState === "offline" && currentTalk()?.phase === "connected") {
      notices.show("talk", "The server reports your talk-back as offline; it reconnects automatically.", "warn");
    }
  });
  connectWithName(room, state.session);
}

function setFeedLive(live, reason = null) {
  if (live && !state.feedLive) state.feedLiveAt = performance.now();
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
 * of reach, the clinic's stream ended on purpose or lost, our own video connection lost. After
 * any trouble the picture counts as interrupted until frames arrive again.
 */
function linkCondition() {
  const condition = currentCondition();
  if (condition?.trouble) state.interrupted = true;
  return condition;
}

function currentCondition() {
  if (serverLost()) return { key: "server", text: "Connection to the server lost — reconnecting…", trouble: true };
  if (receivingFrames() || ["refused", "expired"].includes(state.player?.phase)) return null;
  if (!state.feedLive) {
    if (state.feedReason === "ended") return { key: "ended", text: "The clinic ended the stream.", level: "info" };
    if (state.feedReason === "lost" || state.lastFrameAt > 0) {
      return { key: "clinic-lost", text: "Clinic's connection lost — reconnecting…", trouble: true };
    }
    return null;
  }
  // Live: frames that stopped during this live period, or not back yet after trouble.
  if (state.interrupted || state.lastFrameAt > state.feedLiveAt) {
    return { key: "video", text: "Video connection lost — reconnecting…", trouble: true };
  }
  return null;
}

// ---------------------------------------------------------------- video

function setupVideo() {
  const onFrame = (now) => {
    state.lastFrameAt = performance.now();
    state.frames += 1;
    state.interrupted = false;
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
