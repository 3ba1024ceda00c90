// Surgeon / observer page: WHEP playback of the clinic's endoscope feed, the surgeon's talk-back
// microphone (talkback.js), live annotation over the video (annotations.js: tools, freeze
// frame, snapshots; observers only see the marks), stats, presence and chat.

import { refusalText } from "./api.js";
import { endoscopeStats, joinRoom, loadConsultation, showConnectionState } from "./consultation.js";
import { LinkBanner, serverLink } from "./link.js";
import { FeedPlayer } from "./media.js";
import { msg, setText } from "./i18n.js";
import { connectWithName } from "./names.js";
import { startPage } from "./page.js";
import { FORCED_RELAY_NOTICE, forceRelay, iceServersFrom } from "./session.js";
import { setupPictureBadge } from "./picture.js";
import { qualityEndpoint, sessionOf, setupQuality } from "./quality.js";
import { SurgeonStills } from "./stills.js";
import { currentTalk, setupTalk } from "./talkback.js";
import { $, Notices, roleLabel, setChip } from "./ui.js";

const STALL_MS = 2500;
const ENDPOINT = (cid) => `/whep/${encodeURIComponent(cid)}?feed=endoscope`;

const notices = new Notices($("#notices"));
// Notes about the picture itself (its quality, the camera outside the body, a reduced size) lie over
// it: one appearing mid-consultation must not push the video down under a pen that is drawing, nor
// the tools off a phone's screen.
const pictureNotes = new Notices($("#picture-notes"));
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
  stills: null, // SurgeonStills
  feedLive: false,
  feedLiveAt: 0,
  interrupted: false, // trouble was shown and the picture has not moved since
  feedReason: null, // why the endoscope feed is offline: "ended" (Stop) or "lost"; kept across a restart
  banner: null,
  lastFrameAt: 0,
  frames: 0,
  firstFrameAt: null,
  videoState: "new", // the video connection's state, or "refused"
  quality: null, // the picker and the reduced-quality notice (quality.js)
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
  get stills() {
    return state.stills?.debug ?? null;
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
    state.quality = setupQuality({
      select: $("#quality"),
      badge: $("#quality-badge"),
      room: state.room,
      notices: pictureNotes,
      player: () => state.player,
      reopen: (quality) => {
        state.player.endpoint = qualityEndpoint(ENDPOINT(state.cid), quality);
        state.player.attempt = 0;
        state.player.connect();
      },
    });
    setupPictureBadge({ badge: $("#picture-badge"), room: state.room });
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
    pictureNotes,
    video: els.video,
    galleryHost: $('[data-testid="snapshots"]'),
  });
  state.room = room;
  state.annotations = annotations;
  annotations.placements.session = () => sessionOf(state.player); // its `media-clock`
  state.stills = new SurgeonStills({
    room,
    annotations,
    buttons: { toggle: $("#stills-toggle"), next: $("#stills-next"), show: $("#stills-show") },
    notices,
  });
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
      notices.show("talk", msg("surgeon.talkOffline"), "warn");
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

/** The clinic's stream chip: `feedState` "live" | "offline" | "unknown" (kept in data-state). */
function showPublisherState(feedState) {
  setText(els.publisherState, msg(`surgeon.feed.${feedState}`));
  els.publisherState.dataset.state = feedState;
  els.publisherChip.dataset.tone = { live: "live", unknown: "warn" }[feedState] || "idle";
}

/** The picture chip: the video connection's state, "live" only while frames arrive. */
function showVideoState() {
  const connection = state.videoState;
  const frames = connection === "connected" && receivingFrames();
  showConnectionState("surgeon", connection, frames ? "live" : undefined);
  if (frames) setText($('[data-testid="connection-state"]'), msg("media.surgeon.live"));
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
  if (serverLost()) return { key: "server", text: msg("link.serverLost"), trouble: true };
  if (receivingFrames() || ["refused", "expired"].includes(state.player?.phase)) return null;
  if (!state.feedLive) {
    if (state.feedReason === "ended") return { key: "ended", text: msg("surgeon.ended"), level: "info" };
    if (state.feedReason === "lost" || state.lastFrameAt > 0) {
      return { key: "clinic-lost", text: msg("surgeon.clinicLost"), trouble: true };
    }
    return null;
  }
  // Live: frames that stopped during this live period, or not back yet after trouble.
  if (state.interrupted || state.lastFrameAt > state.feedLiveAt) {
    return { key: "video", text: msg("surgeon.videoLost"), trouble: true };
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
  showVideoState();
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
    text = msg("surgeon.waiting");
  } else {
    reason = "connecting";
    text = msg("surgeon.connecting");
  }
  if (serverLost()) showPublisherState("unknown");
  else if (!state.feedLive && els.publisherState.dataset.state !== "offline") showPublisherState("offline");
  els.overlay.hidden = false;
  els.overlay.dataset.reason = reason;
  if (els.overlayText.dataset.i18nParams !== JSON.stringify(text.params) || els.overlayText.dataset.i18n !== text.key) {
    setText(els.overlayText, text);
  }
}

function playerErrorText(player) {
  if (player?.phase === "expired") return msg("surgeon.linkExpired");
  return msg("surgeon.videoRefused", { why: refusalText(player?.error) });
}

function startPlayer() {
  const player = new FeedPlayer({
    endpoint: ENDPOINT(state.cid),
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
    state.videoState = connectionState;
    showVideoState();
    // Interruptions are the banner's (linkCondition); refusals get their own notice.
    state.quality?.apply();
    if (phase === "connected") {
      notices.clear("player");
    } else if (phase === "refused" || phase === "expired") {
      notices.show("player", playerErrorText(player), "error");
      if (error?.status === 403 || phase === "expired") {
        state.videoState = "refused";
        showVideoState();
      }
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
