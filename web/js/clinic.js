// Clinic page: camera/endoscope preview (camera.js), patient consent (consent.js), WHIP
// publishing of the endoscope feed, the surgeon's talk-back audio (WHEP feed=talkback), the
// surgeon's marks over the preview (annotations.js; the clinic may draw and point too when its
// grant allows), the pre-call check (precall.js), stats, presence and chat.

import { Camera } from "./camera.js";
import { ConsentPanel } from "./consent.js";
import { endoscopeStats, joinRoom, loadConsultation, showConnectionState } from "./consultation.js";
import { LinkBanner, serverLink } from "./link.js";
import { FeedPlayer, Publisher, preferCodec } from "./media.js";
import { startPage } from "./page.js";
import { PrecallCheck } from "./precall.js";
import { FORCED_RELAY_NOTICE, forceRelay, iceServersFrom } from "./session.js";
import { renderStats } from "./stats.js";
import { $, Notices, setChip, showFatal } from "./ui.js";

const MAX_BITRATE = 2_500_000;

const notices = new Notices($("#notices"));
if (forceRelay()) notices.show("relay", FORCED_RELAY_NOTICE);
const els = {
  liveBadge: $("#live-badge"),
  notSentBadge: $("#not-sent-badge"),
  start: $("#start-stream"),
  stop: $("#stop-stream"),
  startHint: $("#start-hint"),
  surgeonChip: $("#surgeon-chip"),
  stats: $("#stats"),
  talkbackAudio: $("#talkback-audio"),
  talkbackChip: $("#talkback-chip"),
  talkbackUnmute: $("#talkback-unmute"),
};

const state = {
  token: null,
  session: null,
  cid: null,
  consultation: null,
  consent: null, // ConsentPanel
  camera: null,
  precall: null,
  publisher: null,
  talkback: null,
  room: null,
  annotations: null,
  streaming: false, // the user pressed Start and did not press Stop
  banner: null,
};

// Read-only handles for diagnostics and the browser tests (no token, no patient data).
window.endolink = Object.freeze({
  page: "clinic",
  get publishPc() {
    return state.publisher?.pc ?? null;
  },
  get talkbackPc() {
    return state.talkback?.pc ?? null;
  },
  get role() {
    return state.session?.role ?? null;
  },
  get annotations() {
    return state.annotations?.debug ?? null;
  },
  get precall() {
    return state.precall?.debug ?? null;
  },
});

startPage({
  key: "clinic",
  roles: ["clinic"],
  start: async ({ token, session }) => {
    state.token = token;
    state.session = session;
    state.cid = session.consultation;
    warnBeforeExpiry(session.expires_at);
    state.consent = new ConsentPanel({
      cid: state.cid,
      token,
      notices,
      onChange: updateStreamButtons,
      onConflict: () => loadDetails().catch(showFatal),
    });
    state.precall = new PrecallCheck({ cid: state.cid, token, stream: () => state.camera?.stream ?? null });
    state.camera = new Camera({
      notices,
      onStream: async (stream) => {
        state.precall.streamChanged();
        if (state.publisher) await state.publisher.replaceStream(stream);
      },
      onChange: updateStreamButtons,
    });
    await loadDetails();
    setupRoom();
    setupStreamButtons();
    state.banner = new LinkBanner(notices, linkCondition);
    startTalkback();
    await state.camera.open();
  },
});

/** Title, codec and consent; a refused link ends the page (SessionError). */
async function loadDetails() {
  const consultation = await loadConsultation(state.session, state.token, notices, { refusedEndsPage: true });
  if (!consultation) return;
  state.consultation = consultation;
  state.consent.show(consultation.consent ?? null);
}

// ---------------------------------------------------------------- room

function setupRoom() {
  const { room, annotations } = joinRoom({
    page: "clinic",
    session: state.session,
    token: state.token,
    notices,
    video: $("#local-preview"),
    onPresence: showSurgeonPresence,
  });
  state.room = room;
  state.annotations = annotations;
  room.addEventListener("welcome", (event) => {
    if ("consent" in event.detail) state.consent.show(event.detail.consent ?? null);
    const talkback = room.feeds.talkback;
    showTalkbackFeed(talkback?.state === "live");
    if (talkback?.state === "live") state.talkback?.feedLive();
  });
  room.addEventListener("consent", (event) => state.consent.show(event.detail.consent ?? null));
  room.addEventListener("feed", (event) => {
    const { feed, state: feedState } = event.detail;
    if (feed === "talkback") {
      showTalkbackFeed(feedState === "live");
      if (feedState === "live") state.talkback?.feedLive();
      else state.talkback?.feedOffline();
    }
  });
  room.connect();
}

