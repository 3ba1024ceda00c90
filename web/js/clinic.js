// Clinic page: camera/endoscope preview, patient consent, WHIP publishing of the endoscope feed,
// the surgeon's talk-back audio (WHEP feed=talkback), the surgeon's marks over the preview
// (annotations.js; the clinic may draw and point too when its grant allows), stats, presence
// and chat.

import { AnnotationLayer } from "./annotations.js";
import { FeedPlayer, Publisher, preferCodec } from "./media.js";
import { bindRecordingIndicator } from "./recording.js";
import { Room } from "./room.js";
import { iceServersFrom, loadSession, readError } from "./session.js";
import { RemoteStatsBoard, renderStats, wireStats } from "./stats.js";
import {
  $,
  ChatPanel,
  Notices,
  bindRoomChip,
  connectionTone,
  describer,
  formatTime,
  renderPresence,
  setChip,
  showFatal,
} from "./ui.js";

const MAX_BITRATE = 2_500_000;
const VIDEO_CONSTRAINTS = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
const AUDIO_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

const notices = new Notices($("#notices"));
const els = {
  preview: $("#local-preview"),
  overlay: $("#preview-overlay"),
  overlayText: $("#preview-overlay-text"),
  cameraRetry: $("#camera-retry"),
  liveBadge: $("#live-badge"),
  start: $("#start-stream"),
  stop: $("#stop-stream"),
  startHint: $("#start-hint"),
  mediaChip: $("#media-chip"),
  connectionState: $('[data-testid="connection-state"]'),
  surgeonChip: $("#surgeon-chip"),
  roomChip: $("#room-chip"),
  title: $('[data-testid="consultation-title"]'),
  consentRecorded: $("#consent-recorded"),
  consentSummary: $("#consent-summary"),
  consentForm: $("#consent-form"),
  consentBy: $("#consent-by"),
  consentConfirm: $("#consent-confirm"),
  consentError: $("#consent-error"),
  cameraSelect: $("#camera-select"),
  micSelect: $("#mic-select"),
  captureInfo: $("#capture-info"),
  stats: $("#stats"),
  remoteStats: $("#remote-stats"),
  presence: $("#presence"),
  talkbackAudio: $("#talkback-audio"),
  talkbackChip: $("#talkback-chip"),
  talkbackUnmute: $("#talkback-unmute"),
};

const state = {
  token: null,
  session: null,
  cid: null,
  consultation: null,
  consent: null,
  stream: null,
  publisher: null,
  talkback: null,
  room: null,
  annotations: null,
  participants: [],
  streaming: false, // the user pressed Start and did not press Stop
  openingCamera: false,
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
});

main().catch((err) => {
  // Last resort: never fail silently.
  showFatal({ title: "The page failed to start.", detail: err?.message || String(err) });
});

async function main() {
  let loaded;
  try {
    loaded = await loadSession("clinic", ["clinic"]);
  } catch (err) {
    $("#loading").hidden = true;
    showFatal(err);
    return;
  }
  state.token = loaded.token;
  state.session = loaded.session;
  state.cid = loaded.session.consultation;
  $("#loading").hidden = true;
  $("#app").hidden = false;
  $("#chips").hidden = false;
  warnBeforeExpiry(loaded.session.expires_at);

  if (!(await loadConsultation())) return;
  setupRoom();
  setupConsentForm();
  setupDevices();
  setupStreamButtons();
  startTalkback();
  await openCamera();
}

