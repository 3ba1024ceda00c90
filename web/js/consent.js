// The clinic's patient-consent panel: what the server holds (who confirmed, when, how) or the
// form that records it. Streaming waits for it (the server refuses the stream without it).

import { apiFetch, refusalText } from "./api.js";
import { msg, setText } from "./i18n.js";
import { $, when } from "./ui.js";

/** How the consent was taken, in plain words (a msg()). */
export function consentMethod(method) {
  return msg(["paper", "page"].includes(method) ? `consent.method.${method}` : "consent.method.other");
}

export class ConsentPanel {
  /**
   * @param {object} o
   * @param {string} o.cid
   * @param {string} o.token
   * @param {import("./ui.js").Notices} o.notices
   * @param {() => void} o.onChange     the consent was recorded or withdrawn
   * @param {() => Promise<void>} o.onConflict  recorded elsewhere meanwhile: reload it
   */
  constructor({ cid, token, notices, onChange, onConflict }) {
    Object.assign(this, { cid, token, notices, onChange, onConflict });
    this.consent = null;
    this.els = {
      recorded: $("#consent-recorded"),
      summary: $("#consent-summary"),
      form: $("#consent-form"),
      by: $("#consent-by"),
      confirm: $("#consent-confirm"),
      error: $("#consent-error"),
    };
    this.els.by.addEventListener("input", () => this._validate());
    this._validate();
    this.els.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this._submit();
    });
  }

  /** Whether the patient's consent is on record. */
  get recorded() {
    return this.consent !== null;
  }

  /** Shows `consent` (the server's JSON, or null: none yet). */
  show(consent) {
    const els = this.els;
    this.consent = consent && typeof consent === "object" ? consent : null;
    if (this.consent) {
      els.form.hidden = true;
      els.recorded.hidden = false;
      const c = this.consent;
      const method = consentMethod(c.method);
      const by = c.confirmed_by || "—";
      setText(els.summary, c.confirmed_at ? msg("consent.summary", { by, when: when(c.confirmed_at), method }) : msg("consent.summaryNoTime", { by, method }));
    } else {
      els.recorded.hidden = true;
      els.form.hidden = false;
    }
    this.onChange();
  }

  _validate() {
    this.els.confirm.disabled = this.els.by.value.trim().length < 2;
  }

  async _submit() {
    const els = this.els;
    const confirmedBy = els.by.value.trim();
    if (confirmedBy.length < 2) return;
    els.confirm.disabled = true;
    els.error.hidden = true;
    let conflict = false;
    try {
      const response = await apiFetch(`/api/consultations/${encodeURIComponent(this.cid)}/consent`, {
        token: this.token,
        method: "POST",
        body: { confirmed_by: confirmedBy, method: "page" },
      });
      const body = await response.json().catch(() => null);
      this.show(body?.consent ?? body ?? { confirmed_by: confirmedBy, method: "page" });
      this.notices.show("consent", msg("consent.done"), "info");
      setTimeout(() => this.notices.clear("consent"), 5000);
    } catch (err) {
      conflict = err.status === 409;
      if (!conflict) this._error(msg("consent.failed", { why: refusalText(err) }));
    } finally {
      this._validate();
    }
    // Recorded meanwhile (another device or the coordinator): show what the server holds.
    if (conflict) await this.onConflict();
  }

  _error(text) {
    setText(this.els.error, text);
    this.els.error.hidden = false;
  }
}