function showSurgeonPresence(people, { reconnecting = false } = {}) {
  const surgeons = people.filter((p) => p.role === "surgeon");
  const observers = people.filter((p) => p.role === "observer");
  if (reconnecting) {
    setChip(els.surgeonChip, "surgeon: unknown (reconnecting)", "warn");
  } else if (surgeons.length && surgeons.every((p) => p.reconnecting)) {
    setChip(els.surgeonChip, "surgeon: reconnecting…", "warn");
  } else if (surgeons.length) {
    setChip(els.surgeonChip, observers.length ? `surgeon: online (+${observers.length} observing)` : "surgeon: online", "ok");
  } else {
    setChip(els.surgeonChip, "surgeon: offline", "idle");
  }
}

// ---------------------------------------------------------------- publishing

function setupStreamButtons() {
  els.start.addEventListener("click", startStream);
  els.stop.addEventListener("click", stopStream);
  showConnectionState("not started");
}

function updateStreamButtons() {
  const consent = !!state.consent?.recorded;
  const hasVideo = !!state.camera?.hasVideo;
  els.start.disabled = state.streaming || !consent || !hasVideo;
  els.stop.disabled = !state.streaming;
  if (state.streaming) els.startHint.textContent = "";
  else if (!consent) els.startHint.textContent = "Record patient consent before streaming.";
  else if (!hasVideo) els.startHint.textContent = "Waiting for the camera.";
  else els.startHint.textContent = "Ready to stream.";
}

async function startStream() {
  const stream = state.camera.stream;
  if (!state.consent.recorded || !stream || state.publisher) return;
  state.streaming = true;
  updateStreamButtons();
  state.precall.collapse();
  const codec = state.consultation?.video_codec;
  const publisher = new Publisher({
    endpoint: `/whip/${encodeURIComponent(state.cid)}`,
    token: state.token,
    iceServers: iceServersFrom(state.session),
    stream,
    kinds: ["video", "audio"],
    configure: async (pc, transceivers) => {
      preferCodec(transceivers.video, codec);
      await tuneVideoSender(transceivers.video.sender);
    },
    afterAnswer: async (pc, transceivers) => {
      await tuneVideoSender(transceivers.video.sender);
    },
    stats: endoscopeStats(state.room),
  });
  state.publisher = publisher;
  publisher.addEventListener("state", (event) => onPublisherState(publisher, event.detail));
  keepScreenAwake(true);
  await publisher.start();
}

async function stopStream() {
  state.streaming = false;
  const publisher = state.publisher;
  state.publisher = null;
  if (publisher) await publisher.stop();
  keepScreenAwake(false);
  showConnectionState("stopped");
  els.liveBadge.hidden = true;
  notices.clear("publish");
  renderStats(els.stats, null);
  updateStreamButtons();
  state.banner.update();
}

/** Whether the surgeon can see what the clinic sends: streaming, connected, server reachable. */
function reachingSurgeon() {
  return state.publisher?.connectionState === "connected" && serverLink.reachable;
}

/**
 * The one connection condition the clinic is told about (LinkBanner), or null. While streaming,
 * any interruption means the surgeon cannot see the scope: that is what the clinic must know.
 */
function linkCondition() {
  const room = state.room;
  const serverLost = !serverLink.reachable || (room?.everOpen && room.state !== "open");
  markSending(!state.streaming || reachingSurgeon());
  if (state.streaming && state.publisher && !reachingSurgeon()) {
    const { phase, everConnected } = state.publisher;
    if (!everConnected && ["connecting", "negotiated"].includes(phase)) return null; // starting, not trouble
    const why = serverLost ? " The server cannot be reached." : "";
    return { key: "not-reaching", text: `Reconnecting — the surgeon cannot see your video.${why}`, trouble: true };
  }
  if (serverLost) return { key: "server", text: "Connection to the server lost — reconnecting…", trouble: true };
  return null;
}

/** The preview and the "You send" figures say so when they reach nobody. */
function markSending(reaching) {
  els.notSentBadge.hidden = reaching;
  els.stats.dataset.reaching = reaching ? "true" : "false";
  const caption = els.stats.querySelector(".stats-caption");
  if (caption) caption.textContent = reaching ? "You send" : "You send — not reaching anyone while reconnecting";
}

function onPublisherState(publisher, detail) {
  if (publisher !== state.publisher) return;
  const { phase, connectionState, error } = detail;
  if (phase === "stopped") return;
  showConnectionState(connectionState);
  els.liveBadge.hidden = connectionState !== "connected";
  state.banner.update();
  // Interruptions are the banner's (linkCondition); refusals get their own notice.
  if (phase === "connected") {
    notices.clear("publish");
  } else if (phase === "connecting" && !publisher.everConnected) {
    notices.show("publish", "Connecting the stream…", "info");
  } else if (phase === "refused" || phase === "expired") {
    const reason = error?.reason || error?.message || "refused";
    const text =
      phase === "expired"
        ? "The server refused the stream: this link has expired. Ask for a new invite link."
        : error?.status === 403 && /consent/i.test(reason)
          ? `The server refused the stream: ${reason}. Record patient consent first.`
          : `The server refused the stream: ${reason}${error?.status ? ` (HTTP ${error.status})` : ""}.`;
    notices.show("publish", text, "error");
    showConnectionState(connectionState === "new" ? "refused" : connectionState);
    state.streaming = false;
    state.publisher = null;
    keepScreenAwake(false);
    publisher.stop();
    if (error?.status === 403 && /consent/i.test(reason)) state.consent.show(null);
    updateStreamButtons();
  }
}

