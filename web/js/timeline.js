// The replay player's one scrubber: segments, freezes and a marker per mark, snapshot, freeze and
// chat message (click to jump there), the playhead (drag it, tap anywhere, or arrow keys), the
// play/pause button beside it, and the filters of which marks are shown. The <video> has no
// controls of its own: one time line, not two that disagree about segments.

import { hasText, msg, setAttr, setText } from "./i18n.js";
import { $, clock, el } from "./ui.js";

/** "arrow by Dr Kim" in the page's language (a msg()). */
function markLabel(tool, who) {
  const name = hasText(`tool.${tool}`) ? msg(`tool.${tool}`) : msg("timeline.markTool");
  return msg("timeline.mark", { tool: name, who });
}

const DRAG_SEEK_MS = 150; // while dragging, seek at most this often (the playhead follows at once)

export class Timeline {
  /**
   * @param {object} o
   * @param {import("./player.js").Player} o.player
   * @param {import("./overlay.js").Overlay} o.overlay
   * @param {(identity: string) => string} o.describe
   */
  constructor({ player, overlay, describe }) {
    Object.assign(this, { player, overlay, describe });
    this.track = $("#timeline-track");
    this.playhead = $("#timeline-playhead");
    this.time = $("#timeline-time");
    this.total = $("#timeline-total");
    this.authors = $("#author-filter");
    this.showMarks = $("#show-annotations");
    this.playToggle = $("#play-toggle");
    this._bind();
    this._bindScrubbing();
    this._bindPlayback();
  }

