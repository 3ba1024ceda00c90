// Live annotation (telestration) on top of the endoscope picture: an overlay canvas rendering
// every current mark of the consultation, the drawing tools, the laser pointer and the freeze
// frame. Protocol: docs/architecture.md, "Annotations (telestration), protocol v1 additions".
//
//   * Marks live in normalised frame coordinates (geometry.js): they land on the same spot of
//     the picture on every page, whatever the window size, letterboxing or resolution.
//   * What is drawn is what the server accepted (`welcome.annotations` + `annotation` ops, the
//     sender's own ops echoed back). The author's own stroke in progress is drawn locally at
//     once (a "draft") and replaced by the server's copy when the server has acknowledged its
//     final state; a draft the server does not acknowledge is resent, then reported — never
//     dropped silently.
//   * Outgoing annotation ops go through a token bucket (30/s, the server's limit): a pen stroke
//     streams `update`s while drawn, coalesced to the newest state; pointer moves ≤ 60/s.
//   * The canvas is redrawn in requestAnimationFrame only when something changed (a message, a
//     resize, a fade in progress), never in a permanent loop.
//   * Sizes follow the frame height like the burned-in rendition (relay/overlay.py): line width =
//     width × picture height, arrow head 4 widths (≥ 2 % of the height), text cap height 6 widths.

import { backingSize, intrinsicSize, pictureRect, toElement, toFrame } from "./geometry.js";
import { SnapshotGallery, fetchSnapshotBlob, uploadSnapshot } from "./snapshots.js";

export const TOOLS = [
  { id: "pen", label: "Pen", title: "Freehand pen" },
  { id: "arrow", label: "Arrow", title: "Arrow: drag from tail to tip" },
  { id: "circle", label: "Circle", title: "Circle / ellipse: drag across it" },
  { id: "rect", label: "Box", title: "Rectangle: drag across it" },
  { id: "text", label: "Text", title: "Text label: click where it starts" },
  { id: "pointer", label: "Laser", title: "Laser pointer: a dot the others see, not kept" },
];

// High contrast on red/pink mucosa: no reds.
export const COLORS = [
  { id: "green", value: "#00e676", label: "Green" },
  { id: "yellow", value: "#ffea00", label: "Yellow" },
  { id: "cyan", value: "#00e5ff", label: "Cyan" },
  { id: "blue", value: "#2979ff", label: "Blue" },
  { id: "magenta", value: "#ff40ff", label: "Magenta" },
  { id: "white", value: "#ffffff", label: "White" },
];

export const WIDTHS = [
  { id: "thin", value: 0.004, label: "Thin line" },
  { id: "medium", value: 0.008, label: "Medium line" },
  { id: "thick", value: 0.016, label: "Thick line" },
];

export const FADES = [
  { value: "", label: "Keep until cleared" },
  { value: "5", label: "Fade after 5 s" },
  { value: "10", label: "Fade after 10 s" },
  { value: "30", label: "Fade after 30 s" },
  { value: "60", label: "Fade after 1 min" },
];

const ANNOTATION_OPS_PER_S = 30; // server limit (docs/architecture.md)
const ANNOTATION_BURST = 6;
const POINTER_PER_S = 60;
const POINTER_BURST = 3;
const MAX_POINTS = 2000; // per mark; a longer stroke continues as a new mark
const MIN_STEP_PX = 1; // pen: a new point after this much movement (CSS px)
const MIN_SHAPE_PX = 4; // arrow/circle/rect smaller than this on screen are not drawn
const MAX_TEXT = 200;
const ACK_TIMEOUT_MS = 2000; // a finished mark the server has not echoed by then is resent
const ACK_RETRIES = 2;
const FADE_OUT_MS = 1000; // a fading mark's last second, alpha 1 → 0
const POINTER_HOLD_MS = 350; // laser dot: fully visible this long after its last move…
const POINTER_FADE_MS = 700; // …then fades out
const FREEZE_CONFIRM_MS = 5000;

const POINTER_COLORS = { surgeon: "#ff1744", clinic: "#00e5ff", observer: "#ffea00", admin: "#ff1744" };

// ------------------------------------------------------------------------------------ drawing

let capHeightRatio = null;

/** Cap height of the canvas sans-serif font as a fraction of its font size (measured once). */
function capRatio(ctx) {
  if (capHeightRatio == null) {
    ctx.save();
    ctx.font = "100px sans-serif";
    const m = ctx.measureText("H");
    ctx.restore();
    const ascent = m.actualBoundingBoxAscent;
    capHeightRatio = ascent > 0 ? ascent / 100 : 0.72;
  }
  return capHeightRatio;
}

/**
 * Draws one mark (annotation JSON) onto a 2-D context whose units are CSS px, with `rect` the
 * picture rectangle in those units.
 */
export function drawMark(ctx, mark, rect, alpha = 1) {
  const points = Array.isArray(mark.points) ? mark.points : [];
  if (!points.length || alpha <= 0) return;
  const lw = Math.max(1, mark.width * rect.height);
  const pts = points.map(([x, y]) => toElement(x, y, rect));
  ctx.save();
  ctx.globalAlpha = Math.min(1, alpha);
  ctx.strokeStyle = mark.color;
  ctx.fillStyle = mark.color;
  ctx.lineWidth = lw;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  switch (mark.tool) {
    case "pen":
      if (pts.length === 1) {
        ctx.beginPath();
        ctx.arc(pts[0].x, pts[0].y, lw / 2, 0, Math.PI * 2);
        ctx.fill();
      } else {
        ctx.beginPath();
        ctx.moveTo(pts[0].x, pts[0].y);
        for (let i = 1; i < pts.length; i += 1) ctx.lineTo(pts[i].x, pts[i].y);
        ctx.stroke();
      }
      break;
    case "arrow": {
      if (pts.length < 2) break;
      const [tail, head] = pts;
      const dx = head.x - tail.x;
      const dy = head.y - tail.y;
      const length = Math.hypot(dx, dy);
      ctx.beginPath();
      ctx.moveTo(tail.x, tail.y);
      ctx.lineTo(head.x, head.y);
      if (length > 0) {
        // Open head of two strokes at ±45°, like cv2.arrowedLine in the burned-in rendition.
        const headLen = Math.min(0.5 * length, Math.max(4 * lw, 0.02 * rect.height));
        const angle = Math.atan2(tail.y - head.y, tail.x - head.x);
        for (const side of [Math.PI / 4, -Math.PI / 4]) {
          ctx.moveTo(head.x, head.y);
          ctx.lineTo(head.x + headLen * Math.cos(angle + side), head.y + headLen * Math.sin(angle + side));
        }
      }
      ctx.stroke();
      break;
    }
    case "circle": {
      if (pts.length < 2) break;
      const [a, b] = pts;
      ctx.beginPath();
      ctx.ellipse((a.x + b.x) / 2, (a.y + b.y) / 2, Math.abs(b.x - a.x) / 2, Math.abs(b.y - a.y) / 2, 0, 0, Math.PI * 2);
      ctx.stroke();
      break;
    }
    case "rect": {
      if (pts.length < 2) break;
      const [a, b] = pts;
      ctx.lineJoin = "miter";
      ctx.strokeRect(Math.min(a.x, b.x), Math.min(a.y, b.y), Math.abs(b.x - a.x), Math.abs(b.y - a.y));
      break;
    }
    case "text": {
      const text = String(mark.text ?? "");
      if (!text) break;
      const capHeight = 6 * lw;
      ctx.font = `${(capHeight / capRatio(ctx)).toFixed(2)}px sans-serif`;
      ctx.textBaseline = "alphabetic";
      ctx.textAlign = "left";
      // A thin dark outline keeps light text legible on bright tissue; the anchor (left end of
      // the baseline) is exactly the point the author clicked.
      ctx.lineWidth = Math.max(1, capHeight * 0.12);
      ctx.strokeStyle = "rgba(0, 0, 0, 0.55)";
      ctx.strokeText(text, pts[0].x, pts[0].y);
      ctx.fillText(text, pts[0].x, pts[0].y);
      break;
    }
    default:
      break; // unknown tool from a newer server: not drawn
  }
  ctx.restore();
}