/** 720p detail over smoothness: keep the resolution, cap the bitrate. */
async function tuneVideoSender(sender) {
  const params = sender.getParameters();
  if (!params.encodings || !params.encodings.length) return false; // before negotiation in some browsers
  params.encodings[0].maxBitrate = MAX_BITRATE;
  params.degradationPreference = "maintain-resolution";
  try {
    await sender.setParameters(params);
    return true;
  } catch {
    const retry = sender.getParameters();
    if (!retry.encodings?.length) return false;
    retry.encodings[0].maxBitrate = MAX_BITRATE;
    try {
      await sender.setParameters(retry);
    } catch {
      notices.show("tune", "The browser refused the video bitrate settings; streaming with its defaults.", "warn");
    }
    return false;
  }
}

// ---------------------------------------------------------------- talk-back

function startTalkback() {
  const player = new FeedPlayer({
    endpoint: `/whep/${encodeURIComponent(state.cid)}?feed=talkback`,
    token: state.token,
    iceServers: iceServersFrom(state.session),
    kinds: ["audio"],
    onTrack: (event, stream) => {
      if (els.talkbackAudio.srcObject !== stream) els.talkbackAudio.srcObject = stream;
      playTalkback();
    },
  });
  state.talkback = player;
  player.addEventListener("state", (event) => {
    const { phase, error } = event.detail;
    if (phase === "refused" || phase === "expired") {
      setChip(els.talkbackChip, "surgeon voice: unavailable", "bad");
      notices.show("talkback", `Surgeon audio unavailable: ${error?.reason || error?.message || phase}.`, "warn");
    } else if (phase === "connected") {
      notices.clear("talkback");
    }
  });
  player.addEventListener("receiving", (event) => {
    if (event.detail.receiving) setChip(els.talkbackChip, "surgeon voice: on", "live");
    else if (state.room?.feeds.talkback?.state !== "live") setChip(els.talkbackChip, "surgeon voice: off", "idle");
  });
  serverLink.addEventListener("state", (event) => {
    if (!event.detail.reachable) setChip(els.talkbackChip, "surgeon voice: reconnecting", "warn");
    else showTalkbackFeed(state.room?.feeds.talkback?.state === "live");
  });
  els.talkbackUnmute.addEventListener("click", () => {
    els.talkbackUnmute.hidden = true;
    playTalkback();
  });
  player.start();
}

function playTalkback() {
  els.talkbackAudio.play().then(
    () => {
      els.talkbackUnmute.hidden = true;
    },
    () => {
      // Autoplay blocked until the user interacts with the page.
      els.talkbackUnmute.hidden = false;
    },
  );
}

function showTalkbackFeed(live) {
  setChip(els.talkbackChip, live ? "surgeon voice: on" : "surgeon voice: off", live ? "live" : "idle");
}

// ---------------------------------------------------------------- misc

let wakeLock = null;

/** While streaming, the clinic's screen must not go to sleep (where the browser allows it). */
async function keepScreenAwake(on) {
  try {
    if (on && !wakeLock && navigator.wakeLock) {
      wakeLock = await navigator.wakeLock.request("screen");
      wakeLock.addEventListener("release", () => {
        wakeLock = null;
      });
    } else if (!on && wakeLock) {
      await wakeLock.release();
      wakeLock = null;
    }
  } catch {
    wakeLock = null; // not allowed (battery saver, hidden tab): streaming goes on regardless
  }
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && state.streaming) keepScreenAwake(true);
});

// Closing the tab by accident must not end a procedure's stream without a question.
window.addEventListener("beforeunload", (event) => {
  if (state.streaming) {
    event.preventDefault();
    event.returnValue = "";
  }
});

function warnBeforeExpiry(expiresAt) {
  if (!expiresAt) return;
  const ms = expiresAt * 1000 - Date.now();
  const warnIn = ms - 10 * 60 * 1000;
  const warn = () =>
    notices.show(
      "expiry",
      `This link expires at ${new Date(expiresAt * 1000).toLocaleTimeString()}: the stream keeps running, but reconnecting will need a new link.`,
      "warn",
    );
  if (warnIn <= 0) warn();
  else if (warnIn < 2 ** 31 - 1) setTimeout(warn, warnIn);
}
