// Pointer, touch and keyboard input of the annotation layer: gestures on the overlay canvas
// become marks (drafts.js sends them), text labels, the laser pointer, Ctrl+Z; and the rate
// limiter every outgoing annotation message goes through.

import { POINTER_HOLD_MS } from "./board.js";
import { pointerColor } from "./drawing.js";
import { toFrame } from "./geometry.js";
import { msg } from "./i18n.js";
import { el } from "./ui.js";

const POINTER_PER_S = 60;
const POINTER_BURST = 3;
const MAX_POINTS = 2000; // per mark; a longer stroke continues as a new mark
const MIN_STEP_PX = 1; // pen: a new point after this much movement (CSS px)
const MIN_SHAPE_PX = 4; // arrow/circle/rect smaller than this on screen are not drawn
const MAX_TEXT = 200;

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

export class Input {
  /** @param {import("./annotations.js").AnnotationLayer} layer */
  constructor(layer) {
    this.layer = layer;
    this.gesture = null;
    this.textAnchor = null;
    this.textGeneration = 0;
    // Pointer moves are fire-and-forget: a move lost while the room reconnects is not worth a notice.
    this.pointerOut = new Sender((m) => layer.room.send(m) && layer.traceSent(m), POINTER_PER_S, POINTER_BURST);
    this.textInput = el("input", {
      class: "annotation-text-input",
      "data-testid": "annotation-text-input",
      type: "text",
      maxlength: MAX_TEXT,
      autocomplete: "off",
      "aria-label": msg("input.label"),
      placeholder: msg("input.placeholder"),
      hidden: true,
    });
    this._bind();
  }

  get tool() {
    return this.layer.toolbar.tool;
  }

  /** A `clear` took our stroke in progress with everyone's marks. */
  abandonMark() {
    if (this.gesture && this.gesture.kind === "mark") this.gesture = null;
  }

