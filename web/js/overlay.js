// The replay player's overlay: the marks of the consultation drawn in sync with the video, and
// the frozen frame while the surgeon had everyone's picture frozen (docs/replay.md).
//
//   * Marks: the timeline (GET /api/recordings/{id}) lists every mark's states with their times
//     on the recording clock; the overlay draws, at `offset_s + video.currentTime`, each mark's
//     state at that time (pen strokes grow as they were drawn), fading ones fading out over their
//     last second, with drawing.js and geometry.js's picture rectangle — the same drawing as the
//     live pages.
//   * Anchored marks: the timeline's `placements` ([t, marks] where the tracker put them live, on
//     the recording clock) move them as they moved live (placements.js, drawing.js).
//   * Freezes: the player shows the frozen frame (the stored snapshot, or the recording's own
//     frame at the freeze) with the marks drawn on it, while the sound goes on: the picture
//     pauses as it did live.

import { drawPlacedMark } from "./drawing.js";
import { backingSize, pictureRect } from "./geometry.js";
import { msg, setText } from "./i18n.js";
import { between, parsePlacement, placementOf } from "./placements.js";
import { once } from "./player.js";
import { fetchSnapshotBlob } from "./snapshots.js";
import { $ } from "./ui.js";

const FADE_OUT_S = 1; // a fading mark's last second, alpha 1 → 0 (as on the live pages)
const STILL_TIMEOUT_MS = 8000;
const MAX_BETWEEN_S = 0.25; // placements further apart are not blended (tracking paused, a gap)

/** The timeline's placements, parsed once per recording: [{t, marks}], oldest first. */
function parsePlacements(timeline) {
  const placed = [];
  for (const item of Array.isArray(timeline?.placements) ? timeline.placements : []) {
    const entry = Array.isArray(item) && Number.isFinite(item[0]) ? parsePlacement({ marks: item[1] }) : null;
    if (entry) placed.push({ ...entry, t: item[0] });
  }
  return placed;
}

/** The state of `mark` at `t`: {mark (drawable JSON), alpha} or null. */
function markAt(mark, t) {
  if (t < mark.start_t || (mark.end_t != null && t >= mark.end_t)) return null;
  const versions = mark.versions;
  let lo = 0;
  let hi = versions.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (versions[mid][0] <= t) lo = mid;
    else hi = mid - 1;
  }
  const [, shapeIndex, count] = versions[lo];
  const shape = mark.shapes[shapeIndex];
  let alpha = 1;
  if (mark.end === "fade" && mark.end_t != null) {
    const span = Math.min(FADE_OUT_S, (mark.fade_s || 2 * FADE_OUT_S) / 2);
    alpha = Math.max(0, Math.min(1, (mark.end_t - t) / span));
  }
  return { mark: { ...shape, points: shape.points.slice(0, count) }, alpha };
}

export class Overlay {
  /**
   * @param {object} o
   * @param {import("./player.js").Player} o.player
   * @param {string} o.token
   * @param {(identity: string) => string} o.describe
   * @param {(t: number) => void} o.onTime  called with the recording time of every drawing
   */
  constructor({ player, token, describe, onTime }) {
    Object.assign(this, { player, token, describe, onTime });
    this.frame = $("#video-frame");
    this.canvas = $("#replay-overlay");
    this.ctx = this.canvas.getContext("2d");
    this.frozen = $("#frozen-frame");
    this.frozenBadge = $("#frozen-badge");
    this.gapBadge = $("#gap-badge");
    this.showMarks = true;
    this.hiddenAuthors = new Set();
    this.stills = new Map(); // freeze index → Promise<blob URL | null>
    this.frozenShown = null; // freeze index whose picture is shown
    this.renders = 0;
    this.rafId = 0;
    this.lastDrawn = [];
    this.placed = null; // {detail, entries}: the open recording's placements, parsed
    this.frozen.addEventListener("load", () => this.invalidate());
    new ResizeObserver(() => this.invalidate()).observe(this.frame);
  }

  /** Forgets the stills and filters of the recording that was open. */
  reset() {
    for (const still of this.stills.values()) still.then((url) => url && URL.revokeObjectURL(url));
    this.stills.clear();
    this.frozenShown = null;
    this.hiddenAuthors.clear();
    this.frozen.hidden = true;
    this.frozenBadge.hidden = true;
  }

  /** Redraws at the next frame, and on every frame while the video plays. */
  invalidate() {
    if (!this.rafId) {
      this.rafId = requestAnimationFrame(() => {
        this.rafId = 0;
        this._render();
        if (!this.player.video.paused && !this.player.video.ended) this.invalidate();
      });
    }
  }

  layout() {
    const box = this.canvas.getBoundingClientRect();
    let rect = null;
    if (!this.frozen.hidden && this.frozen.naturalWidth > 0) rect = pictureRect(this.frozen, this.canvas);
    else rect = pictureRect(this.player.video, this.canvas);
    return { box, rect };
  }

  _freezeAt(t) {
    const freezes = this.player.detail?.timeline.freezes || [];
    for (let i = 0; i < freezes.length; i += 1) {
      const f = freezes[i];
      if (t >= f.start_t && (f.end_t == null || t < f.end_t)) return i;
    }
    return -1;
  }

  /** The publisher was away: the segment ended and the next one starts later. */
  _gapAt(t) {
    const { detail, segment, video } = this.player;
    const media = detail?.media || [];
    const m = media[segment];
    return m && video.ended && t >= m.offset_s + m.duration_s - 0.05 && segment + 1 < media.length;
  }

