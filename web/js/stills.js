// Stills mode: when the clinic's uplink cannot carry useful video (uplink.js's `endolink:uplink`
// events under STILLS_LOW_KBPS for SUSTAIN_MS), or the surgeon asks, the clinic page sends sharp
// full-resolution JPEG stills over HTTP instead of video; sound continues. The server shows each
// still through the freeze (signaling/ws/stills.py), so the surgeon draws on it as on any frozen
// picture.
//
// Clinic (ClinicStills): while the mode is on, frames of the local camera are sampled SAMPLE_HZ
// times a second into ImageBitmaps (the last KEEP_MS kept), each scored by a focus measure (the
// variance of the Laplacian of a small grey copy: a few ms per frame). The sharpest frame not
// yet sent goes up as a JPEG (quality JPEG_QUALITY, full resolution), then the next one
// NEXT_STILL_MS after the previous upload ended, or at once when the surgeon asks for the next.
// One upload at a time; a slow one runs to its end unless it is older than STALE_MS. Video drops
// to a trickle (TRICKLE: 1/4 size, 5 frames/s, 100 kbit/s) rather than stopping, so the
// browser's estimate keeps measuring the link and the live picture returns without waiting for
// a keyframe; it comes back when the estimate stays at or over STILLS_HIGH_KBPS for SUSTAIN_MS,
// or — as the estimate of a 100 kbit/s trickle cannot climb much above it (the receiver's REMB is
// at most ~1.5× what it receives) — when the stills' own uploads show the link recovered: the
// last RECOVER_UPLOADS each at STILLS_RECOVER_KBPS or more (bytes over the time of the POST).
//
// Surgeon (SurgeonStills): "Ask for stills" / "Back to video", "Next picture"; a new still
// replaces the picture only when nobody's marks are on it and the surgeon is not drawing (the
// marks belong to the picture they were drawn on); otherwise "Show the new picture" appears.

import { apiFetch, refusalText } from "./api.js";
import { msg, setText } from "./i18n.js";

export const STILLS_LOW_KBPS = 300;
export const STILLS_HIGH_KBPS = 450;
export const SUSTAIN_MS = 5000;
export const STILLS_RECOVER_KBPS = 600;
const RECOVER_UPLOADS = 2;
const SAMPLE_HZ = 5;
const KEEP_MS = 2000;
const SCORE_WIDTH = 320;
const JPEG_QUALITY = 0.9;
const NEXT_STILL_MS = 4000;
const STALE_MS = 30_000;
const TRICKLE = { maxBitrate: 100_000, scaleResolutionDownBy: 4, maxFramerate: 5 };

/** Sharpness of a grey picture: the variance of its 4-neighbour Laplacian (higher: sharper). */
export function focusMeasure(imageData) {
  const { data, width, height } = imageData;
  const grey = new Float32Array(width * height);
  for (let i = 0, p = 0; i < grey.length; i += 1, p += 4) grey[i] = 0.299 * data[p] + 0.587 * data[p + 1] + 0.114 * data[p + 2];
  let sum = 0;
  let squares = 0;
  let n = 0;
  for (let y = 1; y < height - 1; y += 1) {
    for (let x = 1; x < width - 1; x += 1) {
      const i = y * width + x;
      const lap = grey[i - 1] + grey[i + 1] + grey[i - width] + grey[i + width] - 4 * grey[i];
      sum += lap;
      squares += lap * lap;
      n += 1;
    }
  }
  return n ? squares / n - (sum / n) ** 2 : 0;
}

/** The focus measure of a picture (video, bitmap, canvas) drawn into `scratch` at SCORE_WIDTH. */
export function scorePicture(source, scratch) {
  const width = Math.min(SCORE_WIDTH, source.width);
  const height = Math.max(1, Math.round((source.height * width) / source.width));
  scratch.width = width;
  scratch.height = height;
  const ctx = scratch.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, width, height);
  return focusMeasure(ctx.getImageData(0, 0, width, height));
}

