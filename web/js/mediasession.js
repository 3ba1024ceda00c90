// The base of every WHIP/WHEP session of a page (media.js: Publisher, FeedPlayer): one
// RTCPeerConnection at a time, its states as events, and the recovery rules in media.js's header.

import { QUICK_RETRY_MS, jitter, pick, serverLink } from "./link.js";
import { forceRelay } from "./session.js";
import { WhipClient, WhipError } from "./whip.js";

const REFUSED_RETRY_MS = [5000, 10000, 15000];
const DISCONNECTED_GRACE_MS = 3000;
const STALE_AFTER_OUTAGE_MS = 2000;
const EXPIRY_GRACE_MS = 500; // the server ends the session at the token's expiry: let it go first
const MAX_TIMER_MS = 2 ** 31 - 1;

/** When the session's token expires (ms since the epoch, from its JWT `exp`), or null. */
function tokenExpiryMs(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(payload)).exp;
    return Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** How to go on after a failed request: "network" (wait for the server), "server" (5xx: a
 * short back-off), "slow" (429, or 503 + Retry-After: told to wait) or "refused" (retrying
 * cannot help). */
function failureKind(err) {
  if (!(err instanceof WhipError) || err.status === 0) return "network";
  if (err.status === 429 || (err.status >= 500 && err.retryAfterS)) return "slow"; // e.g. 503 viewer limit
  return err.status >= 500 ? "server" : "refused";
}

export class Session extends EventTarget {
  constructor({ endpoint, token, iceServers }) {
    super();
    this.endpoint = endpoint;
    this.token = token;
    this.iceServers = iceServers || [];
    this.pc = null;
    this.client = null;
    this.wanted = false;
    this.generation = 0;
    this.attempt = 0;
    this.phase = "idle";
    this.error = null;
    this._retryTimer = null;
    this._graceTimer = null;
    this._expiryTimer = null;
    this.everConnected = false;
    this.replacedByServer = false; // a publisher's new session replaces its old one on the server
    this._onServerState = (event) => {
      if (event.detail.reachable) this._serverBack(event.detail.outageMs);
    };
  }

  /** Whether the current session still carries media after the server was unreachable. */
  _survivedOutage(outageMs) {
    return this.connectionState === "connected" && outageMs < STALE_AFTER_OUTAGE_MS;
  }

  _serverBack(outageMs) {
    if (!this.wanted || this.phase === "retrying" || this.phase === "refused") return;
    if (this._survivedOutage(outageMs)) return;
    this._log("server answers again: new session");
    this.attempt = 0;
    this.connect();
  }

  get connectionState() {
    return this.pc ? this.pc.connectionState : "new";
  }

  _emit(phase, extra = {}) {
    this.phase = phase;
    this.dispatchEvent(
      new CustomEvent("state", {
        detail: { phase, connectionState: this.connectionState, error: this.error, ...extra },
      }),
    );
  }

  /** A peer connection with fresh TURN credentials (asked per session: they expire); the
   * page's list from /api/session when the server cannot be asked. */
  async _newPeerConnection() {
    const fresh = await new WhipClient(this.endpoint, this.token).fetchIceServers();
    const pc = new RTCPeerConnection({
      iceServers: fresh ?? this.iceServers,
      bundlePolicy: "max-bundle",
      iceTransportPolicy: forceRelay() ? "relay" : "all",
    });
    pc.addEventListener("connectionstatechange", () => this._onConnectionState(pc));
    return pc;
  }

  _onConnectionState(pc) {
    // A connection given up on (a new session is on its way) has nothing more to say.
    if (pc !== this.pc || this.phase === "retrying") return;
    const state = pc.connectionState;
    clearTimeout(this._graceTimer);
    if (state === "connected") {
      this.everConnected = true;
      this.attempt = 0;
      this.error = null;
      this._emit("connected");
    } else if (state === "failed" || state === "closed") {
      this._emit("failed");
      if (this.wanted) this._retry("the media connection failed");
    } else if (state === "disconnected") {
      this._emit("unstable");
      serverLink.check();
      this._graceTimer = setTimeout(() => {
        if (pc === this.pc && pc.connectionState === "disconnected" && this.wanted) {
          this._retry("the media connection was interrupted");
        }
      }, DISCONNECTED_GRACE_MS);
    } else {
      this._emit(this.phase === "idle" ? "connecting" : this.phase);
    }
  }

