// Picture quality of the endoscope video on the surgeon / observer page.
// The relay moves a viewer between the original and lower renditions by its own connection
// ("Automatic", the default) and says so with a `quality` message naming the WHEP session; the
// page shows a badge and a notice in plain words. The picker pins a quality instead: it re-opens
// the WHEP session with `?quality=`.

import { msg, setText } from "./i18n.js";

export const QUALITIES = ["auto", "original", "540p", "360p"];

/** The WHEP endpoint for a choice ("auto" is the server's default: no parameter). */
export function qualityEndpoint(base, quality) {
  if (quality === "auto") return base;
  return `${base}${base.includes("?") ? "&" : "?"}quality=${encodeURIComponent(quality)}`;
}

/** The WHEP session id of a FeedPlayer's current session (null: none). */
export function sessionOf(player) {
  const resource = player?.client?.resource;
  return resource ? resource.split("/").pop() : null;
}

/**
 * @param {{select: HTMLSelectElement, badge: HTMLElement, room: EventTarget, notices,
 *          player: () => any, reopen: (quality: string) => void}} options
 */
export function setupQuality({ select, badge, room, notices, player, reopen }) {
  const told = new Map(); // WHEP session id -> its latest `quality` message
  let shownFor = null;

  for (const quality of QUALITIES) {
    const option = document.createElement("option");
    option.value = quality;
    setText(option, msg(`quality.${quality}`));
    select.append(option);
  }
  select.value = "auto";
  select.addEventListener("change", () => {
    shownFor = null;
    show(null);
    reopen(select.value);
  });

  function show(message) {
    const reduced = message && message.quality !== "original";
    badge.hidden = !reduced;
    if (reduced) setText(badge, msg("quality.badge", { quality: message.quality }));
    if (!message || !message.automatic) {
      notices.clear("quality");
    } else if (reduced) {
      notices.show("quality", msg("quality.reduced", { quality: message.quality }));
    } else {
      notices.show("quality", msg("quality.recovered"));
    }
  }

  function apply() {
    const session = sessionOf(player());
    const message = session ? told.get(session) : null;
    if (!message || message === shownFor) return;
    shownFor = message;
    show(message);
  }

  room.addEventListener("quality", (event) => {
    told.set(event.detail.session, event.detail);
    apply();
  });
  return { apply };
}