/** Says when an uplink estimate has stayed low (or high again) long enough to act on. */
export class LinkWatch {
  constructor() {
    this.lowSince = null;
    this.highSince = null;
    this.rates = []; // kbit/s of the last stills sent
  }

  /** One estimate (kbit/s or null); returns "low", "high" or null (nothing sustained yet). */
  feed(kbps, now = performance.now()) {
    if (typeof kbps !== "number" || !Number.isFinite(kbps)) return null;
    this.lowSince = kbps < STILLS_LOW_KBPS ? (this.lowSince ?? now) : null;
    this.highSince = kbps >= STILLS_HIGH_KBPS ? (this.highSince ?? now) : null;
    if (this.lowSince != null && now - this.lowSince >= SUSTAIN_MS) return "low";
    if (this.highSince != null && now - this.highSince >= SUSTAIN_MS) return "high";
    return null;
  }

  /** One still sent (`bytes` in `ms`, the whole POST: a lower bound of the link's speed);
   * returns "high" once each of the last RECOVER_UPLOADS ran at STILLS_RECOVER_KBPS or more.
   * Then the estimate gets SUSTAIN_MS to climb back from the trickle before it can say "low". */
  uploaded(bytes, ms, now = performance.now()) {
    this.rates = [...this.rates, (bytes * 8) / Math.max(1, ms)].slice(-RECOVER_UPLOADS);
    if (this.rates.length < RECOVER_UPLOADS || this.rates.some((kbps) => kbps < STILLS_RECOVER_KBPS)) return null;
    this.rates = [];
    this.lowSince = now + SUSTAIN_MS;
    return "high";
  }
}

/** The banner both pages show while stills mode is on, saying why. */
function showBanner(notices, { active, reason }) {
  if (active) notices.show("stills", msg(reason === "requested" ? "stills.bannerRequested" : "stills.banner"), "info");
  else notices.clear("stills");
}

/** The clinic page's side: link reports, sampling, uploads and the video trickle. */
export class ClinicStills {
  /**
   * @param {object} o
   * @param {import("./room.js").Room} o.room
   * @param {string} o.cid
   * @param {string} o.token
   * @param {HTMLVideoElement} o.video     the local camera preview (full resolution)
   * @param {() => RTCRtpSender|null} o.videoSender the endoscope video sender, if streaming
   * @param {import("./ui.js").Notices} o.notices
   */
  constructor(o) {
    Object.assign(this, o);
    this.watch = new LinkWatch();
    this.linkLow = false;
    this.held = false; // the surgeon ended a link-triggered mode: wait for the link to recover
    this.state = { active: false, reason: null, asked: 0 };
    this.frames = []; // {bitmap, score, at}
    this.scratch = document.createElement("canvas");
    this.sampler = 0;
    this.sentAt = 0; // `at` of the newest frame sent
    this.wake = null; // resolves the upload loop's wait early (the surgeon asked)
    this.loop = null;
    this.upload = null; // the AbortController of the upload under way
    this.uploads = { sent: 0, failed: 0, lastBytes: 0, lastMs: 0 };
    this.saved = null; // the sender's encoding before the trickle
    window.addEventListener("endolink:uplink", (e) => this._onUplink(e.detail));
    this.room.addEventListener("welcome", (e) => this._apply(e.detail.stills));
    this.room.addEventListener("stills", (e) => this._apply(e.detail));
  }

  _onUplink(detail) {
    const verdict = this.watch.feed(detail?.kbps);
    if (verdict === "high") this.held = false;
    if (!verdict || (verdict === "low") === this.linkLow) return;
    this.linkLow = verdict === "low";
    if (this.linkLow && !this.state.active && !this.held) this.room.send({ type: "stills-request", on: true });
    else if (!this.linkLow && this.state.active && this.state.reason === "link") this.room.send({ type: "stills-request", on: false });
  }

  /** A link-triggered mode ends when the stills' own uploads say the link recovered. */
  _onUploaded(bytes, ms) {
    if (this.watch.uploaded(bytes, ms) !== "high" || !this.state.active || this.state.reason !== "link") return;
    this.linkLow = false;
    this.held = false;
    this.room.send({ type: "stills-request", on: false });
  }

