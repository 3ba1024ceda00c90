// Anchored marks ("on the tissue"): where each one is on the frame this page shows.
// Protocol: docs/architecture.md, "Anchored marks".
//
//   * The server tracks the tissue under every anchored mark and sends `placements` (≥ 15 Hz):
//     per analysed frame (its relay `pts`, 90 kHz, and `capture_ms`, the clinic's wall clock when
//     it was captured) a 2×3 matrix per mark in normalised frame coordinates, a confidence and
//     `lost`. This module keeps the last ~2 s of them.
//   * The frame shown is read per video frame (requestVideoFrameCallback): a viewer page maps its
//     RTP timestamp to the relay pts with its `media-clock` offset; the clinic page compares the
//     capture time of its own preview frame with `capture_ms`. The placement applied is the one
//     of the newest analysed frame not newer than the frame shown; the newest one while no
//     mapping is known yet.
//   * A mark absent from the placement is not anchored: it is drawn as sent.
//   * The replay applies its own placement entries (timeline.placements) with the same helpers.

const KEEP_MS = 2000;
const PTS_RATE = 90000;
const RTP_MODULO = 2 ** 32;
const CAPTURE_SLACK_MS = 5; // clocks of the preview and of the reports differ by a few ms

/** Tools a mark can be anchored with (text labels stay where they were put). */
export const ANCHORABLE = new Set(["pen", "arrow", "circle", "rect"]);

/** Mark ids are unique per author only (board.js keyOf, without importing the board). */
const markKey = (author, id) => `${author}\u0000${id}`;

/**
 * One `placements` message (or replay entry) as a lookup: key → {m, confidence, lost}, or null
 * if it is malformed. Only well-formed marks are kept (six finite numbers).
 */
export function parsePlacement(message) {
  if (!message || typeof message !== "object" || !Array.isArray(message.marks)) return null;
  const marks = new Map();
  for (const p of message.marks) {
    if (!p || typeof p.author !== "string" || typeof p.id !== "string") continue;
    if (!Array.isArray(p.m) || p.m.length !== 6 || !p.m.every(Number.isFinite)) continue;
    marks.set(markKey(p.author, p.id), { m: p.m, confidence: Number(p.confidence) || 0, lost: p.lost === true });
  }
  return {
    pts: Number.isInteger(message.pts) ? message.pts : null,
    captureMs: Number.isFinite(message.capture_ms) ? message.capture_ms : null,
    marks,
  };
}

/** The placement of `mark` in `entry` (a parsePlacement result), or null: drawn as sent. */
export function placementOf(entry, mark) {
  return entry?.marks.get(markKey(mark.author, mark.id)) ?? null;
}

/**
 * The placements between two entries, a fraction `f` (0..1) of the way from `a` to `b`: each
 * mark tracked in both moves linearly between its two matrices (a replay's log keeps ~15 a second:
 * holding the older one leaves a mark behind a moving scope); any other keeps `a`'s.
 */
export function between(a, b, f) {
  const marks = new Map(a.marks);
  for (const [key, p] of a.marks) {
    const q = b.marks.get(key);
    if (!q || p.lost || q.lost) continue;
    marks.set(key, { ...p, m: p.m.map((v, i) => v + (q.m[i] - v) * f) });
  }
  return { ...a, marks };
}

/** `pts` (mod 2^32) unwrapped to the full pts closest to `near`. */
function unwrap(pts, near) {
  const delta = (((pts - near) % RTP_MODULO) + RTP_MODULO) % RTP_MODULO;
  return near + (delta >= RTP_MODULO / 2 ? delta - RTP_MODULO : delta);
}

/**
 * The entry with the greatest `key` ≤ `value` (the newest analysed frame not newer than the one
 * shown); the one with the least key if none is (a frame older than everything kept); null if no
 * entry has a key. Entries may arrive out of order.
 */
