// The page behind a short invite link (/j/<code>): trades the code for a token (POST /api/join),
// leaves the token in sessionStorage for its page and opens that page, which puts the short link
// back in the address bar (session.js), so a reload or a bookmark opens it again. The token never
// appears in the address bar.

import { apiFetch } from "./api.js";
import { SessionError, storeToken } from "./session.js";
import { $, showFatal } from "./ui.js";

/** Titles for the server's refusals; the detail is the server's own sentence. */
const REFUSALS = {
  "unknown-link": "This link is not known.",
  "link-expired": "This link has expired.",
  "link-withdrawn": "This link was withdrawn.",
  "too-many-attempts": "Too many attempts.",
};

async function join() {
  const code = decodeURIComponent(location.pathname.slice("/j/".length));
  let answer;
  try {
    answer = await (await apiFetch("/api/join", { method: "POST", body: { code } })).json();
  } catch (err) {
    throw joinError(err);
  }
  storeToken(answer.page, answer.token);
  location.replace(`/${answer.page}${location.search}#link=${encodeURIComponent(code)}`);
}

function joinError(err) {
  if (err.status === 0) {
    return new SessionError("network", "Server unreachable.", "Check the network connection and reload the page.");
  }
  const title = REFUSALS[err.code] ?? "This link could not be opened.";
  return new SessionError(err.status === 429 ? "busy" : "invalid", title, err.reason);
}

join().catch((err) => {
  $("#loading").hidden = true;
  showFatal(err instanceof SessionError ? err : { title: "The page failed to start.", detail: err?.message || String(err) });
});
