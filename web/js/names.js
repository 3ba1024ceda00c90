// The participant's display name on a page whose invite link carries none: asked once in a
// small dialog, remembered in localStorage, sent with the room's `auth` message (the server
// checks it the same way: signaling/auth/names.py). A name the server refuses (close 4422) is
// forgotten and asked again with the reason. A link with a name never asks: the server uses it.

import { formatNumber, t } from "./i18n.js";
import { el } from "./ui.js";

export const MAX_NAME_LENGTH = 64;
const STORE_KEY = "endolink.name";
// Control characters (C0, DEL, C1), lone surrogates, line and paragraph separators.
const REFUSED = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/u;

/** `text` trimmed as {name}, or {problem}: the sentence saying what is wrong with it. */
export function checkName(text) {
  const name = String(text ?? "").trim();
  if (!name) return { problem: t("name.empty") };
  if ([...name].length > MAX_NAME_LENGTH) return { problem: t("name.tooLong", { max: formatNumber(MAX_NAME_LENGTH) }) };
  if (REFUSED.test(name)) return { problem: t("name.controlCharacters") };
  return { name };
}

function remembered() {
  try {
    const stored = localStorage.getItem(STORE_KEY);
    return stored && checkName(stored).name ? checkName(stored).name : null;
  } catch {
    return null;
  }
}

function remember(name) {
  try {
    if (name) localStorage.setItem(STORE_KEY, name);
    else localStorage.removeItem(STORE_KEY);
  } catch {
    /* storage disabled: asked again next time */
  }
}

/** Shows the name dialog until a usable name is given; `reason` explains a refused one. */
export function askName(reason = "") {
  return new Promise((resolve) => {
    const input = el("input", {
      type: "text",
      id: "name-input",
      maxlength: String(MAX_NAME_LENGTH * 2),
      autocomplete: "name",
      required: true,
      "data-testid": "name-input",
    });
    const problem = el("p", { class: "name-problem", role: "alert", "data-testid": "name-problem", text: reason });
    const form = el("form", { method: "dialog" }, [
      el("h2", { text: t("name.title") }),
      el("p", { text: t("name.explain") }),
      el("label", { for: "name-input", text: t("name.label") }),
      input,
      problem,
      el("button", { type: "submit", "data-testid": "name-ok", text: t("name.ok") }),
    ]);
    const dialog = el("dialog", { class: "name-dialog", "data-testid": "name-dialog", "aria-labelledby": "name-title" }, [form]);
    form.querySelector("h2").id = "name-title";
    dialog.addEventListener("cancel", (event) => event.preventDefault()); // a name is needed
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const checked = checkName(input.value);
      if (!checked.name) {
        problem.textContent = checked.problem;
        input.focus();
        return;
      }
      remember(checked.name);
      dialog.close();
      dialog.remove();
      resolve(checked.name);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

/**
 * Connects `room` under the person's name: the link's (nothing to send), else the remembered
 * one, else asked. A name the server refuses is asked again.
 */
export async function connectWithName(room, session) {
  if (!session.name) {
    room.name = remembered() ?? (await askName());
    room.addEventListener("name-refused", async (event) => {
      remember(null);
      room.name = await askName(t("name.refused", { reason: event.detail.reason }));
      room.connect();
    });
  }
  room.connect();
}