  _render() {
    const canvas = this.canvas;
    const ctx = this.ctx;
    const detail = this.player.detail;
    const { box, rect } = this.layout();
    const { width, height } = backingSize(box.width, box.height, window.devicePixelRatio || 1);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, width, height);
    this.renders += 1;
    if (!detail) return;
    const t = this.player.time();
    this._updateFreeze(t);
    this.onTime(t);
    this.gapBadge.hidden = !this._gapAt(t);
    const drawn = [];
    const shownRect = this.layout().rect;
    if (shownRect && this.showMarks && box.width >= 1) {
      ctx.setTransform(width / box.width, 0, 0, height / box.height, 0, 0);
      ctx.save();
      ctx.beginPath();
      ctx.rect(shownRect.x, shownRect.y, shownRect.width, shownRect.height);
      ctx.clip();
      const placed = this._placedAt(detail, t);
      for (const mark of detail.timeline.marks) {
        if (this.hiddenAuthors.has(mark.author)) continue;
        const at = markAt(mark, t);
        if (!at || at.alpha <= 0) continue;
        const placement = placementOf(placed, mark);
        drawPlacedMark(ctx, at.mark, shownRect, at.alpha, placement, mark.author_name);
        drawn.push({ key: mark.key, alpha: at.alpha, author_name: mark.author_name || "", lost: placement?.lost ?? null });
      }
      ctx.restore();
    }
    this.lastDrawn = drawn;
    canvas.dataset.marks = String(drawn.length);
    canvas.dataset.t = t.toFixed(3);
    canvas.dataset.ready = rect ? "true" : "false";
  }

  /** The placements in force at recording time `t` (null: none, marks drawn as sent). */
  _placedAt(detail, t) {
    if (this.placed?.detail !== detail) this.placed = { detail, entries: parsePlacements(detail.timeline) };
    const entries = this.placed.entries; // in time order: the last one at or before t
    if (!entries.length || entries[0].t > t) return null;
    let lo = 0;
    let hi = entries.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (entries[mid].t <= t) lo = mid;
      else hi = mid - 1;
    }
    const next = entries[lo + 1];
    if (!next || next.t - entries[lo].t > MAX_BETWEEN_S) return entries[lo];
    return between(entries[lo], next, (t - entries[lo].t) / (next.t - entries[lo].t));
  }

  _updateFreeze(t) {
    const index = this._freezeAt(t);
    if (index < 0) {
      if (this.frozenShown != null) {
        this.frozenShown = null;
        this.frozen.hidden = true;
        this.frozen.removeAttribute("src");
        this.frozenBadge.hidden = true;
        this.frame.classList.remove("frozen");
      }
      return;
    }
    if (this.frozenShown === index) return;
    this.frozenShown = index;
    const freeze = this.player.detail.timeline.freezes[index];
    this.frame.classList.add("frozen");
    this.frozenBadge.hidden = false;
    setText(this.frozenBadge, msg("replay.frozenBy", { who: this.describe(freeze.by) }));
    this.frozenBadge.dataset.state = "loading";
    this._stillFor(index).then((url) => {
      if (this.frozenShown !== index) return;
      if (url) {
        this.frozen.src = url;
        this.frozen.hidden = false;
        this.frozenBadge.dataset.state = "shown";
      } else {
        this.frozenBadge.dataset.state = "no-image";
      }
      this.invalidate();
    });
  }

  /** The frozen picture of freeze `index`: its snapshot, else the recording's own frame there. */
  _stillFor(index) {
    if (!this.stills.has(index)) {
      const detail = this.player.detail;
      const freeze = detail.timeline.freezes[index];
      const cid = detail.recording.consultation.id;
      // A still of stills mode is a JPEG: its URL is in the recording's snapshot list.
      const listed = (detail.snapshots || []).find((s) => s.id === freeze.snapshot_id)?.url;
      const work = freeze.snapshot_id
        ? fetchSnapshotBlob(listed || `/api/consultations/${encodeURIComponent(cid)}/snapshots/${freeze.snapshot_id}.png`, this.token)
            .then((blob) => URL.createObjectURL(blob))
            .catch(() => this._captureStill(freeze.start_t))
        : this._captureStill(freeze.start_t);
      this.stills.set(index, work);
    }
    return this.stills.get(index);
  }

  /** Grabs the frame at recording time `t` with a hidden second player (the visible one plays on). */
  async _captureStill(t) {
    const media = this.player.detail.media;
    let index = media.findIndex((m) => t < m.offset_s + m.duration_s);
    if (index < 0) index = media.length - 1;
    const url = this.player.mediaUrl(index);
    if (!url) return null;
    const probe = document.createElement("video");
    probe.muted = true;
    probe.preload = "auto";
    try {
      const meta = once(probe, "loadeddata", STILL_TIMEOUT_MS);
      probe.src = url;
      await meta;
      const seeked = once(probe, "seeked", STILL_TIMEOUT_MS);
      probe.currentTime = Math.max(0, t - media[index].offset_s);
      await seeked;
      const canvas = document.createElement("canvas");
      canvas.width = probe.videoWidth;
      canvas.height = probe.videoHeight;
      canvas.getContext("2d").drawImage(probe, 0, 0);
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
      return blob ? URL.createObjectURL(blob) : null;
    } catch {
      return null;
    } finally {
      probe.removeAttribute("src");
      probe.load();
    }
  }
}
