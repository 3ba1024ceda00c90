// The pages' words. Every visible string comes from one JSON catalogue per language
// (/static/i18n/<code>.json, flat "area.key" → text with {placeholders}); no build step.
// The language is the visitor's own choice (remembered in localStorage), else the first of the
// browser's languages we have, else English. English is always loaded too, so a key missing
// from a newer catalogue still shows a sentence, never the key (tests keep the three complete).

export const LANGUAGES = Object.freeze({ en: "English", ko: "한국어", mn: "Монгол" });
const STORE_KEY = "endolink.lang";
const FALLBACK = "en";

let current = FALLBACK;
let catalogue = {};
let fallback = {};

/** Whether `code` is one of ours (own keys only: `?lang=toString` is not a language). */
const known = (code) => typeof code === "string" && Object.hasOwn(LANGUAGES, code);

/** The language to use: a remembered choice, else the browser's first one we have. */
export function pickLanguage(remembered, browserLanguages) {
  if (known(remembered)) return remembered;
  for (const tag of browserLanguages || []) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (known(base)) return base;
  }
  return FALLBACK;
}

function remembered() {
  try {
    return localStorage.getItem(STORE_KEY);
  } catch {
    return null; // storage disabled: fall back to the browser's languages
  }
}

async function fetchCatalogue(code) {
  const response = await fetch(`/static/i18n/${code}.json`, { cache: "no-cache" });
  if (!response.ok) throw new Error(`language ${code}: HTTP ${response.status}`);
  return response.json();
}

/** Loads the catalogues, translates the static page and adds the language picker (`.topbar`);
 * call once before anything is shown. An unknown `?lang=` is reported, not fatal. */
export async function loadLanguage() {
  const asked = new URLSearchParams(location.search).get("lang");
  const code = pickLanguage(known(asked) ? asked : remembered(), navigator.languages);
  fallback = await fetchCatalogue(FALLBACK);
  catalogue = code === FALLBACK ? fallback : await fetchCatalogue(code).catch(() => fallback);
  current = catalogue === fallback ? FALLBACK : code;
  document.documentElement.lang = current;
  translate(document);
  addPicker();
  if (asked && !known(asked)) reportUnknown(asked);
  return current;
}

/** Says, in the language now shown, that `?lang=<asked>` is not one we have. */
function reportUnknown(asked) {
  const notice = document.createElement("p");
  notice.className = "notice";
  notice.dataset.level = "warn";
  notice.dataset.testid = "language-notice";
  notice.setAttribute("role", "status");
  setText(notice, msg("language.unknown", { code: asked.slice(0, 20), language: LANGUAGES[current] }));
  const host = document.querySelector("#notices") || document.querySelector(".topbar");
  if (host?.id === "notices") host.append(notice);
  else host?.after(notice);
  document.addEventListener("endolink:language", () => notice.remove(), { once: true });
}

/** The topbar's language select: English / 한국어 / Монгол, switching in place. */
function addPicker() {
  const bar = document.querySelector(".topbar");
  if (!bar || bar.querySelector(".language-picker")) return;
  const select = document.createElement("select");
  select.className = "language-picker";
  select.dataset.testid = "language-picker";
  setAttr(select, "aria-label", msg("language.choose"));
  setAttr(select, "title", msg("language.choose"));
  for (const [code, name] of Object.entries(LANGUAGES)) {
    const option = document.createElement("option");
    option.value = code;
    option.lang = code;
    option.textContent = name;
    select.append(option);
  }
  select.value = current;
  select.addEventListener("change", () => setLanguage(select.value).catch(() => (select.value = current)));
  document.addEventListener("endolink:language", () => (select.value = current));
  bar.append(select);
}

/** The current language code ("en" | "ko" | "mn"). */
export function language() {
  return current;
}

/** Switches language: remembered, the static page re-translated, and `endolink:language` sent
 * so a module that wrote text itself can write it again. */
export async function setLanguage(code) {
  if (!known(code)) throw new Error(`unknown language ${code}`);
  try {
    localStorage.setItem(STORE_KEY, code);
  } catch {
    /* not remembered, still switched for this page view */
  }
  catalogue = code === FALLBACK ? fallback : await fetchCatalogue(code);
  current = code;
  const url = new URL(location.href);
  if (url.searchParams.has("lang")) {
    url.searchParams.delete("lang"); // the choice made here wins over the link's on a reload
    history.replaceState(history.state, "", url);
  }
  document.documentElement.lang = code;
  translate(document);
  document.dispatchEvent(new CustomEvent("endolink:language", { detail: { language: code } }));
}