/** Draws a laser-pointer dot. */
export function drawPointer(ctx, x, y, color, rect, alpha) {
  if (alpha <= 0) return;
  const r = Math.max(5, 0.012 * rect.height);
  ctx.save();
  ctx.globalAlpha = alpha;
  ctx.beginPath();
  ctx.arc(x, y, r * 1.9, 0, Math.PI * 2);
  ctx.fillStyle = hexToRgba(color, 0.28);
  ctx.fill();
  ctx.beginPath();
  ctx.arc(x, y, r, 0, Math.PI * 2);
  ctx.fillStyle = color;
  ctx.fill();
  ctx.lineWidth = Math.max(1, r * 0.25);
  ctx.strokeStyle = "rgba(255, 255, 255, 0.9)";
  ctx.stroke();
  ctx.restore();
}

function hexToRgba(hex, a) {
  const v = parseInt(hex.slice(1), 16);
  return `rgba(${(v >> 16) & 255}, ${(v >> 8) & 255}, ${v & 255}, ${a})`;
}

/** Fade of a mark: 1 until its last second, then linear to 0 (fade_s after its last update). */
function markAlpha(entry, now) {
  if (entry.fadeEndsAt == null) return 1;
  const left = entry.fadeEndsAt - now;
  if (left <= 0) return 0;
  const span = Math.min(FADE_OUT_MS, entry.fadeMs / 2);
  return left >= span ? 1 : left / span;
}

function pointerAlpha(p, now) {
  const age = now - p.at;
  if (age <= POINTER_HOLD_MS) return 1;
  return Math.max(0, 1 - (age - POINTER_HOLD_MS) / POINTER_FADE_MS);
}

// ------------------------------------------------------------------------------------ sending

/**
 * Token bucket sender: ordered, never above `rate`/s (bursts of `burst`); consecutive updates of
 * a mark coalesce into the newest state, so a stroke drawn faster than the limit streams its
 * newest points at the limit's pace (bench/stroke_latency.py measures what that costs).
 */
export class Sender {
  constructor(send, rate, burst) {
    this.send = send;
    this.rate = rate;
    this.burst = burst;
    this.tokens = burst;
    this.last = performance.now();
    this.queue = [];
    this.timer = null;
  }

  push(message, coalesceKey = null) {
    const tail = this.queue[this.queue.length - 1];
    if (coalesceKey && tail && tail.key === coalesceKey) tail.message = message;
    else this.queue.push({ message, key: coalesceKey });
    this.drain();
  }

  clear() {
    this.queue = [];
    clearTimeout(this.timer);
    this.timer = null;
  }

  drain() {
    clearTimeout(this.timer);
    this.timer = null;
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    while (this.queue.length && this.tokens >= 1) {
      const { message } = this.queue.shift();
      this.tokens -= 1;
      this.send(message);
    }
    if (this.queue.length) {
      const wait = Math.max(1, ((1 - this.tokens) / this.rate) * 1000);
      this.timer = setTimeout(() => this.drain(), wait);
    }
  }
}

function newIdPrefix() {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

function keyOf(author, id) {
  return `${author}\u0000${id}`;
}

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
const ICONS = {
  pen: "M4 20c3-1 4-5 7-8s6-6 9-7",
  arrow: "M5 19L19 5M19 5h-8M19 5v8",
  circle: "M12 4a8 7 0 1 0 0.01 0z",
  rect: "M4 6h16v12H4z",
  text: "M5 6h14M12 6v13M9 19h6",
  pointer: "M12 12m-3 0a3 3 0 1 0 6 0a3 3 0 1 0 -6 0M12 3v3M12 18v3M3 12h3M18 12h3",
  undo: "M9 7L4 12l5 5M4 12h10a6 6 0 0 1 0 12",
  clear: "M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13",
  freeze: "M8 5v14M16 5v14",
  snapshot: "M4 8h4l2-3h4l2 3h4v11H4zM12 10a3.5 3.5 0 1 0 0.01 0z",
};

function icon(name) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.classList.add("icon");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", ICONS[name] || "");
  svg.append(path);
  return svg;
}

// ------------------------------------------------------------------------------------ layer

/**
 * The annotation overlay of one page.
 *
 * @param {object} o
 * @param {"surgeon"|"clinic"} o.page
 * @param {HTMLElement} o.frame       the positioned box around the <video>
 * @param {HTMLVideoElement} o.video  the live picture (remote video, or the clinic's preview)
 * @param {import("./room.js").Room} o.room
 * @param {object} o.session          GET /api/session (role, may_annotate, consultation)
 * @param {string} o.token
 * @param {import("./ui.js").Notices} o.notices
 * @param {HTMLElement} o.toolbarHost where the tools go (only with may_annotate)
 * @param {HTMLElement} [o.galleryHost] snapshots panel (surgeon page)
 * @param {(identity: string, role?: string) => string} o.describe
 */
