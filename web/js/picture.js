// The live endoscope's picture quality, as the server's guard judges it (relay/picture_quality.py):
// `picture` messages {level: good|fair|poor, hints: [blurred|too-bright|too-dark|colour-cast],
// focus}, the current one in `welcome.picture` (null while the endoscope is not live).
// The clinic page shows a gentle hint in plain words saying what to do; the surgeon and observer
// pages a small badge whose title (hover) or a tap says why.

import { msg, setAttr, setText } from "./i18n.js";

const HINTS = { blurred: "blurred", "too-bright": "tooBright", "too-dark": "tooDark", "colour-cast": "colourCast" };
const LEVELS = ["good", "fair", "poor"];

/** The picture's state from `welcome` and `picture` messages; `show(picture | null)` on a change.
 * Nothing is shown while the endoscope is offline or the room connection is down (the page
 * cannot know then; `welcome` brings the current state back). */
function follow(room, show) {
  room.addEventListener("welcome", (event) => show(valid(event.detail.picture)));
  room.addEventListener("picture", (event) => show(valid(event.detail)));
  room.addEventListener("feed", (event) => {
    if (event.detail.feed === "endoscope" && event.detail.state !== "live") show(null);
  });
  room.addEventListener("state", (event) => {
    if (event.detail.state !== "open") show(null);
  });
}

function valid(picture) {
  if (!picture || !LEVELS.includes(picture.level)) return null;
  return { level: picture.level, hints: (picture.hints || []).filter((hint) => hint in HINTS) };
}

/** Clinic: one notice per hint, e.g. "The picture is blurred — clean the lens or hold still." */
export function setupPictureHints({ room, notices }) {
  follow(room, (picture) => {
    const hints = picture ? picture.hints : [];
    for (const [hint, key] of Object.entries(HINTS)) {
      if (hints.includes(hint)) notices.show(`picture-${hint}`, msg(`picture.hint.${key}`));
      else notices.clear(`picture-${hint}`);
    }
  });
}

/** Surgeon and observer: the badge "Picture: fair"; hover or tap tells why. */
export function setupPictureBadge({ badge, room }) {
  let why = null;
  const render = () => {
    const open = badge.getAttribute("aria-expanded") === "true" && why;
    setText(badge, open ? why : msg(`picture.badge.${badge.dataset.level}`));
  };
  follow(room, (picture) => {
    badge.hidden = !picture;
    if (!picture) return;
    badge.dataset.level = picture.level;
    why = picture.hints.length
      ? msg("picture.why", { reasons: { list: picture.hints.map((hint) => msg(`picture.reason.${HINTS[hint]}`)) } })
      : msg("picture.whyGood");
    setAttr(badge, "title", why);
    render();
  });
  badge.addEventListener("click", () => {
    badge.setAttribute("aria-expanded", String(badge.getAttribute("aria-expanded") !== "true"));
    render();
  });
}