export function newestUpTo(entries, key, value) {
  let found = null;
  let oldest = null;
  for (const e of entries) {
    const k = key(e);
    if (k == null) continue;
    if (!oldest || k < key(oldest)) oldest = e;
    if (k <= value && (!found || k >= key(found))) found = e;
  }
  return found ?? oldest;
}

export class Placements {
  /**
   * @param {object} o
   * @param {"surgeon"|"clinic"} o.page
   * @param {HTMLVideoElement} o.video        the picture the marks are drawn on
   * @param {EventTarget} o.room              `placements` and `media-clock` messages
   * @param {() => void} o.onChange           redraw (a new frame shown, new placements)
   */
  constructor({ page, video, room, onChange }) {
    Object.assign(this, { page, video, onChange });
    this.entries = []; // oldest first: {pts, captureMs, marks, at}
    this.clocks = new Map(); // WHEP session id → rtp_offset
    this.lastClock = null;
    this.session = () => null; // the page's current WHEP session id (surgeon page sets it)
    this.shown = null; // {rtp, captureMs} of the frame on screen
    room.addEventListener("placements", (e) => this._add(e.detail));
    room.addEventListener("media-clock", (e) => {
      const { session, rtp_offset: offset } = e.detail || {};
      if (typeof session !== "string" || !Number.isInteger(offset)) return;
      this.clocks.set(session, offset);
      this.lastClock = offset;
    });
    this._follow();
  }

  /** Whether any mark is anchored now (the newest placements name one). */
  get active() {
    const last = this.entries[this.entries.length - 1];
    return Boolean(last && last.marks.size);
  }

  _add(message) {
    const entry = parsePlacement(message);
    if (!entry) return;
    const now = performance.now();
    entry.at = now;
    if (!entry.marks.size) this.entries = []; // the last anchored mark went
    this.entries.push(entry);
    while (this.entries.length > 1 && now - this.entries[0].at > KEEP_MS) this.entries.shift();
    this.onChange();
  }

  /**
   * Notes every frame shown (a new mark's `frame_pts`), redrawing while marks are anchored. The
   * browser calls back only for frames it presents: nothing runs while the video is hidden.
   */
  _follow() {
    const video = this.video;
    if (typeof video.requestVideoFrameCallback !== "function") return;
    const onFrame = (_now, metadata) => {
      this.shown = {
        rtp: Number.isInteger(metadata.rtpTimestamp) ? metadata.rtpTimestamp : null,
        captureMs: Number.isFinite(metadata.captureTime) ? performance.timeOrigin + metadata.captureTime : null,
      };
      if (this.active) this.onChange();
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  _offset() {
    return this.clocks.get(this.session()) ?? this.lastClock;
  }

  /** Relay pts of the frame on screen (null: not known). */
  shownPts() {
    const shown = this.shown;
    const last = this.entries[this.entries.length - 1];
    if (this.page === "clinic") {
      const ref = [...this.entries].reverse().find((e) => e.captureMs != null && e.pts != null);
      if (!shown?.captureMs || !ref) return null;
      return Math.round(ref.pts + ((shown.captureMs - ref.captureMs) * PTS_RATE) / 1000);
    }
    const offset = this._offset();
    if (shown?.rtp == null || offset == null) return null;
    const pts = (((shown.rtp - offset) % RTP_MODULO) + RTP_MODULO) % RTP_MODULO;
    return last?.pts != null ? unwrap(pts, last.pts) : pts;
  }

  /** The placements to apply to the frame on screen (null: none). */
  current() {
    const entries = this.entries;
    const latest = entries[entries.length - 1] ?? null;
    if (this.page === "clinic") {
      const shown = this.shown?.captureMs;
      return (shown && newestUpTo(entries, (e) => e.captureMs, shown + CAPTURE_SLACK_MS)) || latest;
    }
    const pts = this.shownPts();
    return (pts != null && newestUpTo(entries, (e) => e.pts, pts)) || latest;
  }
}
