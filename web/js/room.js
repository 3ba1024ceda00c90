// The consultation room: WebSocket /ws/{cid}, protocol v1 (docs/architecture.md).
//
// Events (CustomEvent, payload in `detail`):
//   state    {state: "connecting"|"open"|"reconnecting"|"closed", attempt, reason}
//   welcome  presence  feed  consent  chat  chat_history  stats  error  (and any other server message type,
//            e.g. annotation / pointer / freeze / snapshot): the server's messages as they are
//   fatal    {code, reason}  the server refused us for good (token invalid / wrong consultation)
//   name-refused {reason}    the name typed on this page cannot be used (close 4422): ask again
//
// A lost connection comes back as soon as the server answers again (link.js probes it about every
// second while it is down); only the server's "too many connections" (4429) waits longer. A ping
// that gets no answer in time, or the server becoming unreachable, ends a socket that may be
// half-open, so a page never keeps trusting a dead room.

import { QUICK_RETRY_MS, jitter, pick, serverLink } from "./link.js";

// Close codes that end the room for good; the pages say why (catalogue keys room.close.<code>).
const FATAL_CLOSE = new Set([4400, 4401, 4403, 4404, 4409, 4410]);
const NAME_REFUSED = 4422;
const REFUSED_RETRY_MS = [2000, 4000, 8000, 15000];
const PING_INTERVAL_MS = 10000;
const PONG_TIMEOUT_MS = 4000;

export class Room extends EventTarget {
  constructor(consultationId, token) {
    super();
    this.cid = consultationId;
    this.token = token;
    // The name typed on this device when the link has none (names.js); sent with `auth`.
    this.name = null;
    this.ws = null;
    this.state = "closed";
    this.attempt = 0;
    this.closedByUs = false;
    this.you = null;
    this.youInfo = null;
    this.participants = [];
    this.feeds = {};
    this._retryTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this.everOpen = false;
    serverLink.addEventListener("state", (event) => {
      // The socket may still look open while leading nowhere: a fresh one once the server answers.
      if (!event.detail.reachable && this.state === "open" && !this.closedByUs) {
        this._abandon("the server cannot be reached");
      }
    });
  }

