// Chat that is seen: the log (history from `chat_history` on every join and reconnect, then live
// `chat` messages), an unread count while the log is out of view, a short notice over the video
// for someone else's message, and on phones a Chat button that opens the panel.
//
// Every visible string comes from the catalogues (chat.* keys); a quick phrase is sent in the
// sender's language. Text and names go through textContent only.

import { msg, setAttr, setText, t } from "./i18n.js";
import { el } from "./ui.js";

/** The clinic's quick phrases (catalogue keys chat.phrase.*). */
const QUICK_PHRASES = ["ready", "repeat", "scopeIn", "scopeOut"];
const MAX_LENGTH = 2000;
const NOTICE_MS = 6000;
const NOTICE_CHARS = 120;

export class ChatPanel {
  /**
   * @param {object} opts
   * @param {HTMLElement} opts.panel  the chat section (its "open" class shows it on phones)
   * @param {HTMLElement} opts.toggle the Chat button (phones) holding `[data-unread]`
   * @param {HTMLElement} opts.notice the notice over the video
   * @param {HTMLElement|null} opts.phrases where the quick phrases go (clinic), or null
   */
  constructor({ panel, form, input, log, toggle, notice, phrases = null, room, describe }) {
    Object.assign(this, { panel, form, input, log, toggle, notice, room, describe });
    this.unread = 0;
    this.logVisible = false;
    this.noticeTimer = null;
    this.badge = toggle.querySelector("[data-unread]");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (this.send(input.value.trim())) input.value = "";
    });
    if (phrases) this._phrases(phrases);
    toggle.addEventListener("click", () => this.setOpen(!panel.classList.contains("open")));
    notice.addEventListener("click", () => this.show());
    room.addEventListener("chat_history", (event) => this.replace(event.detail.messages));
    room.addEventListener("chat", (event) => this.receive(event.detail));
    room.addEventListener("error", (event) => {
      if (event.detail.code === "invalid-message" && /chat/.test(event.detail.reason || "")) this.system(msg("chat.refused"));
    });
    new IntersectionObserver(
      ([entry]) => {
        this.logVisible = entry.isIntersecting;
        if (this.inView()) this._clearUnread();
      },
      { threshold: 0.25 },
    ).observe(log);
    document.addEventListener("visibilitychange", () => this.inView() && this._clearUnread());
  }

  /** Sends one message; false (with a line in the log saying why) when it cannot go. */
  send(text) {
    if (!text) return false;
    if (text.length > MAX_LENGTH) {
      this.system(msg("chat.tooLong", { max: { number: MAX_LENGTH } }));
      return false;
    }
    if (this.room.chat(text)) return true;
    this.system(msg("chat.notSent"));
    return false;
  }

  /** True while someone could read the log: the page shown and the log on screen. */
  inView() {
    return document.visibilityState === "visible" && this.logVisible;
  }

  setOpen(open) {
    this.panel.classList.toggle("open", open);
    this.toggle.setAttribute("aria-expanded", String(open));
    setAttr(this.toggle, "aria-label", msg(open ? "chat.close" : "chat.open"));
    if (open) this.log.scrollTop = this.log.scrollHeight;
  }

  /** Brings the chat into view: opens it on phones, scrolls to it elsewhere. */
  show() {
    this.setOpen(true);
    this.panel.scrollIntoView({ block: "nearest" });
    this.input.focus({ preventScroll: true });
  }

  /** The history the server sent on (re)joining replaces what the log showed. */
  replace(messages) {
    this.log.replaceChildren();
    for (const msg of Array.isArray(messages) ? messages : []) this.add(msg);
  }

  receive(msg) {
    this.add(msg);
    if (this._mine(msg) || this.inView()) return;
    this.unread += 1;
    this._renderUnread();
    this._notify(msg);
  }

  add(msg) {
    const when = new Date(msg.ts);
    const time = Number.isNaN(when.getTime()) ? "" : { date: when.getTime(), options: { timeStyle: "short" } };
    const mine = this._mine(msg);
    const li = el("li", { class: mine ? "mine" : null }, [
      el("span", { class: "chat-meta", text: { key: "chat.meta", params: { time, who: mine ? { key: "chat.you" } : this._who(msg) } } }),
      el("span", { class: "chat-text", text: String(msg.text ?? "") }),
    ]);
    this.log.append(li);
    this.log.scrollTop = this.log.scrollHeight;
  }

  system(text) {
    this.log.append(el("li", { class: "system", text }));
    this.log.scrollTop = this.log.scrollHeight;
  }

  _mine(msg) {
    return Boolean(this.room.you) && msg.from === this.room.you;
  }

  _who(msg) {
    return msg.name || this.describe(msg.from, msg.role);
  }

  _notify(msg) {
    const text = String(msg.text ?? "");
    const short = text.length > NOTICE_CHARS ? `${text.slice(0, NOTICE_CHARS - 1)}…` : text;
    this.notice.replaceChildren(el("strong", { text: { key: "chat.from", params: { who: this._who(msg) } } }), " ", short);
    this.notice.hidden = false;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => (this.notice.hidden = true), NOTICE_MS);
  }

  _clearUnread() {
    if (!this.unread) return;
    this.unread = 0;
    this._renderUnread();
    this.notice.hidden = true;
  }

  _renderUnread() {
    setText(this.badge, this.unread ? msg("chat.count", { n: { number: this.unread } }) : "");
    this.badge.hidden = !this.unread;
    setAttr(this.badge, "aria-label", msg("chat.unread", { n: { number: this.unread } }));
    this.toggle.classList.toggle("has-unread", this.unread > 0);
  }

  _phrases(host) {
    setAttr(host, "aria-label", msg("chat.quickLabel"));
    for (const phrase of QUICK_PHRASES) {
      const button = el("button", { type: "button", class: "quick-phrase", text: msg(`chat.phrase.${phrase}`) });
      button.addEventListener("click", () => this.send(t(`chat.phrase.${phrase}`)));
      host.append(button);
    }
  }
}
