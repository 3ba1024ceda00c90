// The parts of a recording filmed outside the body (the room, the people in it: the server's
// privacy guard marked them in the manifest, docs/recording.md). Replay shows them blurred with a
// plain-words notice until the viewer asks to see one; the server audits that request first
// (POST /api/recordings/{id}/out-of-body), and only then is that part shown unblurred. The
// timeline shows the parts as hatched bars. docs/replay.md.
//
// A blur on the page is a courtesy to the people in the room, not a lock: whoever may replay may
// also download the original file.

import { apiFetch, refusalText } from "./api.js";
import { msg, setText } from "./i18n.js";
import { $, clock, el } from "./ui.js";

export class PrivacyVeil {
  /**
   * @param {object} o
   * @param {string} o.token
   * @param {import("./ui.js").Notices} o.notices
   */
  constructor({ token, notices }) {
    Object.assign(this, { token, notices });
    this.frame = $("#video-frame");
    this.spans = []; // [{start_s, end_s|null}] of the open recording
    this.revealed = new Set(); // indexes into spans the viewer asked to see
    this.current = -1; // the span at the time shown, -1: none
    this.shownAt = 0; // the recording time shown
    this.recording = null;
    this.text = el("p", { class: "privacy-text", "data-testid": "privacy-text" });
    this.button = el("button", { type: "button", "data-testid": "privacy-reveal", text: msg("privacy.replay.reveal") });
    this.button.addEventListener("click", () => this.reveal());
    this.veil = el("div", { class: "privacy-veil", "data-testid": "privacy-veil", role: "status", hidden: true }, [this.text, this.button]);
    this.frame.append(this.veil);
  }

  /** The open recording's spans (its detail JSON); draws them on the timeline `track`. */
  open(detail, track, total) {
    this.recording = detail.recording.id;
    this.spans = detail.timeline.out_of_body || [];
    this.revealed = new Set();
    this.current = -1;
    for (const span of this.spans) {
      const end = Math.min(total, span.end_s ?? total);
      const bar = el("div", { class: "timeline-privacy", "data-testid": "timeline-privacy", "data-start": span.start_s.toFixed(3) });
      bar.style.left = `${(Math.max(0, span.start_s) / total) * 100}%`;
      bar.style.width = `${((end - Math.max(0, span.start_s)) / total) * 100}%`;
      track.append(bar);
    }
    this.show(0);
  }

  /** Blurs the picture while recording time `t` is in a span the viewer has not asked to see. */
  show(t) {
    this.shownAt = t;
    const index = this.spans.findIndex((s) => s.start_s <= t && (s.end_s === null || t < s.end_s));
    const hidden = index >= 0 && !this.revealed.has(index);
    if (index !== this.current) {
      this.current = index;
      if (index >= 0) {
        const span = this.spans[index];
        const until = span.end_s === null ? msg("privacy.replay.toEnd") : clock(span.end_s);
        setText(this.text, msg("privacy.replay.hidden", { from: clock(span.start_s), until }));
      }
    }
    this.frame.classList.toggle("privacy-blurred", hidden);
    this.veil.hidden = !hidden;
  }

  /** Asks the server to record that the viewer looks at this part, then unblurs it. */
  async reveal() {
    const index = this.current;
    if (index < 0 || !this.recording) return;
    this.button.disabled = true;
    try {
      await apiFetch(`/api/recordings/${encodeURIComponent(this.recording)}/out-of-body`, {
        token: this.token,
        method: "POST",
        body: { start_s: this.spans[index].start_s },
      });
      this.revealed.add(index);
      this.notices.clear("privacy");
    } catch (err) {
      this.notices.show("privacy", msg("privacy.replay.notRevealed", { why: refusalText(err) }), "error");
    } finally {
      this.button.disabled = false;
    }
    this.show(this.shownAt);
  }

  /** For diagnostics and tests: whether the picture is blurred now, and the spans. */
  get debug() {
    return { blurred: this.frame.classList.contains("privacy-blurred"), spans: this.spans.length, revealed: [...this.revealed] };
  }
}

/**
 * Live pages: while the server's privacy guard sees the camera outside the body (`privacy`
 * messages, and `welcome.out_of_body` for a page that joins later), a notice says so in plain
 * words: the room and the people in it are being filmed, and the recording will blur that part.
 */
export function bindOutOfBodyNotice(room, notices) {
  const show = (outside) => {
    if (outside) notices.show("out-of-body", msg(`privacy.live.${room.youInfo?.role === "clinic" ? "clinic" : "viewer"}`), "warn");
    else notices.clear("out-of-body");
  };
  room.addEventListener("welcome", (event) => show(event.detail?.out_of_body === true));
  room.addEventListener("privacy", (event) => show(event.detail?.out_of_body === true));
}
