// The replay page's downloads: the original recording (one file, or a zip of its parts) and the
// export with the marks burned in (an MP4 made by a server job, polled until it is ready).
// Files come with the Bearer token, so they are fetched and saved through blob: URLs.

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
      state: $("#export-state"),
      link: $("#export-link"),
    };
    this.els.download.addEventListener("click", () => this._downloadOriginal());
    this.els.button.addEventListener("click", () => this._start());
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
    // Polls while this recording stays open.
    while (this.detail?.recording.id === detail.recording.id) {
      this.job = job;
      els.progress.value = job.progress || 0;
      els.progress.setAttribute("aria-valuenow", String(job.progress || 0));
      if (job.state === "done") {
        setText(els.state, msg("export.ready"));
        els.link.hidden = false;
        els.button.disabled = false;
        return;
      }
      if (job.state === "failed") {
        els.state.dataset.detail = job.error || "";
        setText(els.state, msg("export.failed"));
        els.button.disabled = false;
        return;
      }
      const percent = { number: (job.progress || 0) / 100, options: { style: "percent" } };
      setText(els.state, job.state === "queued" ? msg("export.queued") : msg("export.progress", { percent }));
      await new Promise((r) => setTimeout(r, EXPORT_POLL_MS));
      try {
        job = await this._job(job.status_url);
      } catch (err) {
        setText(els.state, msg("export.lost", { why: refusalText(err) }));
        els.button.disabled = false;
        return;
      }
    }
  }
}
