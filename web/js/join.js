// The page behind a short invite link (/j/<code>): trades the code for a token (POST /api/join),
// leaves the token in sessionStorage for its page and opens that page, which puts the short link
// back in the address bar (session.js), so a reload or a bookmark opens it again. The token never
// appears in the address bar.

import { apiFetch, refusalText } from "./api.js";
import { loadLanguage, msg } from "./i18n.js";
import { SessionError, storeToken } from "./session.js";
import { $, showFatal } from "./ui.js";

async function join() {
  await loadLanguage();
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
  if (err.status === 0) return new SessionError("network", msg("error.network"), msg("session.checkNetwork"));
  const known = refusalText(err);
  const title = known.key === "error.other" ? msg("join.failed") : known;
  const next = { "too-many-attempts": "join.wait", "unknown-link": "join.copiedWhole" }[err.code] || "session.askCoordinator";
  const detail = known.key === "error.other" ? known : msg(next);
  return new SessionError(err.status === 429 ? "busy" : "invalid", title, detail);
}

join().catch((err) => {
  $("#loading").hidden = true;
  showFatal(err instanceof SessionError ? err : { title: msg("page.failed"), detail: err?.message || String(err) });
});
