// The surgeon's talk-back: the microphone published to the clinic over WHIP (audio only), its
// device choice and the chip that says whether the clinic hears the surgeon.

import { serverLink } from "./link.js";
import { Publisher } from "./media.js";
import { iceServersFrom } from "./session.js";
import { $, setChip } from "./ui.js";

const TALK_LOST = "reconnecting – the clinic cannot hear you";

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
    if (!event.detail.reachable && talkState.talk) setChip(els.talkChip, TALK_LOST, "warn");
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
  els.talk.textContent = "Stop talking";
  els.talk.classList.add("active");
  talk.addEventListener("state", (event) => {
    if (talk !== talkState.talk) return;
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
  const talk = talkState.talk;
  talkState.talk = null;
  els.talk.setAttribute("aria-pressed", "false");
  els.talk.textContent = "Talk to the clinic";
  els.talk.classList.remove("active");
  if (!keepChip) setChip(els.talkChip, "microphone off", "idle");
  if (talk) await talk.stop();
  talkState.micStream?.getTracks().forEach((t) => t.stop());
  talkState.micStream = null;
}
