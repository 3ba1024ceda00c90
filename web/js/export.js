// The replay page's downloads: the original recording (one file, or a zip of its parts) and the
// export with the marks burned in (an MP4 made by a server job, polled until it is ready).
// Files come with the Bearer token, so they are fetched and saved through blob: URLs. A running
// export shows its progress and the time left, and can be cancelled (DELETE on its status URL).

import { apiFetch, refusalText } from "./api.js";
import { msg, setText } from "./i18n.js";
import { $ } from "./ui.js";

const EXPORT_POLL_MS = 500;

export class Export {
  /**
   * @param {object} o
   * @param {string} o.token
   * @param {import("./ui.js").Notices} o.notices
   */
  constructor({ token, notices }) {
    Object.assign(this, { token, notices });
    this.detail = null; // the recording offered
    this.job = null; // the export job's last state
    this.els = {
      download: $("#download"),
      button: $("#export"),
      progress: $("#export-progress"),
      cancel: $("#export-cancel"),
      state: $("#export-state"),
      link: $("#export-link"),
    };
    this.els.download.addEventListener("click", () => this._downloadOriginal());
    this.els.button.addEventListener("click", () => this._start());
    this.els.cancel.addEventListener("click", () => this._cancel());
    this.els.link.addEventListener("click", (event) => {
      event.preventDefault();
      if (this.job?.url) this._save(this.job.url, `endolink-${this.detail.recording.id}-annotated.mp4`, this.els.link);
    });
  }

  /** Offers the downloads of `detail` (the recording's JSON), forgetting any earlier export. */
  offer(detail) {
    const els = this.els;
    this.detail = detail;
    this.job = null;
    els.progress.hidden = true;
    setText(els.state, "");
    els.link.hidden = true;
    els.cancel.hidden = true;
    els.button.disabled = false;
  }

  async _save(url, fallbackName, control) {
    const original = control.dataset.i18n ? msg(control.dataset.i18n) : control.textContent;
    control.setAttribute("aria-busy", "true");
    setText(control, msg("export.downloading"));
    try {
      const response = await apiFetch(url, { token: this.token, headers: { Accept: "*/*" } });
      const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "")?.[1] || fallbackName;
      const blob = await response.blob();
      const href = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = href;
      a.download = name;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(href), 60000);
    } catch (err) {
      this.notices.show("download", msg("export.downloadFailed", { why: refusalText(err) }), "error");
    } finally {
      control.removeAttribute("aria-busy");
      setText(control, original);
    }
  }

  _downloadOriginal() {
    if (!this.detail) return;
    const rec = this.detail.recording;
    const ext = rec.segments > 1 ? "zip" : rec.container;
    this._save(this.detail.links.download, `endolink-${rec.id}.${ext}`, this.els.download);
  }

  async _job(url, method = "GET") {
    return (await (await apiFetch(url, { token: this.token, method })).json()).job;
  }

  async _start() {
    const detail = this.detail;
    if (!detail) return;
    const els = this.els;
    els.button.disabled = true;
    els.link.hidden = true;
    els.progress.hidden = false;
    els.progress.value = 0;
    setText(els.state, msg("export.starting"));
    let job;
    try {
      job = await this._job(detail.links.exports, "POST");
    } catch (err) {
      setText(els.state, msg("export.refused", { why: refusalText(err) }));
      els.button.disabled = false;
      els.progress.hidden = true;
      return;
    }
    els.cancel.hidden = false;
    els.cancel.disabled = false;
    // Polls while this recording stays open and the job runs.
    while (this.detail?.recording.id === detail.recording.id && !this._show(job)) {
      await new Promise((r) => setTimeout(r, EXPORT_POLL_MS));
      if (this.job?.state === "cancelled") return; // the cancel's answer was shown
      try {
        job = await this._job(job.status_url);
      } catch (err) {
        setText(els.state, msg("export.lost", { why: refusalText(err) }));
        els.button.disabled = false;
        els.cancel.hidden = true;
        return;
      }
    }
  }

  /** Shows `job`; true once it has ended (done, failed or cancelled). */
  _show(job) {
    const els = this.els;
    this.job = job;
    els.progress.value = job.progress || 0;
    els.progress.setAttribute("aria-valuenow", String(job.progress || 0));
    const ended = ["done", "failed", "cancelled"].includes(job.state);
    if (ended) {
      els.button.disabled = false;
      els.cancel.hidden = true;
    }
    const percent = { number: (job.progress || 0) / 100, options: { style: "percent" } };
    if (job.state === "done") {
      setText(els.state, msg("export.ready"));
      els.link.hidden = false;
    } else if (job.state === "failed") {
      els.state.dataset.detail = job.error || "";
      setText(els.state, msg("export.failed"));
    } else if (job.state === "cancelled") {
      els.progress.hidden = true;
      setText(els.state, msg("export.cancelled"));
    } else if (job.state === "queued") {
      setText(els.state, msg("export.queued"));
    } else if (job.eta_s == null) {
      setText(els.state, msg("export.progress", { percent }));
    } else {
      setText(els.state, msg("export.eta", { percent, time: timeLeft(job.eta_s) }));
    }
    return ended;
  }

  async _cancel() {
    const els = this.els;
    if (!this.job) return;
    els.cancel.disabled = true;
    setText(els.state, msg("export.cancelling"));
    try {
      this._show(await this._job(this.job.status_url, "DELETE"));
    } catch (err) {
      els.cancel.disabled = false;
      setText(els.state, msg("export.cancel_failed", { why: refusalText(err) }));
    }
  }
}

/** "2 minutes" / "40 seconds" (rounded up to 5 s), formatted in the page's language. */
function timeLeft(seconds) {
  if (seconds >= 60) return { number: Math.ceil(seconds / 60), options: { style: "unit", unit: "minute", unitDisplay: "long" } };
  const rounded = Math.max(5, Math.ceil(seconds / 5) * 5);
  return { number: rounded, options: { style: "unit", unit: "second", unitDisplay: "long" } };
}
