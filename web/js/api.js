// Requests to the EndoLink API with the page's Bearer token (never a cookie: credentials are
// omitted), and the server's error answers as readable errors.

import { hasText, msg } from "./i18n.js";

/** A failed API request: `status` (0 when the server could not be reached), `code`, `reason`. */
export class ApiError extends Error {
  constructor(status, code, reason) {
    super(status ? `${reason} (HTTP ${status})` : reason);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.reason = reason;
  }
}

/**
 * A refusal in the page's words (a msg()): the catalogue's sentence for the server's error
 * code, else a general one carrying the server's own reason as a detail.
 */
export function refusalText(err) {
  if (err?.text) return err.text; // an error this page raised, with its own sentence (failure())
  if (err?.status === 0) return msg("error.network");
  if (!err?.status) return msg("error.other", { reason: err?.message || String(err ?? "") });
  let code = err.code;
  if (code === "unauthorized") code = /expired/i.test(err.reason || "") ? "link-expired" : "link-invalid";
  if (hasText(`error.${code}`)) return msg(`error.${code}`);
  return msg("error.other", { reason: err.reason || err.message || code || "" });
}

/** An Error carrying the sentence (a msg()) the page shows for it; `detail` stays for the console. */
export function failure(text, detail = text.key) {
  return Object.assign(new Error(detail), { text });
}

/** Reads a JSON error body {error, reason}; never throws. */
export async function readError(response) {
  let code = `http-${response.status}`;
  let reason = response.statusText || `HTTP ${response.status}`;
  try {
    const text = await response.text();
    if (text) {
      try {
        const body = JSON.parse(text);
        if (body && typeof body === "object") {
          code = body.error || code;
          reason = body.reason || reason;
        }
      } catch {
        reason = text.slice(0, 300);
      }
    }
  } catch {
    /* body unreadable */
  }
  return { status: response.status, code, reason };
}

/**
 * Fetches an API path with `Authorization: Bearer <token>` (none without a token); resolves to the Response when its
 * status is 2xx, rejects with an ApiError otherwise. A Blob `body` is sent as it is (its
 * Content-Type in `headers`), any other body as JSON. An aborted `signal` rejects with the
 * ApiError of an unreachable server (status 0); the caller knows it aborted.
 */
export async function apiFetch(path, { token, method = "GET", body, headers = {}, cache = "no-store", signal } = {}) {
  const init = {
    method,
    headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), Accept: "application/json", ...headers },
    cache,
    credentials: "omit",
    signal,
  };
  if (body instanceof Blob) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "the server could not be reached");
  }
  if (!response.ok) {
    const err = await readError(response);
    throw new ApiError(err.status, err.code, err.reason);
  }
  return response;
}