  _apply(stills) {
    if (!stills || typeof stills !== "object") return;
    const was = this.state;
    this.state = { active: stills.active === true, reason: stills.reason ?? null, asked: stills.asked | 0 };
    showBanner(this.notices, this.state);
    // Ended by the surgeon while the link is still slow: do not ask again until it recovers.
    if (was.active && !this.state.active && this.linkLow) this.held = true;
    if (this.state.active && !was.active) this._begin();
    else if (!this.state.active && was.active) this._end();
    else if (this.state.active && this.state.asked > was.asked) this.wake?.();
  }

  _begin() {
    this.sentAt = 0;
    this.sampler = setInterval(() => this._sample(), 1000 / SAMPLE_HZ);
    this._trickle(true);
    this.loop = this._uploadLoop(this.loop);
  }

  _end() {
    clearInterval(this.sampler);
    this.sampler = 0;
    for (const f of this.frames) f.bitmap.close();
    this.frames = [];
    this.wake?.();
    this.upload?.abort();
    this._trickle(false);
  }

  async _sample() {
    const video = this.video;
    if (!(video.videoWidth > 0) || video.readyState < 2) return;
    const at = performance.now();
    let bitmap;
    try {
      bitmap = await createImageBitmap(video);
    } catch {
      return; // no frame right now (camera switching)
    }
    if (!this.sampler) {
      bitmap.close();
      return;
    }
    const score = scorePicture(bitmap, this.scratch);
    this.frames.push({ bitmap, score, at });
    while (this.frames.length && at - this.frames[0].at > KEEP_MS) this.frames.shift().bitmap.close();
  }

  /** The sharpest kept frame newer than the last one sent, or null. */
  sharpest() {
    let best = null;
    for (const f of this.frames) if (f.at > this.sentAt && (!best || f.score > best.score)) best = f;
    return best;
  }

  async _uploadLoop(previous) {
    await previous; // a mode ended and begun again: the old loop has finished
    this.watch.rates = []; // only this mode's uploads judge its link
    let wait = Math.min(KEEP_MS / 2, NEXT_STILL_MS); // the first: once some frames are kept
    while (this.state.active) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, wait);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
      if (!this.state.active) return;
      const frame = this.sharpest();
      wait = frame ? NEXT_STILL_MS : 1000 / SAMPLE_HZ;
      if (frame) await this._send(frame);
    }
  }

  async _send(frame) {
    const canvas = document.createElement("canvas");
    canvas.width = frame.bitmap.width;
    canvas.height = frame.bitmap.height;
    canvas.getContext("2d").drawImage(frame.bitmap, 0, 0);
    this.sentAt = frame.at;
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
    if (!blob || !this.state.active) return;
    const started = performance.now();
    this.upload = new AbortController();
    const stale = setTimeout(() => this.upload.abort(), STALE_MS);
    try {
      await apiFetch(`/api/consultations/${encodeURIComponent(this.cid)}/stills`, {
        token: this.token,
        method: "POST",
        body: blob,
        headers: { "Content-Type": "image/jpeg" },
        signal: this.upload.signal,
      });
      this.uploads = { ...this.uploads, sent: this.uploads.sent + 1, lastBytes: blob.size, lastMs: Math.round(performance.now() - started) };
      this.notices.clear("stills-upload");
      this._onUploaded(blob.size, performance.now() - started);
    } catch (err) {
      this.uploads.failed += 1;
      if (this.state.active) this.notices.show("stills-upload", msg("stills.notSent", { why: refusalText(err) }), "warn");
    } finally {
      clearTimeout(stale);
    }
  }

  /** A new publishing connection: its sender trickles too while the mode is on. */
  senderChanged() {
    if (!this.state.active) return;
    this.saved = null;
    this._trickle(true);
  }

  /**
   * Video down to a trickle while stills are sent, and back. The sender has one owner at a
   * time: `endolink:stills` is dispatched before the sender is touched, so uplink.js stops
   * tuning it; at the end uplink.js claims it back (preventDefault) with its own current level,
   * and only when nobody does is the encoding saved here restored.
   */
  async _trickle(on) {
    const event = new CustomEvent("endolink:stills", { detail: { active: on }, cancelable: true });
    const claimed = !window.dispatchEvent(event);
    const sender = this.videoSender();
    const params = sender?.getParameters();
    const encoding = params?.encodings?.[0];
    if (!encoding) return;
    if (on) {
      this.saved ??= { maxBitrate: encoding.maxBitrate, scaleResolutionDownBy: encoding.scaleResolutionDownBy ?? 1, maxFramerate: encoding.maxFramerate };
      Object.assign(encoding, TRICKLE);
    } else {
      const saved = this.saved;
      this.saved = null;
      if (!saved || claimed) return;
      Object.assign(encoding, saved);
      if (saved.maxFramerate == null) delete encoding.maxFramerate;
    }
    try {
      await sender.setParameters(params);
    } catch {
      // Renegotiating: the publisher tunes the sender again once connected.
    }
  }

  /** For the tests (window.endolink.stills): state and upload figures, no images. */
  get debug() {
    return { ...this.state, linkLow: this.linkLow, held: this.held, kept: this.frames.length, ...this.uploads };
  }
}