  _bind() {
    const c = this.layer.canvas;
    c.addEventListener("pointerdown", (e) => this._onDown(e));
    c.addEventListener("pointermove", (e) => this._onMove(e));
    c.addEventListener("pointerup", (e) => this._onUp(e));
    c.addEventListener("pointercancel", (e) => this._onUp(e));
    c.addEventListener("lostpointercapture", (e) => this._onUp(e));
    c.addEventListener("pointerleave", (e) => {
      if (this.tool === "pointer" && !this.gesture && e.pointerType !== "touch") this.hidePointer();
    });
    c.addEventListener("contextmenu", (e) => {
      if (this.layer.canDraw && this.tool) e.preventDefault();
    });
    this.textInput.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        this.commitText();
      } else if (e.key === "Escape") {
        e.preventDefault();
        this.cancelText();
      }
    });
    // Leaving the field places the label (unless it was closed or reopened meanwhile).
    this.textInput.addEventListener("blur", () => {
      const generation = this.textGeneration;
      setTimeout(() => {
        if (generation === this.textGeneration && document.activeElement !== this.textInput) this.commitText();
      }, 0);
    });
    document.addEventListener("keydown", (e) => {
      if (!this.layer.canDraw || !(e.ctrlKey || e.metaKey) || e.key.toLowerCase() !== "z" || e.shiftKey) return;
      const t = e.target;
      if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
      e.preventDefault();
      this.layer.undo();
    });
  }

  /** Event → {x, y (normalised, clamped), inside, rect} or null without a picture. */
  _map(e, layout = this.layer.layout()) {
    if (!layout.rect) return null;
    const box = layout.box;
    return { ...toFrame(e.clientX - box.left, e.clientY - box.top, layout.rect), rect: layout.rect };
  }

  _onDown(e) {
    const layer = this.layer;
    if (!layer.canDraw || !this.tool || this.gesture) return;
    if (e.pointerType === "mouse" && e.button !== 0) return;
    const layout = layer.layout();
    const p = this._map(e, layout);
    if (!p) {
      layer.toolbar.say(msg("input.noPicture"));
      return;
    }
    if (!p.inside) return; // started in a letterbox bar: ignored (geometry.js)
    e.preventDefault();
    try {
      layer.canvas.setPointerCapture(e.pointerId);
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
      const { mark } = layer.drafts.start("pen", [start]);
      this.gesture = { kind: "mark", pointerId: e.pointerId, id: mark.id, tool: "pen", last: start, rect: p.rect };
    } else {
      this.gesture = { kind: "mark", pointerId: e.pointerId, id: null, tool: this.tool, start, rect: p.rect, downX: e.clientX, downY: e.clientY };
    }
    layer.toolbar.update();
    layer.invalidate();
  }

  /** The laser dot follows a pointer event (hidden outside the picture). */
  _pointAt(e) {
    const p = this._map(e);
    if (p) {
      if (p.inside) this._movePointer(p);
      else this.hidePointer();
    }
  }

  _onMove(e) {
    const g = this.gesture;
    if (this.tool === "pointer" && !g && e.pointerType !== "touch" && this.layer.canDraw) {
      this._pointAt(e); // mouse and pen hover point; touch points while touching
      return;
    }
    if (!g || e.pointerId !== g.pointerId) return;
    if (g.kind === "pointer") this._pointAt(e);
    else if (g.tool === "pen") this._extendStroke(g, e);
    else this._dragShape(g, e);
  }

  _extendStroke(g, e) {
    const { drafts } = this.layer;
    const layout = this.layer.layout();
    if (!layout.rect) return;
    const events = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
    let changed = false;
    for (const ev of events.length ? events : [e]) {
      const p = this._map(ev, layout);
      if (!p) continue;
      const d = drafts.items.get(g.id);
      if (!d) {
        this.gesture = null; // cleared meanwhile
        return;
      }
      const dx = (p.x - g.last[0]) * layout.rect.width;
      const dy = (p.y - g.last[1]) * layout.rect.height;
      if (Math.hypot(dx, dy) < MIN_STEP_PX) continue;
      if (d.mark.points.length >= MAX_POINTS) {
        // Long stroke: finish this mark, continue seamlessly in a new one.
        drafts.send(d, "update");
        drafts.finish(g.id);
        g.id = drafts.start("pen", [g.last]).mark.id;
      }
      drafts.items.get(g.id).mark.points.push([p.x, p.y]);
      g.last = [p.x, p.y];
      changed = true;
    }
    if (changed) {
      drafts.send(drafts.items.get(g.id), "update");
      this.layer.invalidate();
    }
  }

  _dragShape(g, e) {
    const { drafts } = this.layer;
    const layout = this.layer.layout();
    if (!layout.rect) return;
    const p = this._map(e, layout);
    if (!p) return;
    const end = [p.x, p.y];
    if (!g.id) {
      if (Math.hypot(e.clientX - g.downX, e.clientY - g.downY) < MIN_SHAPE_PX) return;
      g.id = drafts.start(g.tool, [g.start, end]).mark.id;
    } else {
      const d = drafts.items.get(g.id);
      if (!d) {
        this.gesture = null;
        return;
      }
      d.mark.points = [g.start, end];
      drafts.send(d, "update");
    }
    this.layer.toolbar.update();
    this.layer.invalidate();
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
    const { drafts } = this.layer;
    const d = drafts.items.get(g.id);
    if (!d) return;
    if (e.type === "pointerup" && g.tool !== "pen") {
      const p = this._map(e);
      if (p) {
        const end = [p.x, p.y];
        const [, old] = d.mark.points;
        if (old[0] !== end[0] || old[1] !== end[1]) {
          d.mark.points = [g.start, end];
          drafts.send(d, "update");
        }
      }
    } else if (e.type === "pointerup" && g.tool === "pen") {
      const p = this._map(e);
      if (p && (p.x !== g.last[0] || p.y !== g.last[1])) {
        d.mark.points.push([p.x, p.y]);
        drafts.send(d, "update");
      }
    }
    drafts.finish(g.id);
    this.layer.toolbar.update();
    this.layer.invalidate();
  }

  _movePointer(p) {
    const layer = this.layer;
    // In the author's colour (the toolbar's), like their marks.
    const color = layer.toolbar.color || pointerColor(layer.session.role);
    layer.board.localPointer = { x: p.x, y: p.y, at: performance.now(), color };
    this.pointerOut.push({ type: "pointer", x: p.x, y: p.y, color }, "pointer");
    layer.invalidate();
  }

  hidePointer() {
    const own = this.layer.board.localPointer;
    if (!own) return;
    own.at = Math.min(own.at, performance.now() - POINTER_HOLD_MS);
    own.hidden = true;
    this.pointerOut.push({ type: "pointer", x: null, y: null }, "pointer");
    this.layer.invalidate();
  }

  // ------------------------------------------------------------------ text labels

  _openText(anchor, cssX, cssY) {
    this.commitText(); // a label still being typed is placed first
    this.textGeneration += 1;
    this.textAnchor = anchor;
    const input = this.textInput;
    input.value = "";
    input.hidden = false;
    const maxLeft = Math.max(0, this.layer.frame.clientWidth - 220);
    input.style.left = `${Math.min(cssX, maxLeft)}px`;
    input.style.top = `${Math.max(0, cssY - 36)}px`;
    input.focus();
  }

  commitText() {
    if (this.textInput.hidden || !this.textAnchor) return;
    const text = this.textInput.value.trim().slice(0, MAX_TEXT);
    const anchor = this.textAnchor;
    this.cancelText();
    if (!text) return;
    const { mark } = this.layer.drafts.start("text", [anchor], { text, size: this.layer.toolbar.textSize });
    this.layer.drafts.finish(mark.id);
    this.layer.toolbar.update();
    this.layer.invalidate();
  }

  cancelText() {
    this.textGeneration += 1;
    this.textAnchor = null;
    if (!this.textInput.hidden) {
      this.textInput.hidden = true;
      this.textInput.value = "";
    }
  }
}
