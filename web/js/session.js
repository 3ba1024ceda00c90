// The session behind a page's invite link, shared by the clinic, surgeon and replay pages.
//
// A short invite link (/j/<code>) is traded for a token by join.js, which leaves the token in
// sessionStorage (one key per page, so a clinic tab and a surgeon tab in one browser do not
// overwrite each other) and opens the page with `#link=<code>`: the page puts the short link back
// in the address bar, so a reload or a bookmark opens it again. An older link carries the token
// itself in the URL fragment (#token=…), which browsers never send to the server nor put in a
// Referer: it is moved to sessionStorage the same way and stripped from the address bar. Then
// the page asks the server who we are: GET /api/session.

import { apiFetch, refusalText } from "./api.js";
import { msg } from "./i18n.js";
import { roleLabel } from "./ui.js";
import { routeMediaThroughCluster } from "./whip.js";

const STORAGE_PREFIX = "endolink.token.";

/** A failure the page shows as it is: `title` and `detail` are readable sentences. */
export class SessionError extends Error {
  constructor(kind, title, detail, extra = {}) {
    super(`${title?.key ?? title} ${detail?.key ?? detail}`); // title, detail: msg()s (i18n.js)
    this.name = "SessionError";
    this.kind = kind; // "missing" | "expired" | "invalid" | "forbidden" | "wrong-page" | "network" | "server"
    this.title = title;
    this.detail = detail;
    Object.assign(this, extra);
  }
}

/** Keeps the token of page `pageKey` for this tab. */
export function storeToken(pageKey, token) {
  const key = STORAGE_PREFIX + pageKey;
  try {
    sessionStorage.setItem(key, token.trim());
  } catch {
    // Storage disabled (private mode quirks): keep it in memory for this page view only.
    memoryTokens.set(key, token.trim());
  }
}

/**
 * Moves `#token=…` into sessionStorage and strips the fragment (or, after a short link,
 * `#link=<code>` back to `/j/<code>`); returns the stored token or null.
 */
export function takeToken(pageKey) {
  const key = STORAGE_PREFIX + pageKey;
  const fragment = location.hash.startsWith("#") ? location.hash.slice(1) : location.hash;
  if (fragment) {
    const params = new URLSearchParams(fragment);
    const token = params.get("token");
    if (token) storeToken(pageKey, token);
    const code = params.get("link");
    // The fragment goes even if it held no token: it must not linger in history.
    const address = code && !token ? `/j/${encodeURIComponent(code)}` : location.pathname;
    history.replaceState(history.state, "", address + location.search);
  }
  let stored = memoryTokens.get(key) ?? null;
  try {
    stored = sessionStorage.getItem(key) ?? stored;
  } catch {
    /* storage unavailable: memory copy only */
  }
  return stored || null;
}

const memoryTokens = new Map();

/** Forgets the token of a page (e.g. after the server said it expired). */
export function forgetToken(pageKey) {
  memoryTokens.delete(STORAGE_PREFIX + pageKey);
  try {
    sessionStorage.removeItem(STORAGE_PREFIX + pageKey);
  } catch {
    /* ignore */
  }
}

/**
 * Loads the session of this page.
 * @param {string} pageKey  "clinic" | "surgeon" | "replay"
 * @param {string[]} roles  roles this page serves
 * @returns {Promise<{token: string, session: object}>}
 */
export async function loadSession(pageKey, roles) {
  const token = takeToken(pageKey);
  if (!token) {
    throw new SessionError("missing", msg("session.noLink"), msg("session.noLinkDetail", { example: `${location.origin}/j/…` }));
  }
  let response;
  try {
    response = await apiFetch("/api/session", { token });
  } catch (err) {
    throw sessionError(err, pageKey);
  }
  const session = await response.json();
  // In a cluster the consultation's media may be served by another node: every offer asks
  // which first (a redirect to another origin would lose the token).
  if ("media_url" in session) routeMediaThroughCluster(token);
  if (roles && !roles.includes(session.role)) {
    const target = session.role === "clinic" ? "clinic" : "surgeon";
    throw new SessionError(
      "wrong-page",
      msg("session.wrongPage"),
      session.role === "admin" ? msg("session.adminHere") : msg("session.otherPage", { role: roleLabel(session.role) }),
      { redirect: session.role === "admin" ? null : `/${target}#token=${encodeURIComponent(token)}` },
    );
  }
  return { token, session };
}

/** The refusal of GET /api/session (an ApiError) as the page shows it. */
function sessionError(err, pageKey) {
  if (err.status === 0) {
    return new SessionError("network", msg("error.network"), msg("session.checkNetwork"));
  }
  if (err.status === 401) {
    forgetToken(pageKey);
    const expired = /expired/i.test(err.reason);
    return new SessionError(expired ? "expired" : "invalid", refusalText(err), msg("session.askCoordinator"));
  }
  if (err.status === 403) {
    return new SessionError("forbidden", msg("session.denied"), msg("session.deniedDetail"));
  }
  return new SessionError("server", msg("session.serverFailed"), msg("session.reload", { why: refusalText(err) }));
}

/**
 * Diagnostic "force TURN": with `?relay=1` in the page address (e.g. `/clinic?relay=1#token=…`)
 * the page sends and receives video through the TURN relay only (iceTransportPolicy "relay"),
 * which shows whether a hospital network's path through its firewall works.
 */
export function forceRelay() {
  return new URLSearchParams(location.search).get("relay") === "1";
}

/** What the pages show while `?relay=1` is on, so nobody forgets the test mode. */
export const FORCED_RELAY_NOTICE = msg("session.forcedRelay");

/** ICE servers from /api/session → RTCConfiguration.iceServers. */
export function iceServersFrom(session) {
  const list = Array.isArray(session?.ice_servers) ? session.ice_servers : [];
  return list
    .map((s) => {
      if (typeof s === "string") return { urls: s };
      if (!s || typeof s !== "object") return null;
      const urls = s.urls ?? s.url;
      if (!urls) return null;
      const server = { urls };
      if (s.username) server.username = s.username;
      if (s.credential) server.credential = s.credential;
      return server;
    })
    .filter(Boolean);
}