export class AnnotationLayer {
  constructor(o) {
    this.page = o.page;
    this.frame = o.frame;
    this.video = o.video;
    this.room = o.room;
    this.session = o.session;
    this.token = o.token;
    this.cid = o.session.consultation;
    this.notices = o.notices;
    this.describe = o.describe || ((id) => id);
    this.canDraw = o.session.may_annotate === true;
    this.isLead = ["surgeon", "admin"].includes(o.session.role);

    this.marks = new Map(); // key → {mark, fadeEndsAt, fadeMs}
    this.drafts = new Map(); // own mark id → {mark, done, retries, timer, lastLen}
    this.pointers = new Map(); // identity → {x, y, at, color}
    this.localPointer = null;
    this.gesture = null;
    this.freeze = { frozen: false, snapshot: null, by: null };
    this.still = { source: "none", id: null }; // what the frozen-frame canvas shows
    this.stillLoad = 0; // bumped on every freeze change: a late download is dropped
    this.localStills = new Map(); // snapshot id → canvas (stills this page froze)
    this.frozenWho = "";
    this.freezeBusy = false;
    this.lastServerError = null;
    this.lastSize = null; // last known frame size (a restarting stream keeps marks in place)
    this.renders = 0;
    this.rafId = 0;
    this.wakeTimer = null;
    this.idPrefix = newIdPrefix();
    this.idCounter = 0;

    this.tool = this.canDraw && this.page === "surgeon" ? "pen" : null;
    this.color = this.page === "surgeon" ? COLORS[0].value : COLORS[1].value;
    this.width = WIDTHS[1].value;
    this.fadeS = null;

    this.ops = new Sender((m) => this._send(m), ANNOTATION_OPS_PER_S, ANNOTATION_BURST);
    // Pointer moves are fire-and-forget: a move lost while the room reconnects is not worth a notice.
    this.pointerOut = new Sender((m) => this.room.send(m) && this._traceSent(m), POINTER_PER_S, POINTER_BURST);

    this._buildOverlay();
    if (this.canDraw && o.toolbarHost) this._buildToolbar(o.toolbarHost);
    if (o.galleryHost) {
      this.gallery = new SnapshotGallery({
        host: o.galleryHost,
        cid: this.cid,
        token: this.token,
        describe: this.describe,
        notices: this.notices,
      });
      this.gallery.load();
    }
    this._bindRoom();
    this._bindInput();
    this._bindResize();
    this._applyTool();
    this.invalidate();
  }

  // ------------------------------------------------------------------ DOM

  _buildOverlay() {
    // The frozen frame: a canvas holding the still at the frame's full resolution, shown with
    // object-fit: contain exactly like the video, so the marks map onto it the same way.
    this.stillCanvas = el("canvas", {
      class: "frozen-frame",
      "data-testid": "frozen-frame",
      role: "img",
      "aria-label": "Frozen frame of the endoscope picture",
      hidden: true,
    });
    this.canvas = el("canvas", {
      class: "annotation-canvas",
      "data-testid": "annotation-canvas",
      role: "img",
      "aria-label": "Annotations drawn on the endoscope picture",
    });
    this.ctx = this.canvas.getContext("2d");
    this.frozenBadge = el("span", { class: "video-badge frozen-badge", "data-testid": "frozen-badge", hidden: true });
    this.textInput = el("input", {
      class: "annotation-text-input",
      "data-testid": "annotation-text-input",
      type: "text",
      maxlength: MAX_TEXT,
      autocomplete: "off",
      "aria-label": "Label text (Enter to place, Escape to cancel)",
      placeholder: "Label, Enter to place",
      hidden: true,
    });
    // After the <video>, before the status overlay: the overlay ("offline"…) stays on top.
    this.video.after(this.stillCanvas, this.canvas);
    this.frame.append(this.frozenBadge, this.textInput);
  }

  _buildToolbar(host) {
    const bar = el("div", {
      class: "annotation-toolbar",
      role: "toolbar",
      "aria-label": "Annotation tools",
      "data-testid": "annotation-toolbar",
    });
    this.toolButtons = new Map();
    const tools = el("div", { class: "tool-group", role: "group", "aria-label": "Drawing tool" });
    for (const t of TOOLS) {
      const b = el("button", {
        type: "button",
        class: "tool",
        "data-testid": `tool-${t.id}`,
        "aria-pressed": "false",
        title: t.title,
      });
      b.append(icon(t.id), el("span", { text: t.label }));
      b.addEventListener("click", () => this.setTool(this.tool === t.id ? null : t.id));
      this.toolButtons.set(t.id, b);
      tools.append(b);
    }

    this.colorButtons = new Map();
    const colors = el("div", { class: "tool-group swatches", role: "group", "aria-label": "Colour" });
    for (const c of COLORS) {
      const b = el("button", {
        type: "button",
        class: "swatch",
        "data-testid": `color-${c.id}`,
        "data-color": c.id,
        "aria-label": c.label,
        "aria-pressed": String(c.value === this.color),
        title: c.label,
      });
      b.addEventListener("click", () => this.setColor(c.value));
      this.colorButtons.set(c.value, b);
      colors.append(b);
    }

    this.widthButtons = new Map();
    const widths = el("div", { class: "tool-group widths", role: "group", "aria-label": "Line width" });
    for (const w of WIDTHS) {
      const b = el("button", {
        type: "button",
        class: "width",
        "data-testid": `width-${w.id}`,
        "data-width": w.id,
        "aria-label": w.label,
        "aria-pressed": String(w.value === this.width),
        title: w.label,
      });
      b.append(el("span", { class: "width-sample", "aria-hidden": "true" }));
      b.addEventListener("click", () => this.setWidth(w.value));
      this.widthButtons.set(w.value, b);
      widths.append(b);
    }

    const fadeId = `annotation-fade-${this.page}`;
    this.fadeSelect = el("select", { id: fadeId, "data-testid": "fade" });
    for (const f of FADES) this.fadeSelect.append(el("option", { value: f.value, text: f.label }));
    this.fadeSelect.addEventListener("change", () => {
      this.fadeS = this.fadeSelect.value ? Number(this.fadeSelect.value) : null;
    });
    const fade = el("div", { class: "tool-group" }, [
      el("label", { for: fadeId, class: "visually-hidden", text: "New marks" }),
      this.fadeSelect,
    ]);

    const actions = el("div", { class: "tool-group", role: "group", "aria-label": "Marks" });
    this.undoButton = el("button", { type: "button", "data-testid": "undo", title: "Undo your last mark (Ctrl+Z)" });
    this.undoButton.append(icon("undo"), el("span", { text: "Undo" }));
    this.undoButton.addEventListener("click", () => this.undo());
    actions.append(this.undoButton);
    if (this.isLead) {
      this.clearButton = el("button", { type: "button", "data-testid": "clear", title: "Remove every mark, for everyone" });
      this.clearButton.append(icon("clear"), el("span", { text: "Clear all" }));
      this.clearButton.addEventListener("click", () => this.clear());
      actions.append(this.clearButton);
    }
    bar.append(tools, colors, widths, fade, actions);

    if (this.isLead) {
      const picture = el("div", { class: "tool-group", role: "group", "aria-label": "Picture" });
      this.freezeButton = el("button", {
        type: "button",
        class: "freeze",
        "data-testid": "freeze",
        "aria-pressed": "false",
        title: "Pause everyone on the current frame",
      });
      this.freezeLabel = el("span", { text: "Freeze" });
      this.freezeButton.append(icon("freeze"), this.freezeLabel);
      this.freezeButton.addEventListener("click", () => this.toggleFreeze());
      this.snapshotButton = el("button", {
        type: "button",
        "data-testid": "snapshot",
        title: "Save the picture with its marks as a PNG",
      });
      this.snapshotButton.append(icon("snapshot"), el("span", { text: "Snapshot" }));
      this.snapshotButton.addEventListener("click", () => this.takeSnapshot());
      picture.append(this.freezeButton, this.snapshotButton);
      bar.append(picture);
    }
    this.status = el("p", { class: "hint annotation-status", "data-testid": "annotation-status", "aria-live": "polite" });
    host.append(bar, this.status);
    this._updateButtons();
  }