  /** Draws the timeline of `detail` (the recording's JSON). */
  render(detail) {
    const track = this.track;
    const describe = this.describe;
    track.replaceChildren(this.playhead);
    const total = this.player.totalSpan(detail);
    const pct = (t) => `${(Math.max(0, Math.min(total, t)) / total) * 100}%`;
    for (const m of detail.media) {
      const block = document.createElement("div");
      block.className = "timeline-segment";
      block.style.left = pct(m.offset_s);
      block.style.width = `${(m.duration_s / total) * 100}%`;
      track.append(block);
    }
    const markers = [];
    for (const mark of detail.timeline.marks) {
      markers.push({ kind: "annotation", t: Math.max(0, mark.start_t), author: mark.author, label: markLabel(mark.tool, describe(mark.author)) });
    }
    for (const s of detail.snapshots) markers.push({ kind: "snapshot", t: s.t, author: s.by, label: msg("timeline.snapshot", { who: describe(s.by) }) });
    for (const c of detail.timeline.chat || []) {
      markers.push({ kind: "chat", t: Math.max(0, c.t), author: c.from, label: msg("timeline.chat", { who: c.name || describe(c.from) }) });
    }
    detail.timeline.freezes.forEach((f) => {
      markers.push({ kind: "freeze", t: Math.max(0, f.start_t), author: f.by, label: msg("timeline.freeze", { who: describe(f.by) }) });
      const bar = document.createElement("div");
      bar.className = "timeline-freeze";
      bar.style.left = pct(f.start_t);
      bar.style.width = `${((Math.min(total, f.end_t ?? total) - Math.max(0, f.start_t)) / total) * 100}%`;
      track.append(bar);
    });
    markers.sort((a, b) => a.t - b.t);
    for (const m of markers) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "timeline-marker";
      button.dataset.kind = m.kind;
      button.dataset.t = m.t.toFixed(3);
      button.dataset.author = m.author || "";
      button.setAttribute("data-testid", "timeline-marker");
      setAttr(button, "title", msg("timeline.title", { time: clock(m.t), what: m.label }));
      setAttr(button, "aria-label", msg("timeline.jump", { time: clock(m.t), what: m.label }));
      button.style.left = pct(m.t);
      button.addEventListener("click", (event) => {
        event.stopPropagation();
        this.player.seek(m.t);
      });
      track.append(button);
    }
    track.setAttribute("aria-valuemax", total.toFixed(1));
    this.total.textContent = clock(total);
    this._renderAuthors(detail);
    this._updateMarkerVisibility();
  }

  /** Moves the playhead to recording time `t`. */
  showTime(t) {
    const total = this.player.totalSpan();
    this.playhead.style.left = `${(Math.max(0, Math.min(total, t)) / total) * 100}%`;
    this.track.setAttribute("aria-valuenow", t.toFixed(1));
    this.time.textContent = clock(t);
  }

  _bind() {
    const player = this.player;
    this.track.addEventListener("keydown", (event) => {
      if (!player.detail) return;
      const step = event.shiftKey ? 10 : 1;
      if (event.key === "ArrowRight") player.seek(player.time() + step);
      else if (event.key === "ArrowLeft") player.seek(Math.max(0, player.time() - step));
      else return;
      event.preventDefault();
    });
    this.showMarks.addEventListener("change", () => {
      this.overlay.showMarks = this.showMarks.checked;
      this._updateMarkerVisibility();
      this.overlay.invalidate();
    });
  }

  /** Press (mouse, pen or finger) and drag on the track: the playhead follows, the video seeks. */
  _bindScrubbing() {
    const { player, track } = this;
    let drag = null; // {pointerId, t, lastSeek}
    const timeAt = (event) => {
      const box = track.getBoundingClientRect();
      const share = Math.max(0, Math.min(1, (event.clientX - box.left) / box.width));
      return share * player.totalSpan();
    };
    const seek = (now) => {
      drag.lastSeek = now;
      player.seek(drag.t);
    };
    track.addEventListener("pointerdown", (event) => {
      if (!player.detail || event.target.closest(".timeline-marker") || (event.pointerType === "mouse" && event.button !== 0)) return;
      drag = { pointerId: event.pointerId, t: timeAt(event), lastSeek: 0 };
      track.setPointerCapture?.(event.pointerId);
      this.showTime(drag.t);
      seek(performance.now());
      event.preventDefault();
    });
    track.addEventListener("pointermove", (event) => {
      if (!drag || event.pointerId !== drag.pointerId) return;
      drag.t = timeAt(event);
      this.showTime(drag.t);
      const now = performance.now();
      if (now - drag.lastSeek >= DRAG_SEEK_MS) seek(now);
    });
    const end = (event) => {
      if (!drag || event.pointerId !== drag.pointerId) return;
      if (event.type === "pointerup") drag.t = timeAt(event);
      seek(performance.now());
      drag = null;
    };
    track.addEventListener("pointerup", end);
    track.addEventListener("pointercancel", end);
  }

  /** The play/pause button (and a tap on the picture) and its label. */
  _bindPlayback() {
    const video = this.player.video;
    const toggle = () => {
      if (!this.player.detail) return;
      if (video.paused || video.ended) video.play().catch(() => {});
      else video.pause();
    };
    const show = () => {
      const playing = !video.paused && !video.ended;
      const label = msg(playing ? "replay.pause" : "replay.play");
      this.playToggle.setAttribute("aria-pressed", String(playing));
      setAttr(this.playToggle, "aria-label", label);
      setAttr(this.playToggle, "title", label);
    };
    this.playToggle.addEventListener("click", toggle);
    video.addEventListener("click", toggle);
    for (const event of ["play", "pause", "ended", "emptied"]) video.addEventListener(event, show);
    show();
  }

  /** One checkbox per author of marks: hides or shows that author's marks. */
  _renderAuthors(detail) {
    const hidden = this.overlay.hiddenAuthors;
    const authors = [...new Set(detail.timeline.marks.map((m) => m.author))];
    this.authors.replaceChildren();
    const legend = document.createElement("legend");
    setText(legend, msg("timeline.authors"));
    this.authors.append(legend);
    for (const author of authors) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = true;
      box.value = author;
      box.setAttribute("data-testid", "author-toggle");
      box.addEventListener("change", () => {
        if (box.checked) hidden.delete(author);
        else hidden.add(author);
        this._updateMarkerVisibility();
        this.overlay.invalidate();
      });
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = detail.timeline.marks.find((m) => m.author === author)?.color || "#fff";
      label.append(box, swatch, el("span", { text: this.describe(author) }));
      this.authors.append(label);
    }
    this.authors.hidden = authors.length === 0;
  }

  _updateMarkerVisibility() {
    const { showMarks, hiddenAuthors } = this.overlay;
    for (const marker of this.track.querySelectorAll(".timeline-marker[data-kind='annotation']")) {
      marker.dataset.hidden = String(!showMarks || hiddenAuthors.has(marker.dataset.author));
    }
  }
}