  _log(text) {
    // Diagnostics only: endpoint paths and states, never tokens or patient data.
    console.info(`[endolink] ${new URL(this.endpoint, location.href).pathname}: ${text}`);
  }

  /**
   * A new session after `kind` of failure: at once when the server answers (again), after a
   * short back-off when it answers with an error, after Retry-After when it asks us to wait.
   */
  _retry(reason, kind = "network", retryAfterS = null) {
    if (this._tokenExpired()) return;
    clearTimeout(this._retryTimer);
    const generation = this.generation;
    const attempt = this.attempt++;
    this._emit("retrying", { reason, waitingForServer: kind === "network" });
    const later = (delay) => {
      this._log(`new session in ${delay} ms (${reason})`);
      this._retryTimer = setTimeout(() => {
        if (this.wanted && generation === this.generation) this.connect();
      }, delay);
    };
    if (kind === "slow") later(retryAfterS ? retryAfterS * 1000 : jitter(pick(REFUSED_RETRY_MS, attempt)));
    else if (kind === "server") later(jitter(pick(QUICK_RETRY_MS, attempt + 2)));
    else {
      serverLink.check().then(() => {
        if (this.wanted && generation === this.generation) later(jitter(pick(QUICK_RETRY_MS, attempt)));
      });
    }
  }

  /**
   * Ends the current session. For good (stop()): DELETE first, as closing the connection first
   * lets the relay drop the session by itself and the DELETE would meet a 404. Before a new
   * session: a viewer DELETEs its old one without waiting; a publisher leaves it to the server,
   * which replaces it when the new one arrives.
   */
  async _teardown({ forGood = false, silent = false } = {}) {
    clearTimeout(this._retryTimer);
    clearTimeout(this._graceTimer);
    const { pc, client } = this;
    this.pc = null;
    this.client = null;
    this.monitor?.stop();
    this.monitor = null;
    if (client && forGood) await client.stop();
    else if (client && (this.replacedByServer || silent)) client.forget();
    else if (client) client.stop();
    if (pc) pc.close();
  }

  /** Connects now and keeps reconnecting until stop(); connect() is each subclass's own. */
  start() {
    this.wanted = true;
    this.attempt = 0;
    serverLink.addEventListener("state", this._onServerState);
    this._armExpiry();
    return this.connect();
  }

  /** The server ends media when its token expires; the page then says the link has expired
   * (phase "expired") instead of reconnecting with a token that can only be refused. */
  _armExpiry() {
    clearTimeout(this._expiryTimer);
    const at = tokenExpiryMs(this.token);
    if (at === null) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, at - Date.now()) + EXPIRY_GRACE_MS);
    this._expiryTimer = setTimeout(() => {
      if (!this._tokenExpired()) this._armExpiry();
    }, delay);
  }

  /** Ends the session as expired if its token is past its expiry; whether it did. */
  _tokenExpired() {
    const at = tokenExpiryMs(this.token);
    if (!this.wanted || at === null || Date.now() < at) return false;
    this._log("token expired: session ended");
    this.wanted = false;
    this.generation += 1;
    serverLink.removeEventListener("state", this._onServerState);
    this._teardown({ silent: true });
    this.error = null;
    this._emit("expired");
    return true;
  }

  /** Ends the session for good (until start() is called again). */
  async stop() {
    this.wanted = false;
    this.generation += 1;
    clearTimeout(this._expiryTimer);
    serverLink.removeEventListener("state", this._onServerState);
    await this._teardown({ forGood: true });
    this.error = null;
    this._emit("stopped");
  }

  _handleStartError(err, generation) {
    if (generation !== this.generation) return;
    this.error = err;
    this._log(`request failed: ${err instanceof WhipError ? `HTTP ${err.status} ${err.code}` : err.name}`);
    const pc = this.pc;
    this.pc = null;
    this.client = null;
    if (pc) pc.close();
    const kind = failureKind(err);
    if (err instanceof WhipError && err.status === 401) {
      this.wanted = false;
      this._emit("expired");
    } else if (this.wanted && kind !== "refused") {
      this._retry(err.message, kind, err.retryAfterS);
    } else {
      this._emit("refused");
    }
  }
}