  setTool(tool) {
    this._cancelText();
    if (this.tool === "pointer" && tool !== "pointer") this._hideOwnPointer();
    this.tool = tool;
    this._applyTool();
  }

  setColor(color) {
    this.color = color;
    for (const [value, b] of this.colorButtons || []) b.setAttribute("aria-pressed", String(value === color));
  }

  setWidth(width) {
    this.width = width;
    for (const [value, b] of this.widthButtons || []) b.setAttribute("aria-pressed", String(value === width));
  }

  _applyTool() {
    for (const [id, b] of this.toolButtons || []) b.setAttribute("aria-pressed", String(id === this.tool));
    const active = this.canDraw && !!this.tool;
    this.canvas.dataset.tool = active ? this.tool : "";
    this.canvas.classList.toggle("drawing", active);
  }

  _updateButtons() {
    if (!this.undoButton) return;
    const me = this.room.you;
    let mine = this.drafts.size > 0;
    if (!mine && me) for (const e of this.marks.values()) if (e.mark.author === me) mine = true;
    this.undoButton.disabled = !mine;
    if (this.clearButton) this.clearButton.disabled = this.marks.size === 0 && this.drafts.size === 0;
    if (this.freezeButton) {
      const frozen = this.freeze.frozen;
      this.freezeButton.setAttribute("aria-pressed", String(frozen));
      this.freezeButton.disabled = this.freezeBusy;
      this.freezeLabel.textContent = this.freezeBusy ? (frozen ? "Resuming…" : "Freezing…") : frozen ? "Resume live" : "Freeze";
      this.freezeButton.title = frozen ? "Return everyone to the live picture" : "Pause everyone on the current frame";
    }
  }

  _say(text) {
    if (this.status) this.status.textContent = text;
  }

  // ------------------------------------------------------------------ room messages

  _bindRoom() {
    const room = this.room;
    room.addEventListener("welcome", (e) => this._onWelcome(e.detail));
    room.addEventListener("annotation", (e) => this._onAnnotation(e.detail));
    room.addEventListener("pointer", (e) => this._onPointer(e.detail));
    room.addEventListener("freeze", (e) => this._onFreeze(e.detail));
    room.addEventListener("snapshot", (e) => this.gallery?.add(e.detail.snapshot));
    room.addEventListener("presence", () => this._retainPointers());
    room.addEventListener("error", (e) => {
      const { code, reason } = e.detail || {};
      if (["invalid-message", "forbidden", "rate-limited"].includes(code)) this.lastServerError = reason || code;
    });
  }

  _onWelcome(msg) {
    if (msg.you && typeof msg.you === "object" && msg.you.may_annotate === false && this.canDraw) {
      this.canDraw = false; // the room knows better than the session we loaded
      this.tool = null;
      this._applyTool();
    }
    if (this._offline) {
      this._offline = false;
      this.notices?.clear("annotation-send");
    }
    this.marks.clear();
    const now = performance.now();
    for (const a of Array.isArray(msg.annotations) ? msg.annotations : []) this._store(a, now, true);
    // A reconnect: what the server does not hold of ours (sent while the socket was down, or a
    // stroke in progress) is sent again.
    this.ops.clear();
    for (const [id, d] of this.drafts) {
      const held = this.marks.has(keyOf(this.room.you, id));
      this.ops.push({ type: "annotation", op: held ? "update" : "add", annotation: d.mark }, `u:${id}`);
      if (d.done) this._armAck(id);
    }
    this._applyFreeze(msg.freeze && typeof msg.freeze === "object" ? msg.freeze : { frozen: false });
    this._updateButtons();
    this.invalidate();
  }

  _store(a, now, fromWelcome = false) {
    if (!a || typeof a !== "object" || typeof a.id !== "string") return;
    const entry = { mark: a, fadeEndsAt: null, fadeMs: 0 };
    if (typeof a.fade_s === "number" && a.fade_s > 0) {
      entry.fadeMs = a.fade_s * 1000;
      let left = entry.fadeMs;
      if (fromWelcome) {
        // Marks already on the board: what is left of their time (server clock, clamped).
        const updated = Date.parse(a.updated_at);
        if (Number.isFinite(updated)) left = Math.min(entry.fadeMs, Math.max(0, updated + entry.fadeMs - Date.now()));
      }
      entry.fadeEndsAt = now + left;
    }
    this.marks.set(keyOf(a.author, a.id), entry);
  }

  _onAnnotation(msg) {
    const now = performance.now();
    const me = this.room.you;
    const op = msg.op;
    if ((op === "add" || op === "update") && msg.annotation) {
      const a = msg.annotation;
      this._store(a, now);
      if (a.author === me) this._acknowledge(a);
    } else if ((op === "remove" || op === "undo") && typeof msg.id === "string") {
      // Ids are unique per author: the remover is the author (undo/remove touch own marks only).
      const author = msg.by ?? msg.author;
      this.marks.delete(keyOf(author, msg.id));
      if (author === me) this._dropDraft(msg.id);
    } else if (op === "clear") {
      this.marks.clear();
      // Our stroke in progress went with everyone's marks.
      for (const id of [...this.drafts.keys()]) this._dropDraft(id);
      if (this.gesture && this.gesture.kind === "mark") this.gesture = null;
      if (this.status && msg.by !== me) this._say("The surgeon cleared all marks.");
    }
    this._updateButtons();
    this.invalidate();
    this._trace("annotation", msg);
  }

  _onPointer(msg) {
    if (!msg.from || msg.from === this.room.you) return;
    const now = performance.now();
    if (typeof msg.x !== "number" || typeof msg.y !== "number") {
      const p = this.pointers.get(msg.from);
      // Hidden: fade out from now rather than vanish.
      if (p) p.at = Math.min(p.at, now - POINTER_HOLD_MS);
    } else {
      this.pointers.set(msg.from, { x: msg.x, y: msg.y, at: now, color: this._pointerColor(msg.from) });
    }
    this.invalidate();
    this._trace("pointer", msg);
  }

