// The replay page's player: the recording's video (one file per segment) and the surgeon's
// talk-back kept on its clock, on the recording's own time line (docs/replay.md).
//
//   * Media: a <video> cannot send the Bearer header, so the player asks for a short-lived media
//     token (GET /api/recordings/{id}/media-token, ≤ 5 min, this recording only) and plays
//     /api/recordings/{id}/media/{segment}?t=<token>. The browser's own Range requests then reach
//     the server unchanged, so seeking works at once without downloading the file first. The token
//     is renewed before it expires; a media error after expiry reloads the source at the same
//     position with a fresh one.
//   * Sound: a <video> plays only a file's default audio track (the clinic's microphone); the
//     surgeon's talk-back track is served as its own audio-only file and played in an <audio>
//     element kept at the video's time (re-synced when it drifts more than 150 ms).

import { apiFetch, failure, refusalText } from "./api.js";
import { msg, setText } from "./i18n.js";
import { $, clock } from "./ui.js";

const TOKEN_RENEW_MARGIN_S = 60; // renew the media token this long before it expires
const TALKBACK_MAX_DRIFT_S = 0.15;

/** Resolves on `target`'s next `event`, rejects after `timeoutMs`. */
export function once(target, event, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      target.removeEventListener(event, done);
      reject(failure(msg("player.timeout"), `no ${event} within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    target.addEventListener(event, done, { once: true });
  });
}

export class Player {
  /**
   * @param {object} o
   * @param {string} o.token
   * @param {import("./ui.js").Notices} o.notices
   * @param {() => void} o.onChange  the picture or its time changed (the overlay redraws)
   */
  constructor({ token, notices, onChange }) {
    Object.assign(this, { token, notices, onChange });
    this.detail = null; // GET /api/recordings/{id}
    this.segment = 0; // index into detail.media
    this.media = null; // {token, expiresAt, urls: Map(seq → url), talkback: Map(seq → url)}
    this.renewTimer = 0;
    this.recovering = false;
    this.video = $("#replay-video");
    this.talkback = $("#replay-talkback");
    this.talkbackRow = $("#talkback-row");
    this.talkbackToggle = $("#talkback-toggle");
    this.segmentSelect = $("#segment-select");
    this._bind();
    this._bindTalkback();
  }

  /** Plays `detail` (the recording's JSON) from its start. */
  async open(detail) {
    this.detail = detail;
    this._renderSegments();
    try {
      await this._renewToken();
    } catch (err) {
      this.notices.show("media", msg("player.cannotPlay", { why: refusalText(err) }), "error");
      return;
    }
    await this._loadSegment(0, 0);
  }

  /** Stops what plays and forgets its media token. */
  reset() {
    clearTimeout(this.renewTimer);
    this.video.pause();
    this.video.removeAttribute("src");
    this.video.load();
    this.talkback.pause();
    this.talkback.removeAttribute("src");
  }

  /** The recording clock now. */
  time() {
    const m = this.detail?.media[this.segment];
    return (m?.offset_s || 0) + (this.video.currentTime || 0);
  }

  /** The recording's whole length (segments and gaps). */
  totalSpan(detail = this.detail) {
    const media = detail?.media || [];
    return Math.max(0.001, ...media.map((m) => m.offset_s + m.duration_s), detail?.recording.duration_s || 0);
  }

  /** Segment `index`'s URL with the current media token. */
  mediaUrl(index) {
    const seq = this.detail.media[index]?.segment;
    return this.media?.urls.get(seq) || null;
  }

  /** Jump to recording time `t` (switching segment if needed). */
  async seek(t) {
    const media = this.detail?.media;
    if (!media?.length) return;
    let index = media.findIndex((m) => t < m.offset_s + m.duration_s);
    if (index < 0) index = media.length - 1;
    const fileTime = Math.max(0, t - media[index].offset_s);
    if (this.media && this.media.expiresAt - Date.now() / 1000 < TOKEN_RENEW_MARGIN_S) await this._renewToken();
    const video = this.video;
    if (index !== this.segment || !video.currentSrc || video.currentSrc !== new URL(this.mediaUrl(index), location.href).href) {
      await this._loadSegment(index, fileTime, !video.paused);
    } else {
      await this._seekFile(fileTime);
    }
    this.onChange();
  }

  _renderSegments() {
    const select = this.segmentSelect;
    select.replaceChildren();
    this.detail.media.forEach((m, i) => {
      const option = document.createElement("option");
      option.value = String(i);
      setText(option, msg("player.part", { n: m.segment, from: clock(m.offset_s), to: clock(m.offset_s + m.duration_s) }));
      select.append(option);
    });
    select.hidden = this.detail.media.length < 2;
  }

  async _renewToken() {
    const id = this.detail.recording.id;
    const response = await apiFetch(`/api/recordings/${encodeURIComponent(id)}/media-token`, { token: this.token });
    const body = await response.json();
    if (this.detail?.recording.id !== id) return;
    this.media = {
      token: body.token,
      expiresAt: body.expires_at,
      urls: new Map(body.media.map((m) => [m.segment, m.url])),
      talkback: new Map(body.media.map((m) => [m.segment, m.talkback])),
    };
    clearTimeout(this.renewTimer);
    const inMs = Math.max(5, body.expires_at - Date.now() / 1000 - TOKEN_RENEW_MARGIN_S) * 1000;
    this.renewTimer = setTimeout(() => {
      this._renewToken()
        .then(() => {
          // A paused or idle player would reconnect with the old URL: point it at the new one now.
          if (this.video.paused) this._reloadSource();
        })
        .catch((err) => this.notices.show("media", msg("player.renewFailed", { why: refusalText(err) }), "warn"));
    }, inMs);
  }

  /** Shows segment `index` at file time `fileTime` (keeps playing if it was playing). */
  async _loadSegment(index, fileTime, play = false) {
    const url = this.mediaUrl(index);
    if (!url) return;
    const segment = this.detail.media[index];
    this.segment = index;
    this.segmentSelect.value = String(index);
    const ready = once(this.video, "loadedmetadata", 15000);
    this.video.src = url;
    const talkback = segment.talkback ? this.media.talkback.get(segment.segment) : null;
    if (talkback) this.talkback.src = talkback;
    else this.talkback.removeAttribute("src");
    this.talkbackRow.hidden = !this.detail.media.some((m) => m.talkback);
    try {
      await ready;
    } catch (err) {
      this.notices.show("media", msg("player.notLoaded", { why: refusalText(err) }), "error");
      return;
    }
    if (fileTime > 0) await this._seekFile(fileTime);
    if (play) this.video.play().catch(() => {});
    this.onChange();
  }

  async _seekFile(fileTime) {
    const video = this.video;
    const target = Math.max(0, Math.min(fileTime, (Number.isFinite(video.duration) ? video.duration : fileTime) - 0.001));
    if (Math.abs(video.currentTime - target) < 0.001) return;
    const seeked = once(video, "seeked", 15000);
    video.currentTime = target;
    await seeked.catch(() => {});
  }

  /** The same source at the same position with the current media token. */
  async _reloadSource() {
    if (!this.detail) return;
    await this._loadSegment(this.segment, this.video.currentTime, !this.video.paused);
  }

  _bind() {
    const video = this.video;
    for (const event of ["play", "seeked", "seeking", "pause", "loadeddata", "timeupdate", "ratechange"]) {
      video.addEventListener(event, () => this.onChange());
    }
    video.addEventListener("ended", () => {
      // The next part of a recording with gaps plays on.
      const next = this.segment + 1;
      if (this.detail && next < this.detail.media.length) this._loadSegment(next, 0, true);
    });
    video.addEventListener("error", async () => {
      // Most likely the media token expired while the browser had to reconnect: reload once.
      if (!this.detail || this.recovering) return;
      this.recovering = true;
      try {
        await this._renewToken();
        await this._reloadSource();
        this.notices.clear("media");
      } catch (err) {
        this.notices.show("media", msg("player.stopped", { why: refusalText(err) }), "error");
      } finally {
        setTimeout(() => (this.recovering = false), 3000);
      }
    });
    this.segmentSelect.addEventListener("change", () => {
      const index = Number(this.segmentSelect.value);
      if (this.detail?.media[index]) this.seek(this.detail.media[index].offset_s);
    });
  }

  /** Keeps the talk-back <audio> on the video's clock. */
  _bindTalkback() {
    const video = this.video;
    const audio = this.talkback;
    const active = () => Boolean(audio.getAttribute("src")) && this.talkbackToggle.checked;
    const sync = (force) => {
      if (!active() || audio.readyState < 1) return;
      if (force || Math.abs(audio.currentTime - video.currentTime) > TALKBACK_MAX_DRIFT_S) {
        audio.currentTime = video.currentTime;
      }
    };
    const follow = () => {
      if (!active() || video.paused || video.ended) {
        audio.pause();
        return;
      }
      sync(true);
      audio.playbackRate = video.playbackRate;
      audio.play().catch(() => {});
    };
    video.addEventListener("play", follow);
    video.addEventListener("playing", follow);
    video.addEventListener("pause", follow);
    video.addEventListener("ended", follow);
    video.addEventListener("seeked", () => sync(true));
    video.addEventListener("ratechange", () => (audio.playbackRate = video.playbackRate));
    video.addEventListener("volumechange", () => {
      audio.muted = video.muted;
      audio.volume = video.volume;
    });
    audio.addEventListener("loadedmetadata", follow);
    this.talkbackToggle.addEventListener("change", follow);
    setInterval(() => {
      if (!video.paused) sync(false);
    }, 1000);
  }
}
