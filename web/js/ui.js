// Small DOM helpers shared by the pages. Everything user- or server-provided goes through
// textContent (never innerHTML), so chat text or names cannot inject markup.

import { normaliseParticipant } from "./room.js";

export const $ = (selector, root = document) => root.querySelector(selector);

/** A new element: `text` sets its text, `dataset` its data-*, null/false attributes are left out. */
export function el(tag, attrs = {}, children = []) {
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

const ROLE_LABELS = { clinic: "Clinic", surgeon: "Surgeon", observer: "Observer", admin: "Admin" };

export function roleLabel(role) {
  return ROLE_LABELS[role] || role || "Participant";
}

/** Sets a status chip's text and tone ("ok" | "warn" | "bad" | "idle" | "live"). */
export function setChip(el, text, tone = "idle") {
  if (!el) return;
  el.textContent = text;
  el.dataset.tone = tone;
}

/** Tone of an RTCPeerConnection.connectionState. */
export function connectionTone(state) {
  return (
    { connected: "ok", connecting: "warn", new: "idle", disconnected: "warn", failed: "bad", closed: "idle" }[
      state
    ] || "idle"
  );
}

/** The page-wide notice line (aria-live). Keyed, so one source can clear its own message. */
export class Notices {
  constructor(container) {
    this.container = container;
    this.items = new Map();
  }

  show(key, text, level = "info") {
    let item = this.items.get(key);
    if (!item) {
      item = document.createElement("p");
      item.className = "notice";
      item.dataset.key = key;
      this.container.append(item);
      this.items.set(key, item);
    }
    item.dataset.level = level;
    item.textContent = text;
    item.setAttribute("role", level === "error" ? "alert" : "status");
    return item;
  }

  clear(key) {
    const item = this.items.get(key);
    if (item) {
      item.remove();
      this.items.delete(key);
    }
  }
}

/** Replaces the page with a readable, final error (missing/expired link, wrong page…). */
export function showFatal(error) {
  const panel = $("#fatal");
  const app = $("#app");
  if (app) app.hidden = true;
  const chips = $("#chips");
  if (chips) chips.hidden = true;
  panel.hidden = false;
  $("#fatal-title", panel).textContent = error.title || "Something went wrong.";
  $("#fatal-detail", panel).textContent = error.detail || error.message || String(error);
  const link = $("#fatal-link", panel);
  if (error.redirect) {
    link.href = error.redirect;
    link.textContent = "Open the right page";
    link.hidden = false;
  } else {
    link.hidden = true;
  }
  document.title = `EndoLink – ${error.title || "error"}`;
  panel.focus?.();
}

/**
 * Renders the presence list; returns the normalised participants. While the room reconnects
 * (`reconnecting`) the last known list stays, each person marked as not known to be there; a
 * person whose own connection the server lost is marked the same way.
 */
export function renderPresence(list, participants, you, { reconnecting = false } = {}) {
  const people = (participants || []).map(normaliseParticipant).filter(Boolean);
  list.replaceChildren();
  list.dataset.reconnecting = reconnecting ? "true" : "false";
  for (const p of people) {
    const li = document.createElement("li");
    li.dataset.role = p.role;
    li.dataset.identity = p.identity;
    const badge = document.createElement("span");
    badge.className = "role-badge";
    badge.textContent = roleLabel(p.role);
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = p.name || p.identity;
    li.append(badge, name);
    if (you && p.identity === you) {
      const me = document.createElement("span");
      me.className = "me";
      me.textContent = "(you)";
      li.append(me);
    } else if (reconnecting || p.reconnecting) {
      const status = document.createElement("span");
      status.className = "presence-status";
      status.textContent = "reconnecting…";
      li.append(status);
    }
    list.append(li);
  }
  if (!people.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "Nobody connected yet.";
    list.append(li);
  }
  return people;
}

/** "clinic-1a2b3c4d" → "Clinic"; with a participants list, uses names when known. */
export function describer(getParticipants) {
  return (identity, role) => {
    const p = (getParticipants() || []).map(normaliseParticipant).find((x) => x && x.identity === identity);
    if (p && p.name) return p.name;
    const r = role || p?.role || String(identity || "").split("-")[0];
    return roleLabel(r);
  };
}

/** Room connection state → chip (the page's LinkBanner says what a lost room means). */
export function bindRoomChip(room, chip, notices) {
  room.addEventListener("state", (event) => {
    const { state } = event.detail;
    if (state === "open") {
      setChip(chip, "room: connected", "ok");
      notices.clear("room");
    } else if (state === "connecting") {
      setChip(chip, "room: connecting", "warn");
    } else if (state === "reconnecting") {
      setChip(chip, "room: reconnecting", "warn");
    } else {
      setChip(chip, "room: closed", "idle");
    }
  });
  room.addEventListener("error", (event) => {
    const { code, reason } = event.detail || {};
    notices.show("room-error", `Server: ${reason || code || "error"}`, "error");
    setTimeout(() => notices.clear("room-error"), 10000);
  });
}

export function formatTime(iso) {
  if (!iso) return "";
  const d = new Date(typeof iso === "number" ? iso * 1000 : iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

/** Seconds as "m:ss" or "h:mm:ss". */
export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** A duration: tenths of a second under a minute, else a clock. */
export function duration(seconds) {
  if (!seconds) return "0 s";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  return clock(seconds);
}

/** A phone turned sideways: the video fills the screen's height, so bring all of it into view
 * (the top bar stays a scroll away above it). The query matches app.css's landscape-phone rule. */
export function keepInViewOnLandscapePhone(frame) {
  const landscapePhone = matchMedia("(max-height: 500px) and (orientation: landscape)");
  const follow = () => {
    if (landscapePhone.matches) frame.scrollIntoView({ block: "start" });
  };
  landscapePhone.addEventListener("change", follow);
  follow();
}
