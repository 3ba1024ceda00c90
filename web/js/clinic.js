// Clinic page: camera/endoscope preview (camera.js), patient consent (consent.js), WHIP
// publishing of the endoscope feed, the surgeon's talk-back audio (WHEP feed=talkback), the
// surgeon's marks over the preview (annotations.js; the clinic may draw and point too when its
// grant allows), the pre-call check (precall.js), stats, presence and chat.

import { refusalText } from "./api.js";
import { Camera } from "./camera.js";
import { ConsentPanel } from "./consent.js";
import { endoscopeStats, joinRoom, loadConsultation, showConnectionState } from "./consultation.js";
import { LinkBanner, serverLink } from "./link.js";
import { FeedPlayer, Publisher, preferCodec } from "./media.js";
import { msg, setText } from "./i18n.js";
import { connectWithName } from "./names.js";
import { startPage } from "./page.js";
import { setupPictureHints } from "./picture.js";
import { PrecallCheck } from "./precall.js";
import { FORCED_RELAY_NOTICE, forceRelay, iceServersFrom } from "./session.js";
import { renderStats } from "./stats.js";
import { ClinicStills } from "./stills.js";
import { $, Notices, setChip, showFatal } from "./ui.js";
import { MAX_BITRATE, UplinkFollower } from "./uplink.js";

const VP8_LAYERS = "L1T3";

const notices = new Notices($("#notices"));
// Notes about the picture itself (its quality, the camera outside the body, a reduced size) lie over
// it: one appearing mid-consultation must not push the video down under a pen that is drawing, nor
// the tools off a phone's screen.
const pictureNotes = new Notices($("#picture-notes"));
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
  stills: null, // ClinicStills
  streaming: false, // the user pressed Start and did not press Stop
  banner: null,
  uplink: null, // UplinkFollower of the current publishing connection
  uplinkSilent: false, // a test sends the page's uplink reports itself
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
  get uplink() {
    return state.uplink?.debug ?? null;
  },
  /** For tests that dispatch `endolink:uplink` themselves: the follower keeps tuning the sender
   * but no longer reports (its real estimate would interleave with theirs). */
  silenceUplinkReports() {
    state.uplinkSilent = true;
    if (state.uplink) state.uplink.silent = true;
  },
  get stills() {
    return state.stills?.debug ?? null;
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
    pictureNotes,
    video: $("#local-preview"),
    onPresence: showSurgeonPresence,
  });
  state.room = room;
  state.annotations = annotations;
  state.stills = new ClinicStills({
    room,
    cid: state.cid,
    token: state.token,
    video: $("#local-preview"),
    videoSender: () => state.publisher?.pc?.getSenders().find((s) => s.track?.kind === "video") ?? null,
    notices,
  });
  setupPictureHints({ room, notices: pictureNotes });
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
  room.addEventListener("presence", updateStreamButtons);
  room.addEventListener("feed", updateStreamButtons);
  room.addEventListener("welcome", updateStreamButtons);
  connectWithName(room, state.session);
}

function showSurgeonPresence(people, { reconnecting = false } = {}) {
  const surgeons = people.filter((p) => p.role === "surgeon");
  const observers = people.filter((p) => p.role === "observer");
  if (reconnecting) {
    setChip(els.surgeonChip, msg("clinic.surgeon.unknown"), "warn", "unknown");
  } else if (surgeons.length && surgeons.every((p) => p.reconnecting)) {
    setChip(els.surgeonChip, msg("clinic.surgeon.reconnecting"), "warn", "reconnecting");
  } else if (surgeons.length) {
    const online = observers.length
      ? msg("clinic.surgeon.onlineObservers", { n: { number: observers.length } })
      : msg("clinic.surgeon.online");
    setChip(els.surgeonChip, online, "ok", "online");
  } else {
    setChip(els.surgeonChip, msg("clinic.surgeon.offline"), "idle", "offline");
  }
}

// ---------------------------------------------------------------- publishing

function setupStreamButtons() {
  els.start.addEventListener("click", startStream);
  els.stop.addEventListener("click", stopStream);
  showConnectionState("clinic", "new");
}

function updateStreamButtons() {
  const consent = !!state.consent?.recorded;
  const hasVideo = !!state.camera?.hasVideo;
  const elsewhere = streamingElsewhere();
  els.start.disabled = state.streaming || !consent || !hasVideo || elsewhere;
  els.stop.disabled = !state.streaming;
  if (state.streaming) setText(els.startHint, "");
  else if (elsewhere) setText(els.startHint, msg("clinic.streamingElsewhere"));
  else if (!consent) setText(els.startHint, msg("clinic.hint.consent"));
  else if (!hasVideo) setText(els.startHint, msg("clinic.hint.camera"));
  else setText(els.startHint, msg("clinic.hint.ready"));
}

/**
 * Another device on this same link streams the endoscope: only one device can, and starting
 * here would take the feed over from it. A reloaded page is no other device: its old connection
 * has left the room by then.
 */
