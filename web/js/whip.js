// A small WHIP / WHEP client (RFC 9725 / draft-ietf-wish-whep) for browser peers.
//
// One class serves both directions: the caller builds the RTCPeerConnection with the right
// transceivers (sendonly for WHIP, recvonly for WHEP) and hands it to start().
//   publish: new WhipClient("/whip/{cid}", token)
//   play:    new WhipClient("/whep/{cid}?feed=endoscope", token)

const ICE_GATHERING_TIMEOUT_MS = 2000;

/** A failed WHIP/WHEP request: status, machine code and a readable reason from the server. */
export class WhipError extends Error {
  constructor(status, code, reason, retryAfterS = null) {
    super(reason ? `${reason} (HTTP ${status})` : `HTTP ${status}`);
    this.name = "WhipError";
    this.status = status;
    this.code = code;
    this.reason = reason;
    this.retryAfterS = retryAfterS;
  }
}

/** Waits until ICE gathering is complete, at most `timeoutMs` (then uses what was gathered). */
export function waitForIceGathering(pc, timeoutMs = ICE_GATHERING_TIMEOUT_MS) {
  if (pc.iceGatheringState === "complete") return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (complete) => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onChange);
      resolve(complete);
    };
    const onChange = () => {
      if (pc.iceGatheringState === "complete") done(true);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    pc.addEventListener("icegatheringstatechange", onChange);
  });
}

/**
 * Parses `Link: <turn:host?transport=udp>; rel="ice-server"; username="u"; credential="p"`
 * (several links may be comma-joined) into RTCIceServer objects.
 */
export function parseIceServerLinks(header) {
  if (!header) return [];
  const servers = [];
  for (const link of splitOutsideQuotes(header, ",")) {
    const match = /^\s*<([^>]*)>(.*)$/.exec(link);
    if (!match) continue;
    const params = {};
    for (const part of splitOutsideQuotes(match[2], ";")) {
      const eq = part.indexOf("=");
      if (eq < 0) continue;
      const name = part.slice(0, eq).trim().toLowerCase();
      let value = part.slice(eq + 1).trim();
      if (value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1).replace(/\\(.)/g, "$1");
      params[name] = value;
    }
    if (!(params.rel || "").split(/\s+/).includes("ice-server")) continue;
    const server = { urls: match[1] };
    if (params.username) server.username = params.username;
    if (params.credential) server.credential = params.credential;
    servers.push(server);
  }
  return servers;
}

function splitOutsideQuotes(text, separator) {
  const parts = [];
  let current = "";
  let quoted = false;
  let bracketed = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === "\\" && quoted && i + 1 < text.length) {
      current += ch + text[++i];
      continue;
    }
    if (ch === '"') quoted = !quoted;
    else if (ch === "<" && !quoted) bracketed = true;
    else if (ch === ">" && !quoted) bracketed = false;
    if (ch === separator && !quoted && !bracketed) {
      parts.push(current);
      current = "";
    } else {
      current += ch;
    }
  }
  if (current.trim()) parts.push(current);
  return parts;
}

async function errorFrom(response) {
  let code = `http-${response.status}`;
  let reason = response.statusText || "";
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      code = body.error || code;
      reason = body.reason || reason;
    } catch {
      if (text) reason = text.slice(0, 300);
    }
  } catch {
    /* unreadable body */
  }
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return new WhipError(response.status, code, reason, Number.isFinite(retryAfter) ? retryAfter : null);
}

let locateMedia = null; // set in a cluster: (path) → the base URL of the node for that offer

/**
 * Makes every offer go to the node that serves the consultation (GET /api/session names it as
 * `media_url`; null when it is this page's server). Playing the endoscope original goes to
 * `view_url` instead: null when this page's server serves it by cascade from the owner.
 * Called by loadSession only in a cluster.
 */
export function routeMediaThroughCluster(token) {
  locateMedia = async (path) => {
    try {
      const response = await fetch("/api/session", {
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
        credentials: "omit",
      });
      if (!response.ok) return null;
      const session = await response.json();
      const url = playsOriginal(path) && "view_url" in session ? session.view_url : session.media_url;
      return url || null;
    } catch {
      return null;
    }
  };
}

