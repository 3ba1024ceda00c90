// Snapshots of a consultation: PNG upload, authorised download (Bearer token, never a cookie or a
// URL token: images are fetched and shown through blob: URLs) and the gallery panel.
//
//   POST /api/consultations/{cid}/snapshots            image/png → 201 {id, url, by, created_at}
//   GET  /api/consultations/{cid}/snapshots            → {"snapshots": [...]}, oldest first
//   GET  /api/consultations/{cid}/snapshots/{id}.png   → the image (a still of stills mode: .jpg)
//
// New snapshots arrive live as `snapshot` room messages (the uploader's own included).

import { apiFetch, failure, refusalText } from "./api.js";
import { msg, setAttr, setText } from "./i18n.js";
import { el } from "./ui.js";

const THUMB_CONCURRENCY = 2;

/** Uploads a PNG blob; resolves to the server's snapshot JSON, rejects with a readable Error. */
export async function uploadSnapshot(cid, token, blob) {
  const response = await apiFetch(`/api/consultations/${encodeURIComponent(cid)}/snapshots`, {
    token,
    method: "POST",
    body: blob,
    headers: { "Content-Type": "image/png" },
  });
  const body = await response.json();
  if (!body || typeof body.id !== "string") throw failure(msg("snapshots.badAnswer"));
  return body;
}

/** Fetches a snapshot image with the Bearer token; resolves to a Blob. */
export async function fetchSnapshotBlob(url, token) {
  // Stored snapshots never change: the browser's cache may keep them.
  const response = await apiFetch(url, { token, headers: { Accept: "*/*" }, cache: "default" });
  return response.blob();
}

/** A canvas as a PNG blob. */
export function canvasToPng(canvas) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(failure(msg("snapshots.notEncoded")))), "image/png");
  });
}

function fileName(snapshot) {
  const when = String(snapshot.created_at || "").replace(/[:]/g, "-").replace(/\..*$/, "");
  const still = snapshot.kind === "still"; // stills mode: a JPEG from the clinic's camera
  return `endolink-${still ? "still" : "snapshot"}-${when || snapshot.id}.${still ? "jpg" : "png"}`;
}

/** A snapshot's time as a msg() parameter (formatted in the page's language when shown). */
function timeLabel(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : { date: d.getTime(), options: { timeStyle: "medium" } };
}

/** The "Snapshots" panel: one entry per stored snapshot, newest first, previews loaded lazily. */
export class SnapshotGallery {
  constructor({ host, cid, token, describe, notices }) {
    this.cid = cid;
    this.token = token;
    this.describe = describe || ((id) => id);
    this.notices = notices;
    this.items = new Map(); // id → {li, img, link, url, blob, snapshot, frozen}
    this.frozenIds = new Set();
    this.loading = 0;
    this.waiting = [];
    this.list = host.querySelector("[data-snapshot-list]") || host;
    this.empty = host.querySelector("[data-snapshot-empty]");
    this.observer = new IntersectionObserver((entries) => {
      for (const e of entries) if (e.isIntersecting) this._want(e.target.dataset.id);
    });
  }

  async load() {
    let response;
    try {
      response = await apiFetch(`/api/consultations/${encodeURIComponent(this.cid)}/snapshots`, { token: this.token });
    } catch (err) {
      this.notices?.show("snapshots", msg("snapshots.notListed", { why: refusalText(err) }), "warn");
      return;
    }
    const body = await response.json().catch(() => null);
    const list = Array.isArray(body) ? body : Array.isArray(body?.snapshots) ? body.snapshots : [];
    for (const s of list) this.add(s);
  }

  /** Adds (or completes) an entry; returns {href, download} once a local blob is known. */
  add(snapshot, blob = null, { frozen = false } = {}) {
    if (!snapshot || typeof snapshot.id !== "string") return null;
    if (frozen) this.frozenIds.add(snapshot.id);
    let item = this.items.get(snapshot.id);
    if (!item) item = this._create(snapshot);
    if (blob && !item.url) this._setBlob(item, blob);
    this._caption(item);
    return item.url ? { href: item.url, download: item.link.download } : null;
  }

  /** A snapshot that is the raw frozen frame (marks are drawn live on top of it, not into it). */
  markFrozen(id) {
    this.frozenIds.add(id);
    const item = this.items.get(id);
    if (item) this._caption(item);
  }

  _create(snapshot) {
    const li = document.createElement("li");
    li.dataset.id = snapshot.id;
    li.setAttribute("data-testid", "snapshot-item");
    const img = document.createElement("img");
    img.alt = "";
    img.className = "snapshot-thumb";
    const meta = document.createElement("span");
    meta.className = "snapshot-meta";
    const link = document.createElement("a");
    setText(link, msg("snapshots.download"));
    link.download = fileName(snapshot);
    link.href = "#";
    link.setAttribute("data-testid", "snapshot-download");
    link.className = "snapshot-download";
    const item = { li, img, meta, link, url: null, blob: null, snapshot, pending: null };
    link.addEventListener("click", async (event) => {
      if (item.url) return; // a real blob: link, the browser downloads it
      event.preventDefault();
      if (await this._fetch(item)) link.click();
    });
    li.append(img, meta, link);
    // Newest first.
    this.list.prepend(li);
    if (this.empty) this.empty.hidden = true;
    this.items.set(snapshot.id, item);
    this.observer.observe(li);
    return item;
  }

  _caption(item) {
    const s = item.snapshot;
    const kind = msg(this.frozenIds.has(s.id) ? "snapshots.frozen" : "snapshots.snapshot");
    const time = timeLabel(s.created_at);
    setText(item.meta, s.by ? msg("snapshots.metaBy", { kind, time, who: this.describe(s.by) }) : msg("snapshots.meta", { kind, time }));
    setAttr(item.img, "alt", msg("snapshots.alt", { kind, time }));
  }

  _setBlob(item, blob) {
    item.blob = blob;
    item.url = URL.createObjectURL(blob);
    item.link.href = item.url;
    item.img.src = item.url;
    this.observer.unobserve(item.li);
  }

  _want(id) {
    const item = this.items.get(id);
    if (!item || item.url || item.pending) return;
    this._fetch(item);
  }

  /** Loads an entry's image (at most THUMB_CONCURRENCY at a time); true when it is there. */
  async _fetch(item) {
    if (item.url) return true;
    if (item.pending) return item.pending;
    item.pending = (async () => {
      while (this.loading >= THUMB_CONCURRENCY) await new Promise((r) => this.waiting.push(r));
      this.loading += 1;
      try {
        const url = item.snapshot.url || `/api/consultations/${encodeURIComponent(this.cid)}/snapshots/${item.snapshot.id}.png`;
        const blob = await fetchSnapshotBlob(url, this.token);
        if (!item.url) this._setBlob(item, blob);
        return true;
      } catch (err) {
        item.meta.append(" ", el("span", { class: "snapshot-error", text: msg("snapshots.notLoaded") }));
        return false;
      } finally {
        this.loading -= 1;
        this.waiting.shift()?.();
        item.pending = null;
      }
    })();
    return item.pending;
  }
}