function api(path, options = {}) {
  return fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.token}`, Accept: "application/json", ...(options.headers || {}) },
    cache: "no-store",
    credentials: "omit",
  });
}

/** Loads title, codec and consent; false when the page cannot go on (fatal error shown). */
async function loadConsultation() {
  let response;
  try {
    response = await api(`/api/consultations/${encodeURIComponent(state.cid)}`);
  } catch {
    notices.show("consultation", "Could not load the consultation details (network).", "warn");
    return true;
  }
  if (response.status === 401 || response.status === 403 || response.status === 404) {
    const err = await readError(response);
    showFatal({
      title: response.status === 401 ? "This link has expired." : "This consultation is not available.",
      detail: `${err.reason}. Ask the consultation coordinator for a new invite link.`,
    });
    return false;
  }
  if (!response.ok) {
    const err = await readError(response);
    notices.show("consultation", `Could not load the consultation details: ${err.reason}`, "warn");
    return true;
  }
  state.consultation = await response.json();
  els.title.textContent = state.consultation.title || "";
  if (state.consultation.title) document.title = `EndoLink – Clinic – ${state.consultation.title}`;
  setConsent(state.consultation.consent ?? null);
  return true;
}

// ---------------------------------------------------------------- room

function setupRoom() {
  const room = new Room(state.cid, state.token);
  state.room = room;
  const describe = describer(() => state.participants);
  bindRoomChip(room, els.roomChip, notices);
  const board = new RemoteStatsBoard(els.remoteStats, describe);

  room.addEventListener("welcome", (event) => {
    const msg = event.detail;
    if ("consent" in msg) setConsent(msg.consent ?? null);
    onPresence(msg.participants);
    const talkback = room.feeds.talkback;
    showTalkbackFeed(talkback?.state === "live");
    if (talkback?.state === "live") state.talkback?.feedLive();
  });
  room.addEventListener("presence", (event) => {
    onPresence(event.detail.participants);
    board.retain(new Set(state.participants.map((p) => p.identity)));
  });
  room.addEventListener("consent", (event) => setConsent(event.detail.consent ?? null));
  room.addEventListener("feed", (event) => {
    const { feed, state: feedState } = event.detail;
    if (feed === "talkback") {
      showTalkbackFeed(feedState === "live");
      if (feedState === "live") state.talkback?.feedLive();
      else state.talkback?.feedOffline();
    }
  });
  room.addEventListener("stats", (event) => {
    if (event.detail.from !== room.you) board.update(event.detail);
  });
  room.addEventListener("fatal", (event) => {
    notices.show("room", `Room closed by the server: ${event.detail.reason}. Reload with a valid link.`, "error");
    setChip(els.roomChip, "room: refused", "bad");
  });
  new ChatPanel({ form: $("#chat-form"), input: $("#chat-input"), log: $("#chat-log"), room, describe });
  state.annotations = new AnnotationLayer({
    page: "clinic",
    frame: $("#video-frame"),
    video: els.preview,
    room,
    session: state.session,
    token: state.token,
    notices,
    toolbarHost: $("#annotation-tools"),
    describe,
  });
  bindRecordingIndicator(room, $("#recording-chip"), { cid: state.cid, token: state.token });
  room.connect();
}

function onPresence(participants) {
  state.participants = renderPresence(els.presence, participants, state.room?.you);
  const surgeons = state.participants.filter((p) => p.role === "surgeon");
  const observers = state.participants.filter((p) => p.role === "observer");
  if (surgeons.length) {
    setChip(els.surgeonChip, observers.length ? `surgeon: online (+${observers.length} observing)` : "surgeon: online", "ok");
  } else {
    setChip(els.surgeonChip, "surgeon: offline", "idle");
  }
}

// ---------------------------------------------------------------- consent

function setConsent(consent) {
  state.consent = consent && typeof consent === "object" ? consent : null;
  if (state.consent) {
    els.consentForm.hidden = true;
    els.consentRecorded.hidden = false;
    const c = state.consent;
    const method = c.method === "paper" ? "paper form" : c.method === "page" ? "on this page" : c.method || "";
    els.consentSummary.textContent = `Confirmed by ${c.confirmed_by || "—"}${
      c.confirmed_at ? ` on ${formatTime(c.confirmed_at)}` : ""
    }${method ? ` (${method})` : ""}.`;
  } else {
    els.consentRecorded.hidden = true;
    els.consentForm.hidden = false;
  }
  updateStreamButtons();
}

function setupConsentForm() {
  const validate = () => {
    els.consentConfirm.disabled = els.consentBy.value.trim().length < 2;
  };
  els.consentBy.addEventListener("input", validate);
  validate();
  els.consentForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const confirmedBy = els.consentBy.value.trim();
    if (confirmedBy.length < 2) return;
    els.consentConfirm.disabled = true;
    els.consentError.hidden = true;
    try {
      const response = await api(`/api/consultations/${encodeURIComponent(state.cid)}/consent`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ confirmed_by: confirmedBy, method: "page" }),
      });
      if (response.status === 201 || response.status === 200) {
        const body = await response.json().catch(() => null);
        setConsent(body?.consent ?? body ?? { confirmed_by: confirmedBy, method: "page" });
        notices.show("consent", "Patient consent recorded.", "info");
        setTimeout(() => notices.clear("consent"), 5000);
        return;
      }
      const err = await readError(response);
      if (response.status === 409) {
        // Recorded meanwhile (another device or the coordinator): show what the server holds.
        await loadConsultation();
        return;
      }
      showConsentError(`Consent was not recorded: ${err.reason} (HTTP ${err.status}).`);
    } catch {
      showConsentError("Consent was not recorded: the server could not be reached. Try again.");
    } finally {
      validate();
    }
  });
}

function showConsentError(text) {
  els.consentError.textContent = text;
  els.consentError.hidden = false;
}

// ---------------------------------------------------------------- camera & devices

function describeMediaError(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
      return "Camera access is blocked. Allow camera and microphone for this site (icon in the address bar), then press “Try camera again”.";
    case "NotFoundError":
    case "DevicesNotFoundError":
      return "No camera found. Connect the endoscope (capture card or USB scope), then press “Try camera again”.";
    case "NotReadableError":
    case "TrackStartError":
      return "The camera could not be started: it may be in use by another application. Close it, then press “Try camera again”.";
    case "OverconstrainedError":
      return "The selected camera is not available any more. Pick another one.";
    case "SecurityError":
    case "TypeError":
      return "Camera access needs a secure connection (https) and a supported browser.";
    default:
      return `The camera could not be opened (${err?.name || "error"}: ${err?.message || ""}).`;
  }
}

async function getStream(videoId, audioId) {
  const video = { ...VIDEO_CONSTRAINTS, ...(videoId ? { deviceId: { exact: videoId } } : {}) };
  const audio = audioId === "none" ? false : { ...AUDIO_CONSTRAINTS, ...(audioId ? { deviceId: { exact: audioId } } : {}) };
  if (!navigator.mediaDevices?.getUserMedia) throw Object.assign(new Error("no mediaDevices"), { name: "SecurityError" });
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ video, audio }), audioFailed: null };
  } catch (err) {
    if (!audio || err.name === "NotAllowedError" || err.name === "SecurityError") throw err;
    // Maybe only the microphone is missing or busy: the video matters most.
    const stream = await navigator.mediaDevices.getUserMedia({ video, audio: false });
    return { stream, audioFailed: err };
  }
}

async function openCamera({ videoId = null, audioId = null } = {}) {
  if (state.openingCamera) return;
  state.openingCamera = true;
  els.cameraRetry.hidden = true;
  showOverlay("Opening the camera…");
  let result;
  try {
    try {
      result = await getStream(videoId, audioId);
    } catch (err) {
      if ((err.name === "NotReadableError" || err.name === "TrackStartError") && state.stream) {
        // Some capture cards allow one reader only: release the current one and retry.
        stopTracks(state.stream);
        result = await getStream(videoId, audioId);
      } else {
        throw err;
      }
    }
  } catch (err) {
    state.openingCamera = false;
    const text = describeMediaError(err);
    showOverlay(text);
    els.cameraRetry.hidden = false;
    notices.show("camera", text, "error");
    updateStreamButtons();
    return;
  }
  state.openingCamera = false;
  notices.clear("camera");
  if (result.audioFailed) {
    notices.show("mic", `Microphone unavailable (${result.audioFailed.name}): the stream will carry video only.`, "warn");
  } else {
    notices.clear("mic");
  }
  const previous = state.stream;
  state.stream = result.stream;
  const videoTrack = result.stream.getVideoTracks()[0];
  if (videoTrack) {
    videoTrack.contentHint = "detail";
    videoTrack.addEventListener("ended", onVideoEnded);
  }
  els.preview.srcObject = result.stream;
  els.preview.play().catch(() => {});
  hideOverlay();
  if (state.publisher) await state.publisher.replaceStream(result.stream);
  if (previous && previous !== result.stream) stopTracks(previous);
  describeCapture(videoTrack);
  await refreshDevices();
  updateStreamButtons();
}

function onVideoEnded(event) {
  if (event.target !== state.stream?.getVideoTracks()[0]) return;
  const text = "The camera stopped (unplugged or taken by another application). Reconnect it, then press “Try camera again”.";
  showOverlay(text);
  els.cameraRetry.hidden = false;
  notices.show("camera", text, "error");
}

function stopTracks(stream) {
  for (const track of stream.getTracks()) track.stop();
}

function describeCapture(track) {
  if (!track) {
    els.captureInfo.textContent = "";
    return;
  }
  const s = track.getSettings();
  const parts = [];
  if (s.width && s.height) parts.push(`${s.width}×${s.height}`);
  if (s.frameRate) parts.push(`${Math.round(s.frameRate)} fps`);
  els.captureInfo.textContent = parts.length ? `Capturing ${parts.join(" @ ")}` : "";
  if (s.width && s.width < 1280) {
    els.captureInfo.textContent += " (below 720p: check the capture card's output setting).";
  }
}

async function refreshDevices() {
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    return;
  }
  const currentVideo = state.stream?.getVideoTracks()[0]?.getSettings().deviceId;
  const currentAudio = state.stream?.getAudioTracks()[0]?.getSettings().deviceId;
  fillSelect(els.cameraSelect, devices.filter((d) => d.kind === "videoinput"), currentVideo, "Camera");
  fillSelect(els.micSelect, devices.filter((d) => d.kind === "audioinput"), currentAudio, "Microphone", true);
}

function fillSelect(select, devices, currentId, fallbackLabel, allowNone = false) {
  select.replaceChildren();
  devices.forEach((d, i) => {
    const option = document.createElement("option");
    option.value = d.deviceId;
    option.textContent = d.label || `${fallbackLabel} ${i + 1}`;
    select.append(option);
  });
  if (allowNone) {
    const none = document.createElement("option");
    none.value = "none";
    none.textContent = "No microphone";
    select.append(none);
  }
  if (currentId && devices.some((d) => d.deviceId === currentId)) select.value = currentId;
  else if (allowNone && !currentId) select.value = "none";
  select.disabled = devices.length === 0 && !allowNone;
}

function setupDevices() {
  const reopen = () =>
    openCamera({ videoId: els.cameraSelect.value || null, audioId: els.micSelect.value || null });
  els.cameraSelect.addEventListener("change", reopen);
  els.micSelect.addEventListener("change", reopen);
  els.cameraRetry.addEventListener("click", () => openCamera());
  navigator.mediaDevices?.addEventListener?.("devicechange", () => refreshDevices());
}

function showOverlay(text) {
  els.overlay.hidden = false;
  els.overlayText.textContent = text;
}

function hideOverlay() {
  els.overlay.hidden = true;
}

// ---------------------------------------------------------------- publishing

function setupStreamButtons() {
  els.start.addEventListener("click", startStream);
  els.stop.addEventListener("click", stopStream);
  setConnectionState("not started");
}

function updateStreamButtons() {
  const hasVideo = !!state.stream?.getVideoTracks().some((t) => t.readyState === "live");
  els.start.disabled = state.streaming || !state.consent || !hasVideo;
  els.stop.disabled = !state.streaming;
  if (state.streaming) els.startHint.textContent = "";
  else if (!state.consent) els.startHint.textContent = "Record patient consent before streaming.";
  else if (!hasVideo) els.startHint.textContent = "Waiting for the camera.";
  else els.startHint.textContent = "Ready to stream.";
}

function setConnectionState(text) {
  els.connectionState.textContent = text;
  els.connectionState.dataset.state = text;
  els.mediaChip.dataset.tone = connectionTone(text);
}

async function startStream() {
  if (!state.consent || !state.stream || state.publisher) return;
  state.streaming = true;
  updateStreamButtons();
  const codec = state.consultation?.video_codec;
  const publisher = new Publisher({
    endpoint: `/whip/${encodeURIComponent(state.cid)}`,
    token: state.token,
    iceServers: iceServersFrom(state.session),
    stream: state.stream,
    kinds: ["video", "audio"],
    configure: async (pc, transceivers) => {
      preferCodec(transceivers.video, codec);
      await tuneVideoSender(transceivers.video.sender);
    },
    afterAnswer: async (pc, transceivers) => {
      await tuneVideoSender(transceivers.video.sender);
    },
    stats: {
      kind: "video",
      onStats: (stats) => {
        renderStats(els.stats, stats);
        state.room?.sendStats(wireStats(stats, "endoscope"));
      },
    },
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
  setConnectionState("stopped");
  els.liveBadge.hidden = true;
  notices.clear("publish");
  renderStats(els.stats, null);
  updateStreamButtons();
}

function onPublisherState(publisher, detail) {
  if (publisher !== state.publisher) return;
  const { phase, connectionState, error, delayMs } = detail;
  if (phase === "stopped") return;
  setConnectionState(connectionState);
  els.liveBadge.hidden = connectionState !== "connected";
  if (phase === "connected") {
    notices.clear("publish");
  } else if (phase === "connecting") {
    notices.show("publish", "Connecting the stream…", "info");
  } else if (phase === "unstable") {
    notices.show("publish", "The connection to the server is unstable; waiting for it to recover…", "warn");
  } else if (phase === "retrying") {
    notices.show(
      "publish",
      `Stream interrupted (${detail.reason || "connection lost"}); reconnecting in ${Math.ceil(delayMs / 1000)} s.`,
      "warn",
    );
  } else if (phase === "refused" || phase === "expired") {
    const reason = error?.reason || error?.message || "refused";
    const text =
      phase === "expired"
        ? "The server refused the stream: this link has expired. Ask for a new invite link."
        : error?.status === 403 && /consent/i.test(reason)
          ? `The server refused the stream: ${reason}. Record patient consent first.`
          : `The server refused the stream: ${reason}${error?.status ? ` (HTTP ${error.status})` : ""}.`;
    notices.show("publish", text, "error");
    setConnectionState(connectionState === "new" ? "refused" : connectionState);
    state.streaming = false;
    state.publisher = null;
    keepScreenAwake(false);
    publisher.stop();
    if (error?.status === 403 && /consent/i.test(reason)) setConsent(null);
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