  _pointerColor(identity) {
    const p = (this.room.participants || []).find((x) => x && (x.identity === identity || x === identity));
    const role = (p && typeof p === "object" ? p.role : null) || String(identity).split("-")[0];
    return POINTER_COLORS[role] || POINTER_COLORS.observer;
  }

  _retainPointers() {
    const present = new Set((this.room.participants || []).map((p) => (typeof p === "string" ? p : p?.identity)));
    for (const id of [...this.pointers.keys()]) if (!present.has(id)) this.pointers.delete(id);
    this.invalidate();
  }

  /** Tests and the latency benchmark listen to this (no patient data: ids and counts). */
  _trace(type, msg) {
    this.canvas.dispatchEvent(
      new CustomEvent("endolink:applied", {
        detail: {
          at: performance.timeOrigin + performance.now(),
          type,
          op: msg.op ?? null,
          id: msg.annotation?.id ?? msg.id ?? null,
          points: msg.annotation?.points?.length ?? null,
          x: type === "pointer" ? msg.x ?? null : null,
          y: type === "pointer" ? msg.y ?? null : null,
        },
      }),
    );
  }

  /** For the latency benchmark: when a message left this page (ids and counts only). */
  _traceSent(message) {
    this.canvas.dispatchEvent(
      new CustomEvent("endolink:sent", {
        detail: {
          at: performance.timeOrigin + performance.now(),
          type: message.type,
          op: message.op ?? null,
          points: message.annotation?.points?.length ?? null,
          x: message.type === "pointer" ? message.x : null,
        },
      }),
    );
    return true;
  }

  // ------------------------------------------------------------------ own marks

  _nextId() {
    this.idCounter += 1;
    return `${this.idPrefix}-${this.idCounter.toString(36)}`;
  }

  _send(message) {
    if (this.room.send(message)) {
      this._traceSent(message);
      return true;
    }
    // Room down: drafts are resent from `welcome` after the reconnect; say so once.
    this.notices?.show("annotation-send", "Room connection down: your marks are shared when it is back.", "warn");
    this._offline = true;
    return false;
  }

  _newMark(tool, points, extra = {}) {
    const mark = { id: this._nextId(), tool, color: this.color, width: this.width, points, fade_s: this.fadeS, ...extra };
    if (mark.fade_s == null) mark.fade_s = null;
    return mark;
  }

  _sendMark(draft, op) {
    this.ops.push({ type: "annotation", op, annotation: { ...draft.mark, points: draft.mark.points.slice() } }, `u:${draft.mark.id}`);
    draft.sent = true;
  }

  _finishDraft(id) {
    const d = this.drafts.get(id);
    if (!d) return;
    d.done = true;
    this._armAck(id);
  }

  _armAck(id) {
    const d = this.drafts.get(id);
    if (!d) return;
    clearTimeout(d.timer);
    d.timer = setTimeout(() => this._ackTimeout(id), ACK_TIMEOUT_MS);
  }

  _ackTimeout(id) {
    const d = this.drafts.get(id);
    if (!d) return;
    if (this.room.state !== "open") {
      this._armAck(id); // resent from `welcome`
      return;
    }
    if (d.retries >= ACK_RETRIES) {
      this._dropDraft(id);
      const why = this.lastServerError ? ` (server: ${this.lastServerError})` : "";
      this.notices?.show("annotation", `A mark could not be shared and was removed${why}.`, "error");
      setTimeout(() => this.notices?.clear("annotation"), 10000);
      this.invalidate();
      this._updateButtons();
      return;
    }
    d.retries += 1;
    const held = this.marks.has(keyOf(this.room.you, id));
    this._sendMark(d, held ? "update" : "add");
    this._armAck(id);
  }

  _acknowledge(a) {
    const d = this.drafts.get(a.id);
    if (!d || !d.done) return;
    const mine = d.mark.points;
    const theirs = a.points || [];
    const last = (p) => (p ? `${p[0]},${p[1]}` : "");
    if (theirs.length === mine.length && last(theirs[theirs.length - 1]) === last(mine[mine.length - 1]) && (a.text ?? null) === (d.mark.text ?? null)) {
      this._dropDraft(a.id);
      if (this._offline) {
        this._offline = false;
        this.notices?.clear("annotation-send");
      }
    }
  }

  _dropDraft(id) {
    const d = this.drafts.get(id);
    if (!d) return;
    clearTimeout(d.timer);
    this.drafts.delete(id);
  }

  undo() {
    this._cancelText();
    this.ops.push({ type: "annotation", op: "undo" });
    this._say("Undo sent.");
  }

  clear() {
    if (!this.isLead) return;
    this.ops.push({ type: "annotation", op: "clear" });
    this._say("All marks cleared.");
  }

  // ------------------------------------------------------------------ input