/** Whether the catalogues have `key` (to map a server's code to a sentence when there is one). */
export function hasText(key) {
  return key in catalogue || key in fallback;
}

/** The text of `key` in the current language, with {name} placeholders filled from `params`. */
export function t(key, params = {}) {
  const text = catalogue[key] ?? fallback[key];
  if (text == null) {
    console.warn(`i18n: no text for ${key}`);
    return key;
  }
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/** A text to show: a catalogue key and its parameters, kept so a language switch can write it
 * again. A parameter may itself be a msg(), a {date, options}, a {number, options} or a
 * {list, sep} of those (see resolve). */
export function msg(key, params = {}) {
  return { key, params };
}

/** A parameter's text: nested messages translated, dates and numbers formatted now. */
function resolve(value) {
  if (value && typeof value === "object") {
    if ("key" in value) return render(value.key, value.params);
    if ("date" in value) return formatDateTime(value.date, value.options);
    if ("number" in value) return formatNumber(value.number, value.options);
    if ("list" in value) {
      const items = value.list.map(resolve);
      return value.sep != null ? items.join(value.sep) : new Intl.ListFormat(current, { type: "unit" }).format(items);
    }
  }
  return value;
}

function render(key, params) {
  const resolved = {};
  for (const [name, value] of Object.entries(params || {})) resolved[name] = resolve(value);
  return t(key, resolved);
}

/** Writes `text` (a msg(), or a plain string such as a person's name) into `node`; a msg() is
 * written again in the new language when the language changes. */
export function setText(node, text) {
  if (!node) return;
  if (text && typeof text === "object") {
    node.dataset.i18n = text.key;
    node.dataset.i18nParams = JSON.stringify(text.params || {});
    node.textContent = render(text.key, text.params);
  } else {
    delete node.dataset.i18n;
    delete node.dataset.i18nParams;
    node.textContent = text ?? "";
  }
}

/** Sets attribute `attr` (aria-label, title, placeholder, alt) of `node` to a msg(), kept for a switch. */
export function setAttr(node, attr, text) {
  const pairs = (node.dataset.i18nAttr || "").split(";").filter((p) => p && p.split(":")[0].trim() !== attr);
  const params = JSON.parse(node.dataset.i18nAttrParams || "{}");
  pairs.push(`${attr}:${text.key}`);
  params[attr] = text.params || {};
  node.dataset.i18nAttr = pairs.join(";");
  node.dataset.i18nAttrParams = JSON.stringify(params);
  node.setAttribute(attr, render(text.key, text.params));
}

/**
 * Translates the markup under `root`: `data-i18n="key"` (with optional `data-i18n-params`)
 * sets the text, `data-i18n-attr="aria-label:key;title:key2"` sets attributes.
 */
export function translate(root) {
  for (const node of root.querySelectorAll("[data-i18n]")) {
    node.textContent = render(node.dataset.i18n, node.dataset.i18nParams ? JSON.parse(node.dataset.i18nParams) : {});
  }
  for (const node of root.querySelectorAll("[data-i18n-attr]")) {
    const params = node.dataset.i18nAttrParams ? JSON.parse(node.dataset.i18nAttrParams) : {};
    for (const pair of node.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":").map((part) => part.trim());
      if (attr && key) node.setAttribute(attr, render(key, params[attr]));
    }
  }
}

/** A number in the current language's style. */
export function formatNumber(value, options = {}) {
  return new Intl.NumberFormat(current, options).format(value);
}

/** A date and/or time in the current language's style (`options` as Intl.DateTimeFormat). */
export function formatDateTime(value, options = { dateStyle: "medium", timeStyle: "short" }) {
  const date = value instanceof Date ? value : new Date(value);
  if (Intl.DateTimeFormat.supportedLocalesOf([current]).length) return new Intl.DateTimeFormat(current, options).format(date);
  // A browser without this language's calendar data would write English month names and AM/PM:
  // numbers only instead, year first (2026.12.02 08:09), as Mongolian writes dates.
  const numeric = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" };
  const parts = {};
  for (const p of new Intl.DateTimeFormat("en", { ...numeric, hourCycle: "h23" }).formatToParts(date)) parts[p.type] = p.value;
  const day = `${parts.year}.${parts.month}.${parts.day}`;
  const time = `${parts.hour}:${parts.minute}${options.timeStyle === "medium" || options.second ? `:${parts.second}` : ""}`;
  if (options.timeStyle && !options.dateStyle) return time;
  if (options.dateStyle && !options.timeStyle) return day;
  return `${day} ${time}`;
}