/** The surgeon page's side: the buttons, the banner and which still is on screen. */
export class SurgeonStills {
  /**
   * @param {object} o
   * @param {import("./room.js").Room} o.room
   * @param {import("./annotations.js").AnnotationLayer} o.annotations
   * @param {{toggle: HTMLButtonElement, next: HTMLButtonElement, show: HTMLButtonElement}} o.buttons
   * @param {import("./ui.js").Notices} o.notices
   */
  constructor(o) {
    Object.assign(this, o);
    this.state = { active: false, reason: null, still: null };
    this.lead = o.annotations.isLead;
    this.waiting = null; // a newer still than the one shown, held while marks are on the picture
    const { toggle, next, show } = this.buttons;
    toggle.hidden = !this.lead;
    toggle.addEventListener("click", () => this.room.send({ type: "stills-request", on: !this.state.active }));
    next.addEventListener("click", () => this.room.send({ type: "stills-request", on: true, next: true }));
    show.addEventListener("click", () => this._show(true));
    this.room.addEventListener("welcome", (e) => this._apply(e.detail.stills));
    this.room.addEventListener("stills", (e) => this._apply(e.detail));
    this.room.addEventListener("annotation", () => this._show(false));
    this._render();
  }

  _apply(stills) {
    if (!stills || typeof stills !== "object") return;
    const still = stills.still && typeof stills.still.id === "string" ? stills.still : null;
    this.state = { active: stills.active === true, reason: stills.reason ?? null, still };
    showBanner(this.notices, this.state);
    this.waiting = this.state.active && still ? still : null;
    this._show(false);
    this._render();
  }

  /** Shows the newest still (the lead's page freezes on it) when asked to, or when the picture
   * is free: no marks on it and no gesture under way. */
  _show(asked) {
    const still = this.waiting;
    const layer = this.annotations;
    if (!still || !this.lead) return;
    if (layer.board.freeze.snapshot?.id === still.id) {
      this.waiting = null;
    } else if (asked || (layer.board.marks.size === 0 && !layer.input.gesture)) {
      this.waiting = null;
      this.room.send({ type: "freeze", frozen: true, snapshot_id: still.id });
    }
    this._render();
  }

  _render() {
    const { toggle, next, show } = this.buttons;
    const active = this.state.active;
    setText(toggle, msg(active ? "stills.backToVideo" : "stills.ask"));
    toggle.setAttribute("aria-pressed", active ? "true" : "false");
    next.hidden = !this.lead || !active;
    show.hidden = !this.lead || !this.waiting;
  }

  get debug() {
    return { ...this.state, waiting: this.waiting?.id ?? null };
  }
}
