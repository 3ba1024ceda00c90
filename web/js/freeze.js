// The freeze frame: while the surgeon has everyone's picture frozen, every page shows the same
// still (the surgeon's stored snapshot) under the marks, with a badge saying so. The lead's
// page freezes (upload the frame, then tell the room) and resumes.

import { failure, refusalText } from "./api.js";
import { intrinsicSize } from "./geometry.js";
import { msg, setText } from "./i18n.js";
import { canvasToPng, fetchSnapshotBlob, uploadSnapshot } from "./snapshots.js";
import { el } from "./ui.js";

const FREEZE_CONFIRM_MS = 5000;

export class FreezeFrame {
  /** @param {import("./annotations.js").AnnotationLayer} layer */
  constructor(layer) {
    this.layer = layer;
    // A canvas holding the still at the frame's full resolution, shown with object-fit: contain
    // exactly like the video, so the marks map onto it the same way.
    this.canvas = el("canvas", {
      class: "frozen-frame",
      "data-testid": "frozen-frame",
      role: "img",
      "aria-label": msg("freeze.canvas"),
      hidden: true,
    });
    this.badge = el("span", { class: "video-badge frozen-badge", "data-testid": "frozen-badge", hidden: true });
    this.still = { source: "none", id: null }; // what the canvas shows
    this.load = 0; // bumped on every freeze change: a late download is dropped
    this.localStills = new Map(); // snapshot id → canvas (stills this page froze)
    this.who = "";
    this.busy = false;
    this.wait = null; // {id, resolve} while this page waits for the server's confirmation
  }

  /** A still is on screen (frozen, or this page's own freeze still being confirmed). */
  shown() {
    return !this.canvas.hidden && this.still.source !== "none";
  }

  /** Shows the board's freeze state (board.applyFreeze). */
  apply(freeze) {
    const layer = this.layer;
    const { frozen, snapshot } = freeze;
    if (this.wait && (!frozen || snapshot?.id === this.wait.id)) this.wait.resolve(frozen);
    if (snapshot) layer.gallery?.markFrozen(snapshot.id);
    if (!frozen) {
      this.load += 1;
      this._hide();
      this.badge.hidden = true;
      layer.frame.classList.remove("frozen");
      layer.notices?.clear("freeze-image");
      return;
    }
    layer.frame.classList.add("frozen");
    this.badge.hidden = false;
    const still = snapshot?.url?.endsWith(".jpg"); // stills mode: a still from the clinic
    this.who = msg(still ? "stills.fromClinic" : freeze.by && freeze.by === layer.room.you ? "freeze.byYou" : "freeze.bySurgeon");
    if (snapshot && this.still.source === "snapshot" && this.still.id === snapshot.id) {
      this._badge("shown");
    } else {
      // Stop on our own picture at once (what this page shows now, about one network delay
      // after the surgeon's still), then replace it with the surgeon's stored still, so every
      // page ends up on the very same frame.
      if (this.still.source === "none") this._show(layer.video, "own", null);
      if (snapshot) this._loadSnapshot(snapshot);
      else this._badge(this.still.source === "none" ? "no-image" : "own");
    }
  }

  _badge(state) {
    const key = { pending: "freeze.badge.pending", own: "freeze.badge.own", "no-image": "freeze.badge.noImage" }[state];
    this.badge.hidden = false;
    setText(this.badge, msg(key || "freeze.badge.frozen", { who: this.who || "" }));
    this.badge.dataset.state = state;
  }

  async _loadSnapshot(snapshot) {
    const layer = this.layer;
    const load = ++this.load;
    const id = snapshot.id;
    this._badge("loading");
    let bitmap;
    try {
      let source = this.localStills.get(id); // a still this page froze: no download
      if (!source) {
        const url = snapshot.url || `/api/consultations/${encodeURIComponent(layer.cid)}/snapshots/${id}.png`;
        source = await fetchSnapshotBlob(url, layer.token);
      }
      bitmap = await createImageBitmap(source);
    } catch (err) {
      if (load !== this.load || !layer.board.freeze.frozen) return;
      const live = this.still.source === "none";
      this._badge(live ? "no-image" : "own");
      layer.notices?.show("freeze-image", msg(live ? "freeze.notLoadedLive" : "freeze.notLoadedOwn"), "warn");
      return;
    }
    if (load !== this.load || !layer.board.freeze.frozen) {
      bitmap.close();
      return;
    }
    this._show(bitmap, "snapshot", id);
    bitmap.close();
    layer.notices?.clear("freeze-image");
    this._badge("shown");
  }