/** A WHEP offer for the endoscope original: no marks burned in, no rung pinned. */
function playsOriginal(path) {
  const url = new URL(path, window.location.href);
  const quality = url.searchParams.get("quality");
  return (
    url.pathname.startsWith("/whep/") &&
    url.searchParams.get("feed") === "endoscope" &&
    url.searchParams.get("annotated") !== "1" &&
    (quality === null || quality === "auto" || quality === "original")
  );
}

export class WhipClient {
  /**
   * @param {string} endpointUrl  e.g. "/whip/abc" or "/whep/abc?feed=talkback" (relative to the page)
   * @param {string} token        the page's Bearer token
   */
  constructor(endpointUrl, token) {
    this.path = endpointUrl;
    this.endpoint = new URL(endpointUrl, location.href).href;
    this.token = token;
    this.resource = null; // absolute URL of the session resource (Location)
    this.iceServers = []; // from Link: rel="ice-server"
    this.etag = null;
    this._onPageHide = () => this.stop({ keepalive: true });
  }

  /**
   * ICE servers for this token, asked before offering (RFC 9725 §4.6: OPTIONS with the Bearer
   * token → Link: rel="ice-server"): the TURN credentials in them are minted per request, so
   * every new session gets fresh ones. Resolves to null when the server cannot be asked.
   */
  async fetchIceServers() {
    try {
      const response = await fetch(this.endpoint, {
        method: "OPTIONS",
        headers: { Authorization: `Bearer ${this.token}` },
        cache: "no-store",
        credentials: "omit",
      });
      return response.ok ? parseIceServerLinks(response.headers.get("Link")) : null;
    } catch {
      return null;
    }
  }

  /** Negotiates `pc` with the endpoint; resolves once the answer is applied. */
  async start(pc) {
    if (this.resource) throw new Error("WHIP/WHEP session already started");
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await waitForIceGathering(pc);
    const sdp = pc.localDescription.sdp;
    if (locateMedia) this.endpoint = new URL(this.path, (await locateMedia(this.path)) || window.location.href).href;

    let response;
    try {
      response = await fetch(this.endpoint, {
        method: "POST",
        headers: {
          "Content-Type": "application/sdp",
          Accept: "application/sdp, application/json",
          Authorization: `Bearer ${this.token}`,
        },
        body: sdp,
        cache: "no-store",
        credentials: "omit",
      });
    } catch {
      throw new WhipError(0, "network", "the server could not be reached");
    }
    if (response.status !== 201) throw await errorFrom(response);

    const location = response.headers.get("Location");
    if (!location) throw new WhipError(201, "protocol", "the server's answer has no Location header");
    this.resource = new URL(location, this.endpoint).href;
    this.etag = response.headers.get("ETag");
    this.iceServers = parseIceServerLinks(response.headers.get("Link"));
    const answer = await response.text();
    window.addEventListener("pagehide", this._onPageHide);
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
    } catch (err) {
      await this.stop();
      throw new WhipError(201, "bad-answer", `the server's SDP answer was rejected: ${err.message}`);
    }
    return { resource: this.resource, iceServers: this.iceServers };
  }

  /** Lets go of the session without a DELETE: the server replaces or drops it by itself. */
  forget() {
    window.removeEventListener("pagehide", this._onPageHide);
    this.resource = null;
  }

  /**
   * Ends the session on the server (DELETE on the resource). With keepalive the request
   * survives the page being closed (pagehide). Never throws.
   */
  async stop({ keepalive = false } = {}) {
    window.removeEventListener("pagehide", this._onPageHide);
    const resource = this.resource;
    this.resource = null;
    if (!resource) return;
    try {
      await fetch(resource, {
        method: "DELETE",
        headers: { Authorization: `Bearer ${this.token}` },
        keepalive,
        cache: "no-store",
        credentials: "omit",
      });
    } catch {
      // The server also drops sessions whose media stopped; nothing more to do here.
    }
  }
}
