// The page's link to the server, and the one banner that says what is known about it.
//
// ServerLink answers "can we reach the server?". Any part of the page that meets network trouble
// (the room's WebSocket closing, a WHIP/WHEP request failing, a peer connection going
// `disconnected`) calls check(): one cheap GET /api/session at once, then about every second
// (with jitter) while the server does not answer. The moment it answers, everything waiting in
// whenReachable() goes on: no back-off grows while the server is down, so the room and the media
// are back within a second or two of the server (docs/closures.md, "Reconnection").
//
// LinkBanner is each page's single state machine for connection trouble: the page's decide()
// names the one condition that applies now (or none), the banner shows exactly that one, and a
// short "Reconnected" when trouble is over.

import { msg } from "./i18n.js";

const PROBE_INTERVAL_MS = 1000;
const PROBE_JITTER = 0.25;
const PROBE_TIMEOUT_MS = 2500;
const GATEWAY_DOWN = new Set([502, 503, 504]); // a proxy in front answers, the server does not
const RECONNECTED_MS = 4000;
const BANNER_TICK_MS = 500;

/** Once the server answers, how long the n-th retry of a room or media session waits. */
export const QUICK_RETRY_MS = [0, 250, 500, 1000, 2000];

/** `ms` ± 20 %, so pages that lost the server together do not all come back in one instant. */
export function jitter(ms) {
  return Math.round(ms * (0.8 + Math.random() * 0.4));
}

/** The `attempt`-th delay of `schedule`, its last one from then on. */
export function pick(schedule, attempt) {
  return schedule[Math.min(attempt, schedule.length - 1)];
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class ServerLink extends EventTarget {
  constructor() {
    super();
    this.token = null;
    this.reachable = true;
    this.downSince = null;
    this.lastOutageMs = 0;
    this._checking = null;
  }

  /** The page's token: probes ask GET /api/session, which also says whether it still holds. */
  configure(token) {
    this.token = token;
  }

  /**
   * Something failed on the network: ask the server now and keep asking while it does not
   * answer. Resolves once it answers; concurrent callers share one probe loop.
   */
  check() {
    if (!this._checking) {
      this._checking = this._probeUntilReachable().finally(() => {
        this._checking = null;
      });
    }
    return this._checking;
  }

  /** Resolves at once while the server is not known to be down, else when it answers again. */
  whenReachable() {
    return this.reachable && !this._checking ? Promise.resolve() : this.check();
  }

  async _probeUntilReachable() {
    while (!(await this._probe())) {
      this._setReachable(false);
      await sleep(PROBE_INTERVAL_MS * (1 - PROBE_JITTER + Math.random() * 2 * PROBE_JITTER));
    }
    this._setReachable(true);
  }

  /** One GET with a deadline: true when the server itself answered (any status but 502–504). */
  async _probe() {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), PROBE_TIMEOUT_MS);
    try {
      const response = await fetch("/api/session", {
        headers: this.token ? { Authorization: `Bearer ${this.token}`, Accept: "application/json" } : {},
        cache: "no-store",
        credentials: "omit",
        signal: abort.signal,
      });
      return !GATEWAY_DOWN.has(response.status);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  _setReachable(reachable) {
    if (reachable === this.reachable) return;
    this.reachable = reachable;
    const now = performance.now();
    if (reachable) {
      this.lastOutageMs = now - this.downSince;
      this.downSince = null;
      console.info(`[endolink] server answers again after ${(this.lastOutageMs / 1000).toFixed(1)} s`);
    } else {
      this.downSince = now;
      console.info("[endolink] server unreachable: checking about every second");
    }
    this.dispatchEvent(new CustomEvent("state", { detail: { reachable, outageMs: this.lastOutageMs } }));
  }
}

/** The page's one link: the room, every media session and the banner share what it knows. */
export const serverLink = new ServerLink();

/**
 * The single banner of a page for connection trouble. `decide()` returns the condition that
 * applies now, `{key, text, level, trouble}`, or null; it is asked on every tick and whenever the
 * page calls update(). Only one condition is ever shown; when a trouble condition ends, a short
 * "Reconnected" replaces it.
 */
export class LinkBanner {
  constructor(notices, decide) {
    this.notices = notices;
    this.decide = decide;
    this.current = null;
    this.hadTrouble = false;
    this._reconnectedTimer = null;
    setInterval(() => this.update(), BANNER_TICK_MS);
  }

  update() {
    const condition = this.decide();
    if (condition) {
      clearTimeout(this._reconnectedTimer);
      if (condition.key !== this.current?.key || JSON.stringify(condition.text) !== JSON.stringify(this.current?.text)) {
        this._show(condition.key, condition.text, condition.level || "warn");
      }
      this.hadTrouble ||= !!condition.trouble;
      this.current = condition;
      return;
    }
    if (!this.current) return;
    this.current = null;
    if (this.hadTrouble) {
      this.hadTrouble = false;
      this._show("reconnected", msg("link.reconnected"), "ok");
      this._reconnectedTimer = setTimeout(() => this.notices.clear("link"), RECONNECTED_MS);
    } else {
      this.notices.clear("link");
    }
  }

  _show(key, text, level) {
    const item = this.notices.show("link", text, level);
    item.dataset.condition = key;
  }
}