  /** Shows a still (video, bitmap, canvas) in the frozen-frame canvas at its full resolution. */
  _show(source, kind, id) {
    const size = source instanceof HTMLVideoElement ? intrinsicSize(source) : { width: source.width, height: source.height };
    if (!size || !(size.width > 0 && size.height > 0)) return false;
    const still = this.canvas;
    if (still.width !== size.width || still.height !== size.height) {
      still.width = size.width;
      still.height = size.height;
    }
    still.getContext("2d").drawImage(source, 0, 0, size.width, size.height);
    still.hidden = false;
    still.dataset.source = kind;
    still.dataset.snapshot = id || "";
    this.still = { source: kind, id };
    this.layer.invalidate();
    return true;
  }

  _hide() {
    this.canvas.hidden = true;
    this.canvas.dataset.source = "";
    this.canvas.dataset.snapshot = "";
    this.still = { source: "none", id: null };
  }

  _unshowPending() {
    if (this.layer.board.freeze.frozen) return;
    this._hide();
    this.badge.hidden = true;
    this.layer.invalidate();
  }

  /** The lead's Freeze / Resume live button. */
  async toggle() {
    const layer = this.layer;
    if (!layer.isLead || this.busy) return;
    this.busy = true;
    layer.toolbar.update();
    try {
      if (layer.board.freeze.frozen) {
        if (!layer.room.send({ type: "freeze", frozen: false })) throw failure(msg("freeze.roomDown"));
        await this._confirmed(null);
        layer.toolbar.say(msg("freeze.resumed"));
      } else {
        await this._freezeNow();
      }
      layer.notices?.clear("freeze");
    } catch (err) {
      layer.notices?.show("freeze", msg("freeze.failed", { why: refusalText(err) }), "error");
      layer.toolbar.say("");
    } finally {
      this.busy = false;
      layer.toolbar.update();
    }
  }

  async _freezeNow() {
    const layer = this.layer;
    const size = intrinsicSize(layer.video);
    if (!size) throw failure(msg("freeze.noPicture"));
    const capture = document.createElement("canvas");
    capture.width = size.width;
    capture.height = size.height;
    capture.getContext("2d").drawImage(layer.video, 0, 0, size.width, size.height);
    // This page stops on the frame the surgeon clicked at once; the others when the server
    // confirms. A failure goes back to the live picture (toggle reports it).
    this.who = msg("freeze.byYou");
    this._show(capture, "pending", null);
    this._badge("pending");
    layer.toolbar.say(msg("freeze.saving"));
    try {
      const blob = await canvasToPng(capture);
      const snapshot = await uploadSnapshot(layer.cid, layer.token, blob);
      this.localStills.set(snapshot.id, capture);
      layer.gallery?.add(snapshot, blob, { frozen: true });
      if (!layer.room.send({ type: "freeze", frozen: true, snapshot_id: snapshot.id })) {
        throw failure(msg("freeze.roomDown"));
      }
      await this._confirmed(snapshot.id);
    } catch (err) {
      this._unshowPending();
      throw err;
    }
    layer.toolbar.say(msg("freeze.done"));
  }

  /** Resolves when the room confirms the freeze of snapshot `id` (null: the resume). */
  _confirmed(id) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.wait = null;
        const why = this.layer.lastServerError;
        reject(why || failure(msg("freeze.notConfirmed")));
      }, FREEZE_CONFIRM_MS);
      this.wait = {
        id,
        resolve: () => {
          clearTimeout(timer);
          this.wait = null;
          resolve();
        },
      };
    });
  }
}
