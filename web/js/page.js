// The start every page (clinic, surgeon, replay) shares: the session behind its invite link,
// then the page itself; a refused link or a failure shows the error panel instead of a
// half-working page.

import { loadLanguage, t } from "./i18n.js";
import { serverLink } from "./link.js";
import { SessionError, loadSession } from "./session.js";
import { $, showFatal } from "./ui.js";

/**
 * Loads the session of page `key` (a token per page; `roles`: the roles it serves, null: any),
 * shows the app unless `refuse(session)` returns an error to show, then runs `start({token,
 * session})`. A SessionError from `start` is shown as it is too.
 */
export function startPage({ key, roles = null, refuse = () => null, start }) {
  run().catch((err) => {
    $("#loading").hidden = true;
    // Anything but a refused link is a bug: never fail silently.
    showFatal(err instanceof SessionError ? err : { title: t("page.failed"), detail: err?.message || String(err) });
  });

  async function run() {
    await loadLanguage();
    const loaded = await loadSession(key, roles);
    serverLink.configure(loaded.token);
    $("#loading").hidden = true;
    const refusal = refuse(loaded.session);
    if (refusal) {
      showFatal(refusal);
      return;
    }
    $("#app").hidden = false;
    $("#chips").hidden = false;
    await start(loaded);
  }
}