function streamingElsewhere() {
  const room = state.room;
  if (!room || state.streaming || room.feeds.endoscope?.state !== "live") return false;
  if (room.feeds.endoscope.identity !== room.you) return false;
  const me = (room.participants || []).find((p) => p && p.identity === room.you);
  return (me?.devices ?? 1) > 1;
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
      await tuneVideoSender(transceivers.video.sender, codec);
    },
    afterAnswer: async (pc, transceivers) => {
      await tuneVideoSender(transceivers.video.sender, codec);
      followUplink(pc, transceivers.video.sender);
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
  followUplink(null);
  if (publisher) await publisher.stop();
  keepScreenAwake(false);
  showConnectionState("clinic", "stopped");
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
    const text = msg(serverLost ? "clinic.notReachingServer" : "clinic.notReaching");
    return { key: "not-reaching", text, trouble: true };
  }
  if (serverLost) return { key: "server", text: msg("link.serverLost"), trouble: true };
  return null;
}

/** The preview and the "You send" figures say so when they reach nobody. */
function markSending(reaching) {
  els.notSentBadge.hidden = reaching;
  els.stats.dataset.reaching = reaching ? "true" : "false";
  const caption = els.stats.querySelector(".stats-caption");
  if (caption) setText(caption, msg(reaching ? "stats.youSend" : "stats.youSendLost"));
}

function onPublisherState(publisher, detail) {
  if (publisher !== state.publisher) return;
  const { phase, connectionState, error } = detail;
  if (phase === "stopped") return;
  showConnectionState("clinic", connectionState);
  els.liveBadge.hidden = connectionState !== "connected";
  state.banner.update();
  // Interruptions are the banner's (linkCondition); refusals get their own notice.
  if (phase === "connected") {
    notices.clear("publish");
  } else if (phase === "connecting" && !publisher.everConnected) {
    notices.show("publish", msg("clinic.connecting"), "info");
  } else if (phase === "refused" || phase === "expired") {
    const reason = error?.reason || error?.message || "";
    const consentMissing = error?.code === "consent-required" || (error?.status === 403 && /consent/i.test(reason));
    const why = consentMissing ? msg("error.consent-required") : refusalText(error);
    notices.show("publish", phase === "expired" ? msg("media.linkExpired") : msg("clinic.refused", { why }), "error");
    showConnectionState("clinic", connectionState === "new" ? "refused" : connectionState);
    state.streaming = false;
    state.publisher = null;
    followUplink(null);
    keepScreenAwake(false);
    publisher.stop();
    if (consentMissing) state.consent.show(null);
    updateStreamButtons();
  }
}

/**
 * Start at the full picture with a ceiling; from then on the picture follows the uplink
 * (uplink.js): frame rate first, the size the rate allows. VP8 goes out in three temporal
 * layers: the server's picture and privacy guards sample a few frames a second and leave the
 * top layer (half the frames, which nothing refers to) undecoded. A browser that refuses the
 * layers still gets the ceiling (the retry below).
 */
async function tuneVideoSender(sender, codec) {
  const params = sender.getParameters();
  if (!params.encodings || !params.encodings.length) return false; // before negotiation in some browsers
  params.encodings[0].maxBitrate = MAX_BITRATE;
  if (codec?.toUpperCase() === "VP8") params.encodings[0].scalabilityMode = VP8_LAYERS;
  params.degradationPreference = "maintain-framerate";
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
      notices.show("tune", msg("clinic.tuneRefused"), "warn");
    }
    return false;
  }
}

/** One follower per publishing connection (a reconnection brings a new one); null stops it. */
function followUplink(pc, sender = null) {
  state.uplink?.stop();
  state.uplink = null;
  pictureNotes.clear("uplink");
  if (!pc || !sender) return;
  state.uplink = new UplinkFollower({ pc, sender, onChange: showUplink });
  state.uplink.silent = state.uplinkSilent;
  state.uplink.start();
  state.stills?.senderChanged(); // a new connection during stills mode: the trickle again
}

/** A calm word when the clinic's upload, not the camera, makes the picture smaller. */
function showUplink({ level, limited }) {
  if (!limited) pictureNotes.clear("uplink");
  else if (level === "low") pictureNotes.show("uplink", msg("clinic.uplink.veryLow"), "info");
  else pictureNotes.show("uplink", msg("clinic.uplink.reduced", { size: level }), "info");
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
      setChip(els.talkbackChip, msg("clinic.voice.unavailable"), "bad", "unavailable");
      notices.show("talkback", msg("clinic.voiceRefused", { why: refusalText(error) }), "warn");
    } else if (phase === "connected") {
      notices.clear("talkback");
    }
  });
  player.addEventListener("receiving", (event) => {
    if (event.detail.receiving) showTalkbackFeed(true);
    else if (state.room?.feeds.talkback?.state !== "live") showTalkbackFeed(false);
  });
  serverLink.addEventListener("state", (event) => {
    if (!event.detail.reachable) setChip(els.talkbackChip, msg("clinic.voice.reconnecting"), "warn", "reconnecting");
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
  setChip(els.talkbackChip, msg(live ? "clinic.voice.on" : "clinic.voice.off"), live ? "live" : "idle", live ? "on" : "off");
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
      msg("clinic.expiry", { time: { date: expiresAt * 1000, options: { timeStyle: "short" } } }),
      "warn",
    );
  if (warnIn <= 0) warn();
  else if (warnIn < 2 ** 31 - 1) setTimeout(warn, warnIn);
}