  _bindInput() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => this._onDown(e));
    c.addEventListener("pointermove", (e) => this._onMove(e));
    c.addEventListener("pointerup", (e) => this._onUp(e));
    c.addEventListener("pointercancel", (e) => this._onUp(e));
    c.addEventListener("lostpointercapture", (e) => this._onUp(e));
    c.addEventListener("pointerleave", (e) => {
      if (this.tool === "pointer" && !this.gesture && e.pointerType !== "touch") this._hideOwnPointer();
    });
    c.addEventListener("contextmenu", (e) => {
      if (this.canDraw && this.tool) e.preventDefault();
    });
    this.textInput.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        this._commitText();
      } else if (e.key === "Escape") {
        e.preventDefault();
        this._cancelText();
      }
    });
    // Leaving the field places the label (unless it was closed or reopened meanwhile).
    this.textInput.addEventListener("blur", () => {
      const generation = this.textGeneration;
      setTimeout(() => {
        if (generation === this.textGeneration && document.activeElement !== this.textInput) this._commitText();
      }, 0);
    });
    document.addEventListener("keydown", (e) => {
      if (!this.canDraw || !(e.ctrlKey || e.metaKey) || e.key.toLowerCase() !== "z" || e.shiftKey) return;
      const t = e.target;
      if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
      e.preventDefault();
      this.undo();
    });
  }

  /** Event → {x, y (normalised, clamped), inside, rect} or null without a picture. */
  _map(e, layout = this._layout()) {
    if (!layout.rect) return null;
    const box = layout.box;
    return { ...toFrame(e.clientX - box.left, e.clientY - box.top, layout.rect), rect: layout.rect };
  }

  _onDown(e) {
    if (!this.canDraw || !this.tool || this.gesture) return;
    if (e.pointerType === "mouse" && e.button !== 0) return;
    const layout = this._layout();
    const p = this._map(e, layout);
    if (!p) {
      this._say("No picture yet: marks can be drawn once the video shows.");
      return;
    }
    if (!p.inside) return; // started in a letterbox bar: ignored (geometry.js)
    e.preventDefault();
    try {
      this.canvas.setPointerCapture(e.pointerId);
    } catch {
      /* synthetic or already released pointer: capture is a convenience */
    }
    const start = [p.x, p.y];
    if (this.tool === "pointer") {
      this.gesture = { kind: "pointer", pointerId: e.pointerId };
      this._movePointer(p);
      return;
    }
    if (this.tool === "text") {
      this._openText(start, e.clientX - layout.box.left, e.clientY - layout.box.top);
      return;
    }
    if (this.tool === "pen") {
      const mark = this._newMark("pen", [start]);
      const draft = { mark, done: false, retries: 0, timer: null };
      this.drafts.set(mark.id, draft);
      this._sendMark(draft, "add");
      this.gesture = { kind: "mark", pointerId: e.pointerId, id: mark.id, tool: "pen", last: start, rect: p.rect };
    } else {
      this.gesture = { kind: "mark", pointerId: e.pointerId, id: null, tool: this.tool, start, rect: p.rect, downX: e.clientX, downY: e.clientY };
    }
    this._updateButtons();
    this.invalidate();
  }

  _onMove(e) {
    const g = this.gesture;
    if (this.tool === "pointer" && !g && e.pointerType !== "touch" && this.canDraw) {
      // Mouse and pen hover point; touch points while touching.
      const p = this._map(e);
      if (p) {
        if (p.inside) this._movePointer(p);
        else this._hideOwnPointer();
      }
      return;
    }
    if (!g || e.pointerId !== g.pointerId) return;
    if (g.kind === "pointer") {
      const p = this._map(e);
      if (p) {
        if (p.inside) this._movePointer(p);
        else this._hideOwnPointer();
      }
      return;
    }
    const layout = this._layout();
    if (!layout.rect) return;
    const events = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
    const list = events.length ? events : [e];
    if (g.tool === "pen") {
      let changed = false;
      for (const ev of list) {
        const p = this._map(ev, layout);
        if (!p) continue;
        const d = this.drafts.get(g.id);
        if (!d) {
          this.gesture = null; // cleared meanwhile
          return;
        }
        const dx = (p.x - g.last[0]) * layout.rect.width;
        const dy = (p.y - g.last[1]) * layout.rect.height;
        if (Math.hypot(dx, dy) < MIN_STEP_PX) continue;
        if (d.mark.points.length >= MAX_POINTS) {
          // Long stroke: finish this mark, continue seamlessly in a new one.
          this._sendMark(d, "update");
          this._finishDraft(g.id);
          const next = this._newMark("pen", [g.last]);
          const nd = { mark: next, done: false, retries: 0, timer: null };
          this.drafts.set(next.id, nd);
          this._sendMark(nd, "add");
          g.id = next.id;
        }
        const cur = this.drafts.get(g.id);
        cur.mark.points.push([p.x, p.y]);
        g.last = [p.x, p.y];
        changed = true;
      }
      if (changed) {
        this._sendMark(this.drafts.get(g.id), "update");
        this.invalidate();
      }
      return;
    }
    const p = this._map(e, layout);
    if (!p) return;
    const end = [p.x, p.y];
    if (!g.id) {
      if (Math.hypot(e.clientX - g.downX, e.clientY - g.downY) < MIN_SHAPE_PX) return;
      const mark = this._newMark(g.tool, [g.start, end]);
      const draft = { mark, done: false, retries: 0, timer: null };
      this.drafts.set(mark.id, draft);
      g.id = mark.id;
      this._sendMark(draft, "add");
    } else {
      const d = this.drafts.get(g.id);
      if (!d) {
        this.gesture = null;
        return;
      }
      d.mark.points = [g.start, end];
      this._sendMark(d, "update");
    }
    this._updateButtons();
    this.invalidate();
  }

  _onUp(e) {
    const g = this.gesture;
    if (!g || e.pointerId !== g.pointerId) return;
    this.gesture = null;
    if (g.kind === "pointer") {
      // The dot stays where it was and fades (here and for the others) unless the mouse hovers on.
      return;
    }
    if (!g.id) return; // a click with a shape tool: nothing drawn
    const d = this.drafts.get(g.id);
    if (!d) return;
    if (e.type === "pointerup" && g.tool !== "pen") {
      const p = this._map(e);
      if (p) {
        const end = [p.x, p.y];
        const [, old] = d.mark.points;
        if (old[0] !== end[0] || old[1] !== end[1]) {
          d.mark.points = [g.start, end];
          this._sendMark(d, "update");
        }
      }
    } else if (e.type === "pointerup" && g.tool === "pen") {
      const p = this._map(e);
      if (p && (p.x !== g.last[0] || p.y !== g.last[1])) {
        d.mark.points.push([p.x, p.y]);
        this._sendMark(d, "update");
      }
    }
    this._finishDraft(g.id);
    this._updateButtons();
    this.invalidate();
  }

  _movePointer(p) {
    this.localPointer = { x: p.x, y: p.y, at: performance.now(), color: POINTER_COLORS[this.session.role] || POINTER_COLORS.observer };
    this.pointerOut.push({ type: "pointer", x: p.x, y: p.y }, "pointer");
    this.invalidate();
  }

  _hideOwnPointer() {
    if (!this.localPointer) return;
    this.localPointer.at = Math.min(this.localPointer.at, performance.now() - POINTER_HOLD_MS);
    this.localPointer.hidden = true;
    this.pointerOut.push({ type: "pointer", x: null, y: null }, "pointer");
    this.invalidate();
  }

  // ------------------------------------------------------------------ text labels

  _openText(anchor, cssX, cssY) {
    this._commitText(); // a label still being typed is placed first
    this.textGeneration = (this.textGeneration || 0) + 1;
    this.textAnchor = anchor;
    const input = this.textInput;
    input.value = "";
    input.hidden = false;
    const maxLeft = Math.max(0, this.frame.clientWidth - 220);
    input.style.left = `${Math.min(cssX, maxLeft)}px`;
    input.style.top = `${Math.max(0, cssY - 36)}px`;
    input.focus();
  }

  _commitText() {
    if (this.textInput.hidden || !this.textAnchor) return;
    const text = this.textInput.value.trim().slice(0, MAX_TEXT);
    const anchor = this.textAnchor;
    this._cancelText();
    if (!text) return;
    const mark = this._newMark("text", [anchor], { text });
    const draft = { mark, done: true, retries: 0, timer: null };
    this.drafts.set(mark.id, draft);
    this._sendMark(draft, "add");
    this._armAck(mark.id);
    this._updateButtons();
    this.invalidate();
  }

  _cancelText() {
    this.textGeneration = (this.textGeneration || 0) + 1;
    this.textAnchor = null;
    if (!this.textInput.hidden) {
      this.textInput.hidden = true;
      this.textInput.value = "";
    }
  }

  // ------------------------------------------------------------------ freeze

  _onFreeze(msg) {
    this._applyFreeze(msg);
    this._trace("freeze", msg);
  }

  _applyFreeze(f) {
    const frozen = f.frozen === true;
    const snapshot = frozen && f.snapshot && typeof f.snapshot === "object" && f.snapshot.id ? f.snapshot : null;
    this.freeze = { frozen, snapshot, by: f.by ?? null };
    if (this._freezeWait && (!frozen || snapshot?.id === this._freezeWait.id)) this._freezeWait.resolve(frozen);
    if (snapshot) this.gallery?.markFrozen(snapshot.id);
    if (!frozen) {
      this.stillLoad += 1;
      this._hideStill();
      this.frozenBadge.hidden = true;
      this.frame.classList.remove("frozen");
      this.notices?.clear("freeze-image");
      this._updateButtons();
      this.invalidate();
      return;
    }
    this.frame.classList.add("frozen");
    this.frozenBadge.hidden = false;
    this.frozenWho = f.by && f.by === this.room.you ? "(by you)" : "(by the surgeon)";
    if (snapshot && this.still.source === "snapshot" && this.still.id === snapshot.id) {
      this._badge("shown");
    } else {
      // Stop on our own picture at once (what this page shows now, about one network delay
      // after the surgeon's still), then replace it with the surgeon's stored still, so every
      // page ends up on the very same frame.
      if (this.still.source === "none") this._showStill(this.video, "own", null);
      if (snapshot) this._loadSnapshotStill(snapshot);
      else this._badge(this.still.source === "none" ? "no-image" : "own");
    }
    this._updateButtons();
    this.invalidate();
  }

  _badge(state) {
    const who = this.frozenWho || "";
    const text = {
      pending: "FREEZING…",
      loading: `FROZEN ${who}`,
      shown: `FROZEN ${who}`,
      own: `FROZEN ${who}, own picture`,
      "no-image": `FROZEN ${who}, no picture`,
    }[state];
    this.frozenBadge.hidden = false;
    this.frozenBadge.textContent = text;
    this.frozenBadge.dataset.state = state;
  }

  async _loadSnapshotStill(snapshot) {
    const load = ++this.stillLoad;
    const id = snapshot.id;
    this._badge("loading");
    let bitmap;
    try {
      let source = this.localStills.get(id); // a still this page froze: no download
      if (!source) {
        const url = snapshot.url || `/api/consultations/${encodeURIComponent(this.cid)}/snapshots/${id}.png`;
        source = await fetchSnapshotBlob(url, this.token);
      }
      bitmap = await createImageBitmap(source);
    } catch (err) {
      if (load !== this.stillLoad || !this.freeze.frozen) return;
      const fallback = this.still.source === "none" ? "the marks stay on the live picture" : "this page shows its own still instead";
      this._badge(this.still.source === "none" ? "no-image" : "own");
      this.notices?.show("freeze-image", `The surgeon's frozen frame could not be loaded (${err.message}): ${fallback}.`, "warn");
      return;
    }
    if (load !== this.stillLoad || !this.freeze.frozen) {
      bitmap.close();
      return;
    }
    this._showStill(bitmap, "snapshot", id);
    bitmap.close();
    this.notices?.clear("freeze-image");
    this._badge("shown");
  }

  /** Shows a still (video, bitmap, canvas) in the frozen-frame canvas at its full resolution. */
  _showStill(source, kind, id) {
    const size = source instanceof HTMLVideoElement ? intrinsicSize(source) : { width: source.width, height: source.height };
    if (!size || !(size.width > 0 && size.height > 0)) return false;
    const still = this.stillCanvas;
    if (still.width !== size.width || still.height !== size.height) {
      still.width = size.width;
      still.height = size.height;
    }
    still.getContext("2d").drawImage(source, 0, 0, size.width, size.height);
    still.hidden = false;
    still.dataset.source = kind;
    still.dataset.snapshot = id || "";
    this.still = { source: kind, id };
    this.invalidate();
    return true;
  }

  _hideStill() {
    this.stillCanvas.hidden = true;
    this.stillCanvas.dataset.source = "";
    this.stillCanvas.dataset.snapshot = "";
    this.still = { source: "none", id: null };
  }

  _unshowPending() {
    if (this.freeze.frozen) return;
    this._hideStill();
    this.frozenBadge.hidden = true;
    this.invalidate();
  }

  async toggleFreeze() {
    if (!this.isLead || this.freezeBusy) return;
    this.freezeBusy = true;
    this._updateButtons();
    try {
      if (this.freeze.frozen) {
        if (!this.room.send({ type: "freeze", frozen: false })) throw new Error("the room connection is down");
        await this._awaitFreeze(null);
        this._say("Back to the live picture.");
      } else {
        await this._freezeNow();
      }
      this.notices?.clear("freeze");
    } catch (err) {
      this.notices?.show("freeze", `Freeze failed: ${err.message}.`, "error");
      this._say("");
    } finally {
      this.freezeBusy = false;
      this._updateButtons();
    }
  }

  async _freezeNow() {
    const size = intrinsicSize(this.video);
    if (!size) throw new Error("no picture to freeze yet");
    const capture = document.createElement("canvas");
    capture.width = size.width;
    capture.height = size.height;
    capture.getContext("2d").drawImage(this.video, 0, 0, size.width, size.height);
    // This page stops on the frame the surgeon clicked at once; the others when the server
    // confirms. A failure goes back to the live picture (toggleFreeze reports it).
    this.frozenWho = "(by you)";
    this._showStill(capture, "pending", null);
    this._badge("pending");
    this._say("Freezing: saving the frame…");
    try {
      const blob = await canvasToPng(capture);
      const snapshot = await uploadSnapshot(this.cid, this.token, blob);
      this.localStills.set(snapshot.id, capture);
      this.gallery?.add(snapshot, blob, { frozen: true });
      if (!this.room.send({ type: "freeze", frozen: true, snapshot_id: snapshot.id })) {
        throw new Error("the room connection is down");
      }
      await this._awaitFreeze(snapshot.id);
    } catch (err) {
      this._unshowPending();
      throw err;
    }
    this._say("Picture frozen for everyone. Press “Resume live” to go back.");
  }

  _awaitFreeze(id) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._freezeWait = null;
        reject(new Error(this.lastServerError ? `server: ${this.lastServerError}` : "the server did not confirm"));
      }, FREEZE_CONFIRM_MS);
      this._freezeWait = {
        id,
        resolve: () => {
          clearTimeout(timer);
          this._freezeWait = null;
          resolve();
        },
      };
    });
  }

  // ------------------------------------------------------------------ snapshot

  /** The frame on screen (frozen image or live video) with every visible mark, as a PNG blob. */
  async composeSnapshot() {
    const source = this._stillShown() ? this.stillCanvas : this.video;
    const size = intrinsicSize(source);
    if (!size) throw new Error("no picture yet");
    const canvas = document.createElement("canvas");
    canvas.width = size.width;
    canvas.height = size.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(source, 0, 0, size.width, size.height);
    const rect = { x: 0, y: 0, width: size.width, height: size.height };
    const now = performance.now();
    for (const m of this._visibleMarks(now)) drawMark(ctx, m.mark, rect, m.alpha);
    return canvasToPng(canvas);
  }

  async takeSnapshot() {
    if (!this.isLead || this.snapshotBusy) return;
    this.snapshotBusy = true;
    this.snapshotButton.disabled = true;
    this._say("Saving snapshot…");
    try {
      const blob = await this.composeSnapshot();
      const snapshot = await uploadSnapshot(this.cid, this.token, blob);
      const link = this.gallery?.add(snapshot, blob);
      this._say("");
      if (this.status) {
        const a = el("a", {
          href: link?.href || URL.createObjectURL(blob),
          download: link?.download || "endolink-snapshot.png",
          "data-testid": "snapshot-link",
          text: "Download it",
        });
        this.status.append("Snapshot saved with the consultation. ", a);
      }
      this.notices?.clear("snapshot");
    } catch (err) {
      this._say("");
      this.notices?.show("snapshot", `Snapshot not saved: ${err.message}.`, "error");
    } finally {
      this.snapshotBusy = false;
      this.snapshotButton.disabled = false;
    }
  }

  // ------------------------------------------------------------------ rendering

  _bindResize() {
    const ro = new ResizeObserver(() => this.invalidate());
    ro.observe(this.frame);
    this.video.addEventListener("resize", () => this.invalidate());
    this.video.addEventListener("loadedmetadata", () => this.invalidate());
    const watchDpr = () => {
      const mq = matchMedia(`(resolution: ${window.devicePixelRatio}dppx)`);
      mq.addEventListener(
        "change",
        () => {
          this.invalidate();
          watchDpr();
        },
        { once: true },
      );
    };
    watchDpr();
  }

  /** A still is on screen (frozen, or this page's own freeze still being confirmed). */
  _stillShown() {
    return !this.stillCanvas.hidden && this.still.source !== "none";
  }

  /** Canvas box and picture rectangle (CSS px, relative to the canvas). */
  _layout() {
    const box = this.canvas.getBoundingClientRect();
    let rect = null;
    if (this._stillShown()) {
      rect = pictureRect(this.stillCanvas, this.canvas);
    } else {
      const size = intrinsicSize(this.video);
      if (size) this.lastSize = size;
      rect = this.lastSize ? pictureRect(this.video, this.canvas, this.lastSize) : null;
    }
    return { box, rect };
  }

  invalidate() {
    if (!this.rafId) this.rafId = requestAnimationFrame(() => this._render());
  }

  _visibleMarks(now) {
    const me = this.room.you;
    const out = [];
    for (const [key, e] of this.marks) {
      const alpha = markAlpha(e, now);
      if (alpha <= 0) {
        this.marks.delete(key); // faded out: the server dropped it too
        continue;
      }
      if (e.mark.author === me && this.drafts.has(e.mark.id)) continue; // our newer local copy
      out.push({ mark: e.mark, alpha, entry: e });
    }
    for (const d of this.drafts.values()) {
      const e = this.marks.get(keyOf(me, d.mark.id));
      const alpha = e ? markAlpha(e, now) : 1;
      if (alpha > 0) out.push({ mark: d.mark, alpha, entry: e });
    }
    return out;
  }

  _render() {
    this.rafId = 0;
    const now = performance.now();
    const { box, rect } = this._layout();
    const { width, height, ratio } = backingSize(box.width, box.height, window.devicePixelRatio || 1);
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, width, height);
    if (box.width < 1 || box.height < 1) return; // not laid out (hidden): redrawn on resize
    let animate = false;
    let wakeAt = Infinity;
    const marks = this._visibleMarks(now);
    if (rect) {
      // Scale so that 1 unit = 1 CSS px, whatever the backing store's size.
      ctx.setTransform(width / box.width, 0, 0, height / box.height, 0, 0);
      ctx.save();
      ctx.beginPath();
      ctx.rect(rect.x, rect.y, rect.width, rect.height);
      ctx.clip(); // marks never spill into the letterbox bars
      for (const m of marks) {
        drawMark(ctx, m.mark, rect, m.alpha);
        if (m.alpha < 1) animate = true;
        else if (m.entry?.fadeEndsAt != null) wakeAt = Math.min(wakeAt, m.entry.fadeEndsAt - Math.min(FADE_OUT_MS, m.entry.fadeMs / 2));
      }
      const dots = [];
      for (const [from, p] of this.pointers) {
        const a = pointerAlpha(p, now);
        if (a <= 0) {
          this.pointers.delete(from);
          continue;
        }
        dots.push({ p, a });
      }
      if (this.localPointer) {
        const a = pointerAlpha(this.localPointer, now);
        if (a <= 0) this.localPointer = null;
        else dots.push({ p: this.localPointer, a });
      }
      for (const { p, a } of dots) {
        const at = toElement(p.x, p.y, rect);
        drawPointer(ctx, at.x, at.y, p.color, rect, a);
        if (a < 1) animate = true;
        else wakeAt = Math.min(wakeAt, p.at + POINTER_HOLD_MS);
      }
      ctx.restore();
    }
    this.renders += 1;
    this.canvas.dataset.marks = String(marks.length);
    this.canvas.dataset.ready = rect ? "true" : "false";
    this.canvas.dispatchEvent(
      new CustomEvent("endolink:rendered", {
        detail: {
          at: performance.timeOrigin + performance.now(),
          marks: marks.map((m) => ({ id: m.mark.id, author: m.mark.author ?? this.room.you, points: m.mark.points.length })),
          pointers: [...this.pointers.entries()].map(([from, p]) => ({ from, x: p.x, y: p.y })),
        },
      }),
    );
    clearTimeout(this.wakeTimer);
    if (animate) this.invalidate();
    else if (wakeAt < Infinity) this.wakeTimer = setTimeout(() => this.invalidate(), Math.max(0, wakeAt - performance.now()));
  }

  /** Read-only state for the tests (window.endolink.annotations); ids and counts only. */
  get debug() {
    const layout = this._layout();
    return {
      marks: [...this.marks.values()].map((e) => ({ ...e.mark, points: e.mark.points.map((p) => [...p]) })),
      drafts: this.drafts.size,
      pointers: [...this.pointers.values()].map((p) => ({ x: p.x, y: p.y })),
      frozen: this.freeze.frozen,
      frozenShown: this.freeze.frozen && this._stillShown(),
      frozenSource: this.still.source,
      frozenSnapshot: this.still.source === "snapshot" ? this.still.id : null,
      tool: this.tool,
      canDraw: this.canDraw,
      renders: this.renders,
      picture: layout.rect ? { ...layout.rect } : null,
    };
  }
}

function canvasToPng(canvas) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the picture could not be encoded"))), "image/png");
  });
}

