// The consultation room: WebSocket /ws/{cid}, protocol v1 (docs/architecture.md).
//
// Events (CustomEvent, payload in `detail`):
//   state    {state: "connecting"|"open"|"reconnecting"|"closed", attempt, delayMs}
//   welcome  presence  feed  consent  chat  stats  error  (and any other server message type,
//            e.g. annotation / pointer / freeze / snapshot): the server's messages as they are
//   fatal    {code, reason}  the server refused us for good (token invalid / wrong consultation)

const FATAL_CLOSE = {
  4400: "the page sent a malformed message",
  4401: "the access link is invalid or has expired",
  4403: "the access link is for another consultation",
  4404: "this consultation does not exist (any more)",
  4409: "this link was opened in another window or tab, which took over",
};
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const PING_INTERVAL_MS = 20000;

export class Room extends EventTarget {
  constructor(consultationId, token) {
    super();
    this.cid = consultationId;
    this.token = token;
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
      ws.send(JSON.stringify({ type: "auth", token: this.token }));
    });
    ws.addEventListener("message", (event) => this._onMessage(ws, event));
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
      this._setState("open");
      this._startPing();
    } else if (msg.type === "presence") {
      this.participants = Array.isArray(msg.participants) ? msg.participants : [];
    } else if (msg.type === "feed" && msg.feed) {
      this.feeds = { ...this.feeds, [msg.feed]: { state: msg.state, identity: msg.identity ?? null } };
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
    if (FATAL_CLOSE[event.code]) {
      this._setState("closed");
      this.dispatchEvent(
        new CustomEvent("fatal", {
          detail: { code: event.code, reason: event.reason || FATAL_CLOSE[event.code] },
        }),
      );
      return;
    }
    this._scheduleReconnect(event.reason || `connection lost (code ${event.code})`, event.code === 4429);
  }

  _scheduleReconnect(reason, slow = false) {
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)] * (slow ? 4 : 1);
    const delayMs = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    this._setState("reconnecting", { delayMs, reason });
    this._retryTimer = setTimeout(() => this.connect(), delayMs);
  }

  _startPing() {
    this._stopPing();
    this._pingTimer = setInterval(() => this.send({ type: "ping" }), PING_INTERVAL_MS);
  }

  _stopPing() {
    clearInterval(this._pingTimer);
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
      if (f && typeof f === "object" && f.feed) out[f.feed] = { state: f.state ?? "live", identity: f.identity ?? null };
      else if (typeof f === "string") out[f] = { state: "live", identity: null };
    }
  } else if (feeds && typeof feeds === "object") {
    for (const [name, value] of Object.entries(feeds)) {
      if (typeof value === "string") out[name] = { state: value, identity: null };
      else if (typeof value === "boolean") out[name] = { state: value ? "live" : "offline", identity: null };
      else if (value && typeof value === "object") out[name] = { state: value.state ?? "live", identity: value.identity ?? null };
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
  return { identity: String(p.identity ?? p.id ?? ""), name: String(p.name ?? ""), role: String(p.role ?? "") };
}
