// This page's own marks on their way to the server. A stroke in progress is drawn at once (a
// "draft") and streamed as `update`s; it is replaced by the server's copy when the server has
// acknowledged its final state. A draft the server does not acknowledge is resent, then
// reported — never dropped silently. Outgoing ops go through a token bucket at the server's
// limit (docs/architecture.md).

import { refusalText } from "./api.js";
import { keyOf } from "./board.js";
import { msg } from "./i18n.js";
import { Sender } from "./input.js";

const ANNOTATION_OPS_PER_S = 30; // server limit (docs/architecture.md)
const ANNOTATION_BURST = 6;
const ACK_TIMEOUT_MS = 2000; // a finished mark the server has not echoed by then is resent
const ACK_RETRIES = 2;

function newIdPrefix() {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

export class Drafts {
  /** @param {import("./annotations.js").AnnotationLayer} layer */
  constructor(layer) {
    this.layer = layer;
    this.items = new Map(); // own mark id → {mark, done, retries, timer}
    this.idPrefix = newIdPrefix();
    this.idCounter = 0;
    this.offline = false;
    this.ops = new Sender((m) => this._send(m), ANNOTATION_OPS_PER_S, ANNOTATION_BURST);
  }

  /** A new mark in the toolbar's style, sent (`add`) at once; `finish` it when it is complete. */
  start(tool, points, extra = {}) {
    const { toolbar, placements } = this.layer;
    const { color, width, fadeS } = toolbar;
    const mark = { id: this._nextId(), tool, color, width, points, fade_s: fadeS, ...extra };
    if (mark.fade_s == null) mark.fade_s = null;
    const draft = { mark, done: false, retries: 0, timer: null, framePts: null };
    if (toolbar.anchors(tool)) {
      // On the tissue: the server anchors it on the frame shown as drawing began.
      mark.anchored = true;
      draft.framePts = placements.shownPts();
    }
    this.items.set(mark.id, draft);
    this.send(draft, "add");
    return draft;
  }

  send(draft, op) {
    this.ops.push(this._message(draft, op), `u:${draft.mark.id}`);
  }

  _message(draft, op) {
    const message = { type: "annotation", op, annotation: { ...draft.mark, points: draft.mark.points.slice() } };
    // An anchored mark's frame: the one shown as drawing began for its `add` (an `add` may
    // coalesce into the `update` after it), then the one shown as each later version was drawn
    // (a box being dragged, a stroke growing): the server anchors each version on its own frame.
    if (draft.framePts != null) {
      message.frame_pts = this._held(draft.mark.id) ? (this.layer.placements.shownPts() ?? draft.framePts) : draft.framePts;
    }
    return message;
  }

  finish(id) {
    const d = this.items.get(id);
    if (!d) return;
    d.done = true;
    this._armAck(id);
  }

  /** After a (re)connect: what the server does not hold of ours is sent again. */
  resend() {
    this._online();
    this.ops.clear();
    for (const [id, d] of this.items) {
      this.send(d, this._held(id) ? "update" : "add");
      if (d.done) this._armAck(id);
    }
  }

  /** The server echoed one of our marks: its final state replaces the draft. */
  acknowledge(a) {
    const d = this.items.get(a.id);
    if (!d || !d.done) return;
    const mine = d.mark.points;
    const theirs = a.points || [];
    const last = (p) => (p ? `${p[0]},${p[1]}` : "");
    if (theirs.length === mine.length && last(theirs[theirs.length - 1]) === last(mine[mine.length - 1]) && (a.text ?? null) === (d.mark.text ?? null)) {
      this.drop(a.id);
      this._online();
    }
  }

  drop(id) {
    const d = this.items.get(id);
    if (!d) return;
    clearTimeout(d.timer);
    this.items.delete(id);
  }

  dropAll() {
    for (const id of [...this.items.keys()]) this.drop(id);
  }

  undo() {
    this.ops.push({ type: "annotation", op: "undo" });
  }

  clear() {
    this.ops.push({ type: "annotation", op: "clear" });
  }

  _nextId() {
    this.idCounter += 1;
    return `${this.idPrefix}-${this.idCounter.toString(36)}`;
  }

  _held(id) {
    return this.layer.board.marks.has(keyOf(this.layer.room.you, id));
  }

  _send(message) {
    const layer = this.layer;
    if (layer.room.send(message)) {
      layer.traceSent(message);
      return true;
    }
    // Room down: drafts are resent from `welcome` after the reconnect; say so once.
    layer.notices?.show("annotation-send", msg("annotations.roomDown"), "warn");
    this.offline = true;
    return false;
  }

  _online() {
    if (!this.offline) return;
    this.offline = false;
    this.layer.notices?.clear("annotation-send");
  }

  _armAck(id) {
    const d = this.items.get(id);
    if (!d) return;
    clearTimeout(d.timer);
    d.timer = setTimeout(() => this._ackTimeout(id), ACK_TIMEOUT_MS);
  }

  _ackTimeout(id) {
    const d = this.items.get(id);
    if (!d) return;
    const layer = this.layer;
    if (layer.room.state !== "open") {
      this._armAck(id); // resent from `welcome`
      return;
    }
    if (d.retries >= ACK_RETRIES) {
      this.drop(id);
      const why = layer.lastServerError;
      layer.notices?.show("annotation", why ? msg("annotations.notSharedWhy", { why: refusalText(why) }) : msg("annotations.notShared"), "error");
      setTimeout(() => layer.notices?.clear("annotation"), 10000);
      layer.invalidate();
      layer.toolbar.update();
      return;
    }
    d.retries += 1;
    this.send(d, this._held(id) ? "update" : "add");
    this._armAck(id);
  }
}
