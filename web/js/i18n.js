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

/** The language to use: a remembered choice, else the browser's first one we have. */
export function pickLanguage(remembered, browserLanguages) {
  if (remembered && remembered in LANGUAGES) return remembered;
  for (const tag of browserLanguages || []) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (base in LANGUAGES) return base;
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

/** Loads the catalogues and translates the static page; call once before anything is shown. */
export async function loadLanguage() {
  const code = pickLanguage(new URLSearchParams(location.search).get("lang") || remembered(), navigator.languages);
  fallback = await fetchCatalogue(FALLBACK);
  catalogue = code === FALLBACK ? fallback : await fetchCatalogue(code).catch(() => fallback);
  current = catalogue === fallback ? FALLBACK : code;
  document.documentElement.lang = current;
  translate(document);
  return current;
}

/** The current language code ("en" | "ko" | "mn"). */
export function language() {
  return current;
}

/** Switches language: remembered, the static page re-translated, and `endolink:language` sent
 * so a module that wrote text itself can write it again. */
export async function setLanguage(code) {
  if (!(code in LANGUAGES)) throw new Error(`unknown language ${code}`);
  try {
    localStorage.setItem(STORE_KEY, code);
  } catch {
    /* not remembered, still switched for this page view */
  }
  catalogue = code === FALLBACK ? fallback : await fetchCatalogue(code);
  current = code;
  document.documentElement.lang = code;
  translate(document);
  document.dispatchEvent(new CustomEvent("endolink:language", { detail: { language: code } }));
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

/**
 * Translates the static markup under `root`: `data-i18n="key"` sets the text,
 * `data-i18n-attr="aria-label:key;title:key2"` sets attributes.
 */
export function translate(root) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of node.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":").map((part) => part.trim());
      if (attr && key) node.setAttribute(attr, t(key));
    }
  }
}

/** A number in the current language's style. */
export function formatNumber(value, options = {}) {
  return new Intl.NumberFormat(current, options).format(value);
}

/** A date and/or time in the current language's style (`options` as Intl.DateTimeFormat). */
export function formatDateTime(value, options = { dateStyle: "medium", timeStyle: "short" }) {
  return new Intl.DateTimeFormat(current, options).format(value instanceof Date ? value : new Date(value));
}
