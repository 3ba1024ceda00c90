// Live annotation (telestration) on top of the endoscope picture: an overlay canvas rendering
// every current mark of the consultation, the drawing tools, the laser pointer and the freeze
// frame. Protocol: docs/architecture.md, "Annotations (telestration), protocol v1 additions".
//
//   * Marks live in normalised frame coordinates (geometry.js): they land on the same spot of
//     the picture on every page, whatever the window size, letterboxing or resolution.
//   * What is drawn is what the server accepted (board.js) plus this page's own marks not yet
//     acknowledged (drafts.js); input.js turns gestures into those, toolbar.js offers the tools,
//     freeze.js shows the frozen frame, drawing.js draws.
//   * The canvas is redrawn in requestAnimationFrame only when something changed (a message, a
//     resize, a fade in progress), never in a permanent loop.
//
// This module is the composition the pages use: one AnnotationLayer per page, its parts share it.

import { ApiError, failure, refusalText } from "./api.js";
import { Board, authorName } from "./board.js";
import { Drafts } from "./drafts.js";
import { drawPlacedMark } from "./drawing.js";
import { FreezeFrame } from "./freeze.js";
import { backingSize, intrinsicSize, pictureRect } from "./geometry.js";
import { msg } from "./i18n.js";
import { Input } from "./input.js";
import { Placements, placementOf } from "./placements.js";
import { SharpestFrames } from "./sharpest.js";
import { SnapshotGallery, canvasToPng, uploadSnapshot } from "./snapshots.js";
import { Toolbar } from "./toolbar.js";
import { el } from "./ui.js";

// The browser tests load the rate limiter from here.
export { Sender } from "./input.js";

