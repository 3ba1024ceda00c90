// The replay page's list of recordings the token may replay (GET /api/recordings, filtered by
// consultation and dates), each with its first picture, people and status.

import { apiFetch, refusalText } from "./api.js";
import { msg, setAttr } from "./i18n.js";
import { fetchSnapshotBlob } from "./snapshots.js";
import { $, duration, el, roleLabel, when } from "./ui.js";

function statusText(rec) {
  const parts = [];
  if (rec.status === "recording") parts.push(msg("recordings.now"));
  else if (rec.status === "interrupted") parts.push(msg("recordings.interrupted"));
  if (rec.segments > 1) parts.push(msg("recordings.parts", { n: { number: rec.segments } }));
  return parts.length ? msg("common.text", { text: { list: parts, sep: " · " } }) : "";
}

function participantsText(list) {
  const people = (list || []).map((p) => p.name || roleLabel(p.role));
  return people.length ? msg("common.text", { text: { list: people } }) : "";
}

export class RecordingList {
  /**
   * @param {object} o
   * @param {string} o.token
   * @param {import("./ui.js").Notices} o.notices
   * @param {(id: string) => void} o.onOpen  a recording was picked
   */
  constructor({ token, notices, onOpen }) {
    Object.assign(this, { token, notices, onOpen });
    this.recordings = [];
    this.current = null; // id of the recording open in the player
    this.els = {
      list: $("#recordings-list"),
      empty: $("#recordings-empty"),
      filters: $("#filters"),
      consultation: $("#filter-consultation"),
      since: $("#filter-since"),
      until: $("#filter-until"),
    };
    this.els.filters.addEventListener("submit", (event) => {
      event.preventDefault();
      this.load();
    });
  }

  has(id) {
    return this.recordings.some((r) => r.id === id);
  }

  async load() {
    const els = this.els;
    const query = new URLSearchParams();
    if (els.consultation.value.trim()) query.set("consultation", els.consultation.value.trim());
    if (els.since.value) query.set("since", els.since.value);
    if (els.until.value) query.set("until", els.until.value);
    let body;
    try {
      const search = query.toString();
      body = await (await apiFetch(`/api/recordings${search ? `?${search}` : ""}`, { token: this.token })).json();
    } catch (err) {
      this.notices.show("list", msg("recordings.notListed", { why: refusalText(err) }), "error");
      return;
    }
    this.notices.clear("list");
    this.recordings = Array.isArray(body.recordings) ? body.recordings : [];
    els.list.replaceChildren(...this.recordings.map((rec) => this._item(rec)));
    els.empty.hidden = this.recordings.length > 0;
    this.markCurrent(this.current);
  }

  /** Highlights the recording open in the player. */
  markCurrent(id) {
    this.current = id;
    for (const li of this.els.list.children) li.setAttribute("aria-current", li.dataset.id === id ? "true" : "false");
  }

  _item(rec) {
    const li = el("li", { "data-id": rec.id, "data-testid": "recording-item" });
    const button = el("button", { type: "button" });
    const img = el("img", { class: "thumb", alt: "" });
    const status = el("span", { class: "rec-meta rec-status", "data-status": rec.status, text: statusText(rec) });
    button.append(
      img,
      el("span", { class: "rec-title", text: rec.consultation?.title || rec.consultation?.id || msg("recordings.untitled") }),
      el("span", { class: "rec-meta", text: msg("recordings.meta", { when: when(rec.started_at), duration: duration(rec.duration_s) }) }),
      el("span", { class: "rec-people", text: participantsText(rec.participants) }),
      status,
    );
    button.addEventListener("click", () => this.onOpen(rec.id));
    li.append(button);
    this._thumbnail(rec, img);
    return li;
  }

  async _thumbnail(rec, img) {
    try {
      const blob = await fetchSnapshotBlob(rec.thumbnail, this.token);
      img.src = URL.createObjectURL(blob);
      setAttr(img, "alt", msg("recordings.thumb", { when: when(rec.started_at) }));
    } catch {
      setAttr(img, "alt", msg("recordings.noThumb"));
    }
  }
}
