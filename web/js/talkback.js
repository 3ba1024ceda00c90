// The surgeon's talk-back: the microphone published to the clinic over WHIP (audio only), its
// device choice and the chip that says whether the clinic hears the surgeon.

import { refusalText } from "./api.js";
import { msg, setText } from "./i18n.js";
import { serverLink } from "./link.js";
import { Publisher } from "./media.js";
import { iceServersFrom } from "./session.js";
import { $, setChip } from "./ui.js";

const TALK_LOST = msg("talk.lost");

const els = {
  talk: $("#talk-toggle"),
  talkMic: $("#talk-mic"),
  talkMicLabel: $("#talk-mic-label"),
  talkChip: $("#talk-chip"),
  observerHint: $("#observer-hint"),
};

const talkState = { session: null, cid: null, token: null, talk: null, micStream: null };
let notices = null;

/** The talk-back Publisher while the surgeon talks, else null (diagnostics, tests). */
export function currentTalk() {
  return talkState.talk;
}

/** Offers the talk-back to a surgeon whose grant may publish; observers get their hint instead. */
export function setupTalk({ session, cid, token, notices: pageNotices }) {
  Object.assign(talkState, { session, cid, token });
  notices = pageNotices;
  const canTalk = talkState.session.role === "surgeon" && talkState.session.may_publish === true;
  els.talk.hidden = !canTalk;
  els.talkChip.hidden = !canTalk;
  els.observerHint.hidden = talkState.session.role !== "observer";
  if (!canTalk) return; // observers: the control stays hidden (and out of the a11y tree)
  serverLink.addEventListener("state", (event) => {
    if (!event.detail.reachable && talkState.talk) setChip(els.talkChip, TALK_LOST, "warn", "reconnecting");
  });
  els.talk.addEventListener("click", () => (talkState.talk ? stopTalk() : startTalk()));
  els.talkMic.addEventListener("change", async () => {
    if (!talkState.talk) return;
    const stream = await openMic(els.talkMic.value);
    if (stream) {
      const old = talkState.micStream;
      talkState.micStream = stream;
      await talkState.talk.replaceStream(stream);
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
    const key = { NotAllowedError: "talk.micBlocked", NotFoundError: "talk.noMic" }[err?.name] || "talk.micFailed";
    notices.show("talk", msg(key, { detail: err?.name || "" }), "error");
    setChip(els.talkChip, msg("talk.micUnavailable"), "bad", "unavailable");
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
    setText(option, d.label || msg("devices.micN", { n: i + 1 }));
    els.talkMic.append(option);
  });
  if (current) els.talkMic.value = current;
  const show = devices.length > 1;
  els.talkMic.hidden = !show;
  els.talkMicLabel.hidden = !show;
}

async function startTalk() {
  els.talk.disabled = true;
  setChip(els.talkChip, msg("talk.opening"), "warn", "opening");
  const stream = await openMic(els.talkMic.value || null);
  els.talk.disabled = false;
  if (!stream) return;
  talkState.micStream = stream;
  fillMics(stream.getAudioTracks()[0]?.getSettings().deviceId);
  const talk = new Publisher({
    endpoint: `/whip/${encodeURIComponent(talkState.cid)}`,
    token: talkState.token,
    iceServers: iceServersFrom(talkState.session),
    stream,
    kinds: ["audio"],
  });
  talkState.talk = talk;
  els.talk.setAttribute("aria-pressed", "true");
  setText(els.talk, msg("talk.stop"));
  els.talk.classList.add("active");
  talk.addEventListener("state", (event) => {
    if (talk !== talkState.talk) return;
    const { phase, connectionState, error } = event.detail;
    if (phase === "connected") {
      setChip(els.talkChip, msg("talk.on"), "live", "on");
      notices.clear("talk");
    } else if (phase === "connecting" || phase === "negotiated") {
      setChip(els.talkChip, msg("talk.connecting"), "warn", "connecting");
    } else if (phase === "retrying" || phase === "unstable") {
      setChip(els.talkChip, TALK_LOST, "warn", "reconnecting");
    } else if (phase === "refused" || phase === "expired") {
      const text = phase === "expired" ? msg("media.linkExpired") : msg("talk.refusedNotice", { why: refusalText(error) });
      notices.show("talk", text, "error");
      setChip(els.talkChip, msg("talk.refused"), "bad", "refused");
      stopTalk({ keepChip: true });
    } else if (connectionState === "failed") {
      setChip(els.talkChip, msg("talk.failed"), "bad", "failed");
    }
  });
  await talk.start();
}

async function stopTalk({ keepChip = false } = {}) {
  const talk = talkState.talk;
  talkState.talk = null;
  els.talk.setAttribute("aria-pressed", "false");
  setText(els.talk, msg("talk.start"));
  els.talk.classList.remove("active");
  if (!keepChip) setChip(els.talkChip, msg("talk.off"), "idle", "off");
  if (talk) await talk.stop();
  talkState.micStream?.getTracks().forEach((t) => t.stop());
  talkState.micStream = null;
}