const CLEARED_BY_OTHER = msg("annotations.clearedBySurgeon");
// `_onAnnotation` names its message `msg`: these build the texts it shows.
const archivedText = (count) => msg("marks.archived", { count });
const restoredText = (count) => msg("marks.restored", { count });

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
    this.lastServerError = null;
    this.lastSize = null; // last known frame size (a restarting stream keeps marks in place)
    this.renders = 0;
    this.rafId = 0;
    this.wakeTimer = null;
    this.snapshotBusy = false;

    this.canvas = el("canvas", {
      class: "annotation-canvas",
      "data-testid": "annotation-canvas",
      role: "img",
      "aria-label": msg("annotations.canvas"),
    });
    this.ctx = this.canvas.getContext("2d");
    if (o.galleryHost) {
      this.gallery = new SnapshotGallery({
        host: o.galleryHost,
        cid: this.cid,
        token: this.token,
        describe: this.describe,
        notices: this.notices,
      });
    }
    this.board = new Board(this.room);
    this.placements = new Placements({ page: this.page, video: this.video, room: this.room, onChange: () => this.invalidate() });
    this.drafts = new Drafts(this);
    this.freezeFrame = new FreezeFrame(this);
    // The snapshot button (the lead's) keeps the sharpest frame of the last moments.
    if (this.isLead) this.sharpest = new SharpestFrames(this.video, () => !this.freezeFrame.shown());
    this.toolbar = new Toolbar(this, o.toolbarHost);
    this.input = new Input(this);
    // After the <video>, before the status overlay: the overlay ("offline"…) stays on top.
    this.video.after(this.freezeFrame.canvas, this.canvas);
    this.frame.append(this.freezeFrame.badge, this.input.textInput);

    this.gallery?.load();
    this._bindRoom();
    this._bindResize();
    this._applyTool();
    this.invalidate();
  }

  // ------------------------------------------------------------------ actions

  setTool(tool) {
    this.input.cancelText();
    if (this.toolbar.tool === "pointer" && tool !== "pointer") this.input.hidePointer();
    this._applyTool(tool);
  }

  _applyTool(tool = this.toolbar.tool) {
    this.toolbar.showTool(tool);
    const active = this.canDraw && !!tool;
    this.canvas.dataset.tool = active ? tool : "";
    this.canvas.classList.toggle("drawing", active);
  }

  undo() {
    this.input.cancelText();
    this.drafts.undo();
    this.toolbar.say(msg("annotations.undone"));
  }

  clear() {
    if (!this.isLead) return;
    this.drafts.clear();
    this.toolbar.say(msg("annotations.cleared"));
  }

  /** The surgeon puts the previous stream session's marks back on the picture. */
  restoreMarks() {
    if (!this.isLead || this.board.archived === 0) return;
    if (this.room.send({ type: "annotation", op: "restore" })) this.toolbar.say(msg("marks.restoring"));
  }

  toggleFreeze() {
    return this.freezeFrame.toggle();
  }

  /** The frame on screen (the frozen image, or the sharpest live frame of the last ~2 s) with every
   * visible mark, as a PNG blob. */
  async composeSnapshot() {
    const live = this.sharpest?.best()?.bitmap ?? this.video;
    const source = this.freezeFrame.shown() ? this.freezeFrame.canvas : live;
    const size = intrinsicSize(source);
    if (!size) throw failure(msg("input.noPicture"));
    const canvas = document.createElement("canvas");
    canvas.width = size.width;
    canvas.height = size.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(source, 0, 0, size.width, size.height);
    const rect = { x: 0, y: 0, width: size.width, height: size.height };
    const placed = this._placed();
    for (const m of this._visibleMarks(performance.now())) drawPlacedMark(ctx, m.mark, rect, m.alpha, placementOf(placed, m.mark), "");
    return canvasToPng(canvas);
  }

  async takeSnapshot() {
    if (!this.isLead || this.snapshotBusy) return;
    const { toolbar } = this;
    this.snapshotBusy = true;
    toolbar.snapshotButton.disabled = true;
    toolbar.say(msg("snapshot.saving"));
    try {
      const blob = await this.composeSnapshot();
      const snapshot = await uploadSnapshot(this.cid, this.token, blob);
      const link = this.gallery?.add(snapshot, blob);
      toolbar.say("");
      if (toolbar.status) {
        const a = el("a", {
          href: link?.href || URL.createObjectURL(blob),
          download: link?.download || "endolink-snapshot.png",
          "data-testid": "snapshot-link",
          text: msg("snapshot.download"),
        });
        toolbar.status.append(el("span", { text: msg("snapshot.saved") }), " ", a);
      }
      this.notices?.clear("snapshot");
    } catch (err) {
      toolbar.say("");
      this.notices?.show("snapshot", msg("snapshot.failed", { why: refusalText(err) }), "error");
    } finally {
      this.snapshotBusy = false;
      toolbar.snapshotButton.disabled = false;
    }
  }

  // ------------------------------------------------------------------ room messages

  _bindRoom() {
    const room = this.room;
    room.addEventListener("welcome", (e) => this._onWelcome(e.detail));
    room.addEventListener("annotation", (e) => this._onAnnotation(e.detail));
    room.addEventListener("pointer", (e) => this._onPointer(e.detail));
    room.addEventListener("freeze", (e) => {
      this._applyFreeze(e.detail);
      const reason = e.detail?.reason;
      if (reason === "left" || reason === "new-stream") this.notices?.show("freeze", msg(`freeze.released_${reason.replace("-", "_")}`), "info");
      this._trace("freeze", e.detail);
    });
    room.addEventListener("snapshot", (e) => this.gallery?.add(e.detail.snapshot));
    room.addEventListener("presence", () => {
      this.board.retainPointers();
      this.invalidate();
    });
    room.addEventListener("error", (e) => {
      const { code, reason } = e.detail || {};
      if (["invalid-message", "forbidden", "rate-limited"].includes(code)) this.lastServerError = new ApiError(400, code, reason || code);
    });
  }

  _onWelcome(msg) {
    if (msg.you && typeof msg.you === "object" && msg.you.may_annotate === false && this.canDraw) {
      this.canDraw = false; // the room knows better than the session we loaded
      this._applyTool(null);
    }
    this.board.load(msg.annotations, msg.archived);
    this.drafts.resend(); // a reconnect: what the server does not hold of ours
    this._applyFreeze(msg.freeze && typeof msg.freeze === "object" ? msg.freeze : { frozen: false });
  }

  _onAnnotation(msg) {
    const own = this.board.applyAnnotation(msg);
    if (own.acknowledged) this.drafts.acknowledge(own.acknowledged);
    if (own.removed) this.drafts.drop(own.removed);
    if (own.cleared) {
      // Our stroke in progress went with everyone's marks.
      this.drafts.dropAll();
      this.input.abandonMark();
      if (own.archived) this.toolbar.say(archivedText(own.archived));
      else if (msg.by !== this.room.you) this.toolbar.say(CLEARED_BY_OTHER);
    }
    if (own.restored != null) this.toolbar.say(restoredText(own.restored));
    this.toolbar.update();
    this.invalidate();
    this._trace("annotation", msg);
  }

  _onPointer(msg) {
    if (!msg.from || msg.from === this.room.you) return;
    this.board.applyPointer(msg);
    this.invalidate();
    this._trace("pointer", msg);
  }

  _applyFreeze(f) {
    this.freezeFrame.apply(this.board.applyFreeze(f));
    this.toolbar.update();
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
  traceSent(message) {
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

  /** Canvas box and picture rectangle (CSS px, relative to the canvas). */
  layout() {
    const box = this.canvas.getBoundingClientRect();
    let rect = null;
    if (this.freezeFrame.shown()) {
      rect = pictureRect(this.freezeFrame.canvas, this.canvas);
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
    return this.board.visibleMarks(now, this.drafts.items);
  }

  /** The placements of the picture shown: a frozen picture keeps those of its moment. */
  _placed() {
    if (!this.freezeFrame.shown()) {
      this.frozenPlaced = undefined;
      return this.placements.current();
    }
    if (this.frozenPlaced === undefined) this.frozenPlaced = this.placements.current();
    return this.frozenPlaced;
  }

  _render() {
    this.rafId = 0;
    const now = performance.now();
    const { box, rect } = this.layout();
    const { width, height } = backingSize(box.width, box.height, window.devicePixelRatio || 1);
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, width, height);
    if (box.width < 1 || box.height < 1) return; // not laid out (hidden): redrawn on resize
    let next = { animate: false, wakeAt: Infinity };
    const marks = this._visibleMarks(now);
    const placed = this._placed();
    if (rect) {
      // Scale so that 1 unit = 1 CSS px, whatever the backing store's size.
      ctx.setTransform(width / box.width, 0, 0, height / box.height, 0, 0);
      next = this.board.draw(ctx, rect, marks, now, placed);
    }
    this.renders += 1;
    this.canvas.dataset.marks = String(marks.length);
    this.canvas.dataset.anchored = String(marks.filter((m) => placementOf(placed, m.mark)).length);
    this.canvas.dataset.lost = String(marks.filter((m) => placementOf(placed, m.mark)?.lost).length);
    this.canvas.dataset.ready = rect ? "true" : "false";
    this.canvas.dispatchEvent(
      new CustomEvent("endolink:rendered", {
        detail: {
          at: performance.timeOrigin + performance.now(),
          marks: marks.map((m) => ({
            id: m.mark.id,
            author: m.mark.author ?? this.room.you,
            author_name: authorName(m),
            points: m.mark.points.length,
          })),
          pointers: [...this.board.pointers.entries()].map(([from, p]) => ({ from, x: p.x, y: p.y })),
        },
      }),
    );
    clearTimeout(this.wakeTimer);
    if (next.animate) this.invalidate();
    else if (next.wakeAt < Infinity) this.wakeTimer = setTimeout(() => this.invalidate(), Math.max(0, next.wakeAt - performance.now()));
  }

  /** Read-only state for the tests (window.endolink.annotations); ids and counts only. */
  get debug() {
    const { board, freezeFrame } = this;
    const picture = this.layout().rect;
    return {
      marks: [...board.marks.values()].map((e) => ({ ...e.mark, points: e.mark.points.map((p) => [...p]) })),
      drafts: this.drafts.items.size,
      pointers: [...board.pointers.values()].map((p) => ({ x: p.x, y: p.y })),
      frozen: board.freeze.frozen,
      frozenShown: board.freeze.frozen && freezeFrame.shown(),
      frozenSource: freezeFrame.still.source,
      frozenSnapshot: freezeFrame.still.source === "snapshot" ? freezeFrame.still.id : null,
      tool: this.toolbar.tool,
      canDraw: this.canDraw,
      renders: this.renders,
      picture: picture ? { ...picture } : null,
      shownPts: this.placements.shownPts(), // relay pts of the frame on screen (placements.js)
    };
  }
}