  get url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/${encodeURIComponent(this.cid)}`;
  }

  connect() {
    this.closedByUs = false;
    clearTimeout(this._retryTimer);
    this._setState(this.attempt ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._scheduleReconnect(`cannot open the room connection: ${err.message}`);
      return;
    }
    this.ws = ws;
    ws.addEventListener("open", () => {
      const auth = { type: "auth", token: this.token };
      if (this.name) auth.name = this.name;
      ws.send(JSON.stringify(auth));
    });
    ws.addEventListener("message", (event) => {
      clearTimeout(this._pongTimer);
      this._onMessage(ws, event);
    });
    ws.addEventListener("close", (event) => this._onClose(ws, event));
  }

  _onMessage(ws, event) {
    if (ws !== this.ws) return;
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object" || typeof msg.type !== "string") return;
    if (msg.type === "welcome") {
      this.attempt = 0;
      // `you` is {identity, name, role, …}; keep the identity for comparisons, the rest aside.
      this.youInfo = msg.you && typeof msg.you === "object" ? msg.you : null;
      this.you = this.youInfo ? this.youInfo.identity ?? null : msg.you ?? null;
      this.participants = Array.isArray(msg.participants) ? msg.participants : [];
      this.feeds = normaliseFeeds(msg.feeds);
      this.everOpen = true;
      this._setState("open");
      this._startPing();
    } else if (msg.type === "presence") {
      this.participants = Array.isArray(msg.participants) ? msg.participants : [];
    } else if (msg.type === "feed" && msg.feed) {
      this.feeds = {
        ...this.feeds,
        [msg.feed]: { state: msg.state, identity: msg.identity ?? null, reason: msg.reason ?? null },
      };
    }
    // Every server message type becomes an event of that name (annotation, pointer, freeze…
    // included, for the pages that handle them); "state" and "fatal" are the room's own.
    if (msg.type !== "pong" && msg.type !== "state" && msg.type !== "fatal") {
      this.dispatchEvent(new CustomEvent(msg.type, { detail: msg }));
    }
  }

  _onClose(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    this._stopPing();
    if (this.closedByUs) {
      this._setState("closed");
      return;
    }
    if (event.code === NAME_REFUSED) {
      this._setState("closed");
      this.dispatchEvent(new CustomEvent("name-refused", { detail: { reason: event.reason } }));
      return;
    }
    if (FATAL_CLOSE.has(event.code)) {
      this._setState("closed");
      this.dispatchEvent(
        new CustomEvent("fatal", {
          detail: { code: event.code, reason: event.reason },
        }),
      );
      return;
    }
    this._scheduleReconnect(event.reason || `connection lost (code ${event.code})`, event.code === 4429);
  }

  /** Reconnects: when the server answers (at once if it is not known to be down), with a short
   * back-off while it answers but the socket still fails, a long one when it refused us (4429). */
  _scheduleReconnect(reason, refused = false) {
    clearTimeout(this._retryTimer);
    const attempt = this.attempt++;
    this._setState("reconnecting", { reason });
    const later = (base) => {
      this._retryTimer = setTimeout(() => {
        if (!this.closedByUs && !this.ws) this.connect();
      }, jitter(base));
    };
    if (refused) later(pick(REFUSED_RETRY_MS, attempt));
    else serverLink.check().then(() => later(pick(QUICK_RETRY_MS, attempt)));
  }

  /** Gives up on the current socket (it may be half-open) and reconnects. */
  _abandon(reason) {
    const ws = this.ws;
    this.ws = null;
    this._stopPing();
    ws?.close(4000, "reconnecting");
    this._scheduleReconnect(reason);
  }

  _startPing() {
    this._stopPing();
    this._pingTimer = setInterval(() => {
      if (!this.send({ type: "ping" })) return;
      clearTimeout(this._pongTimer);
      this._pongTimer = setTimeout(() => this._abandon("the room connection stopped answering"), PONG_TIMEOUT_MS);
    }, PING_INTERVAL_MS);
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pingTimer = null;
  }

  _setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, attempt: this.attempt, ...extra } }));
  }

  /** Sends a message if the room is open; returns whether it was sent. */
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state !== "open") return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  chat(text) {
    return this.send({ type: "chat", text });
  }

  sendStats(stats) {
    return this.send({ type: "stats", stats });
  }

  close() {
    this.closedByUs = true;
    clearTimeout(this._retryTimer);
    this._stopPing();
    if (this.ws) this.ws.close(1000, "page closed");
    this.ws = null;
    this._setState("closed");
  }
}

/**
 * welcome.feeds → {feedName: {state, identity}}. Accepts a mapping
 * ({"endoscope": "live"} or {"endoscope": {state, identity}}) or a list of {feed, state, identity}.
 */
export function normaliseFeeds(feeds) {
  const out = {};
  if (Array.isArray(feeds)) {
    for (const f of feeds) {
      if (f && typeof f === "object" && f.feed) {
        out[f.feed] = { state: f.state ?? "live", identity: f.identity ?? null, reason: f.reason ?? null };
      }
      else if (typeof f === "string") out[f] = { state: "live", identity: null };
    }
  } else if (feeds && typeof feeds === "object") {
    for (const [name, value] of Object.entries(feeds)) {
      if (typeof value === "string") out[name] = { state: value, identity: null };
      else if (typeof value === "boolean") out[name] = { state: value ? "live" : "offline", identity: null };
      else if (value && typeof value === "object") {
        out[name] = { state: value.state ?? "live", identity: value.identity ?? null, reason: value.reason ?? null };
      }
    }
  }
  return out;
}

/** A participant entry → {identity, name, role} (accepts plain identity strings too). */
export function normaliseParticipant(p) {
  if (typeof p === "string") {
    const role = p.split("-")[0];
    return { identity: p, name: "", role };
  }
  if (!p || typeof p !== "object") return null;
  return {
    identity: String(p.identity ?? p.id ?? ""),
    name: String(p.name ?? ""),
    role: String(p.role ?? ""),
    // One person may be here from several devices (a laptop to watch, a tablet to draw).
    devices: Number.isInteger(p.devices) ? p.devices : 1,
    // "reconnecting": the server lost this person's connection and holds their place a while.
    reconnecting: p.state === "reconnecting",
  };
}
