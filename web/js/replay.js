// Replay page: the recordings the token may replay (recordings.js), and a player that draws the
// marks of the consultation in sync with the video (player.js, overlay.js, timeline.js), with
// the recording's details, integrity, snapshots, chat and downloads (export.js). docs/replay.md.

import { apiFetch, refusalText } from "./api.js";
import { consentMethod } from "./consent.js";
import { Export } from "./export.js";
import { hasText, msg, setAttr, setText } from "./i18n.js";
import { watchIdle } from "./idle.js";
import { serverLink } from "./link.js";
import { Overlay } from "./overlay.js";
import { startPage } from "./page.js";
import { Player } from "./player.js";
import { PrivacyVeil } from "./privacy.js";
import { RecordingList } from "./recordings.js";
import { forgetToken } from "./session.js";
import { SnapshotGallery } from "./snapshots.js";
import { Timeline } from "./timeline.js";
import { $, Notices, clock, duration, el, roleLabel, setChip, showFatal, when } from "./ui.js";

/** A recording's status (and why it stopped) in plain words. */
function statusText(rec) {
  const status = msg(`replay.status.${rec.status}`);
  const why = `replay.stop.${rec.stop_reason}`;
  return hasText(why) ? msg("replay.statusWhy", { status, why: msg(why) }) : status;
}

/** The replay page of one session: the list, and the recording open in the player. */
class ReplayPage {
  constructor({ token, session }) {
    this.token = token;
    this.session = session;
    this.notices = new Notices($("#notices"));
    this.detail = null; // GET /api/recordings/{id} of the open recording
    this.els = {
      player: $("#player"),
      hint: $("#player-hint"),
      title: $("#player-title"),
      meta: $("#player-meta"),
      details: $("#details"),
      detailsList: $("#details-list"),
      participants: $("#participants"),
      integrity: $("#integrity-list"),
      integrityChip: $("#integrity-chip"),
      snapshots: $("#snapshots-panel"),
      chat: $("#replay-chat"),
      chatLog: $("#replay-chat-log"),
    };
    const describe = (identity) => this.describe(identity);
    this.list = new RecordingList({ token, notices: this.notices, onOpen: (id) => this.open(id) });
    this.player = new Player({ token, notices: this.notices, onChange: () => this.overlay.invalidate() });
    this.privacy = new PrivacyVeil({ token, notices: this.notices });
    const onTime = (t) => {
      this.timeline.showTime(t);
      this.privacy.show(t);
    };
    this.overlay = new Overlay({ player: this.player, token, describe, onTime });
    this.timeline = new Timeline({ player: this.player, overlay: this.overlay, describe });
    this.export = new Export({ token, notices: this.notices });
  }

  /** Read-only state for diagnostics and the browser tests (no token, no patient data). */
  get debug() {
    const { player, overlay } = this;
    const rect = overlay.layout().rect;
    const talkback = player.talkback;
    return {
      recording: this.detail?.recording.id ?? null,
      segment: this.detail ? this.detail.media[player.segment]?.segment ?? null : null,
      t: this.detail ? player.time() : null,
      marks: overlay.lastDrawn.map((m) => ({ key: m.key, alpha: m.alpha, lost: m.lost })),
      frozen: overlay.frozenShown,
      renders: overlay.renders,
      picture: rect ? { ...rect } : null,
      mediaTokenExpiresAt: player.media?.expiresAt ?? null,
      exportJob: this.export.job ? { ...this.export.job } : null,
      privacy: this.privacy.debug,
      talkback: talkback.getAttribute("src") ? { paused: talkback.paused, drift: talkback.currentTime - player.video.currentTime } : null,
    };
  }

  async start() {
    const session = this.session;
    const video = this.player.video;
    watchIdle({ idleS: session.replay_idle_s, busy: () => !video.paused && !video.ended, onIdle: () => this.logOff() });
    setChip($("#role-chip"), roleLabel(session.role), "idle");
    $("#filter-consultation-row").hidden = !(session.role === "admin" && session.consultation === "*");
    await this.list.load();
    const wanted = new URLSearchParams(location.search).get("recording");
    if (wanted && this.list.has(wanted)) await this.open(wanted);
  }

  /** After `replay_idle_s` without interaction: stop playing, forget both tokens, say why. */
  logOff() {
    this.player.reset();
    this.player.detail = null; // nothing for its error recovery to reload
    this.player.media = null;
    for (const holder of [this, this.player, this.list, this.overlay, this.export, this.privacy]) holder.token = null;
    forgetToken("replay");
    serverLink.configure(null);
    const minutes = { number: Math.max(1, Math.round(this.session.replay_idle_s / 60)) };
    showFatal({ title: msg("replay.idle.title"), detail: msg("replay.idle.detail", { minutes }) });
  }

  /** A participant's name: as the recording, its marks or its chat name them, else the role. */
  describe(identity) {
    const p = (this.detail?.recording.participants || []).find((x) => x.identity === identity);
    if (p?.name) return p.name;
    const timeline = this.detail?.timeline;
    const named =
      (timeline?.marks || []).find((m) => m.author === identity && m.author_name)?.author_name ||
      (timeline?.chat || []).find((c) => c.from === identity && c.name)?.name;
    if (named) return named;
    return roleLabel(p?.role || String(identity || "").split("-")[0]);
  }

  async open(id) {
    let detail;
    try {
      detail = await (await apiFetch(`/api/recordings/${encodeURIComponent(id)}`, { token: this.token })).json();
    } catch (err) {
      this.notices.show("recording", msg("replay.notOpened", { why: refusalText(err) }), "error");
      return;
    }
    this.notices.clear("recording");
    this.player.reset();
    this.overlay.reset();
    this.export.offer(detail);
    this.detail = detail;
    history.replaceState(history.state, "", `${location.pathname}?recording=${encodeURIComponent(id)}`);
    this.list.markCurrent(id);
    const els = this.els;
    els.hint.hidden = true;
    els.player.hidden = false;
    const rec = detail.recording;
    const title = rec.consultation?.title || msg("replay.untitled");
    setText(els.title, title);
    const meta = { when: when(rec.started_at), duration: duration(rec.duration_s) };
    setText(els.meta, msg(rec.status === "interrupted" ? "replay.metaInterrupted" : "recordings.meta", meta));
    setText(document.querySelector("title"), msg("title.replayOf", { title }));
    this._renderDetails(detail);
    this._renderIntegrity(detail.integrity);
    this.timeline.render(detail);
    this.privacy.open(detail, this.timeline.track, this.player.totalSpan(detail));
    this._renderSnapshots(detail);
    this._renderChat(detail);
    await this.player.open(detail);
  }

  _renderDetails(detail) {
    const els = this.els;
    const rec = detail.recording;
    const manifest = detail.manifest || {};
    const video = manifest.video || {};
    const consent = manifest.consent;
    const rows = [
      ["started", when(rec.started_at)],
      ["ended", rec.ended_at ? when(rec.ended_at) : "—"],
      ["duration", duration(rec.duration_s)],
      ["status", statusText(rec)],
      ["video", video.width ? msg("replay.videoSize", { codec: video.codec || "", width: video.width, height: video.height }) : video.codec],
      ["consent", consent ? msg("replay.consent", { by: consent.confirmed_by, method: consentMethod(consent.method) }) : "—"],
    ];
    if (detail.gaps?.length) rows.push(["gaps", { list: detail.gaps.map((g) => duration(g.duration_s)) }]);
    els.detailsList.replaceChildren();
    for (const [name, value] of rows) {
      const text = value && typeof value === "object" && !("key" in value) ? msg("common.text", { text: value }) : value;
      els.detailsList.append(el("dt", { text: msg(`replay.detail.${name}`) }), el("dd", { text: text || "—" }));
    }
    els.participants.replaceChildren();
    for (const p of rec.participants || []) {
      const li = el("li", { "data-role": p.role || "" }, [
        el("span", { class: "role-badge", text: roleLabel(p.role) }),
        el("span", { class: "who", text: p.name || p.identity }),
      ]);
      els.participants.append(li);
    }
    els.details.hidden = false;
  }

  _renderIntegrity(integrity) {
    const els = this.els;
    els.integrity.replaceChildren();
    for (const file of integrity?.files || []) {
      const li = el("li", {
        "data-verdict": file.verdict,
        "data-failed": String(["MODIFIED", "TRUNCATED", "MISSING"].includes(file.verdict)),
        "data-detail": file.detail || null,
        text: msg("integrity.file", { file: file.file, verdict: msg(`integrity.verdict.${file.verdict}`) }),
      });
      els.integrity.append(li);
    }
    els.integrityChip.hidden = false;
    if (integrity?.ok) {
      setChip(els.integrityChip, msg("integrity.ok"), "ok", "ok");
      this.notices.clear("integrity");
    } else {
      setChip(els.integrityChip, msg("integrity.altered"), "bad", "altered");
      this.notices.show("integrity", msg("integrity.notice"), "error");
    }
  }

  /** The chat written during the recording, at its time; a click jumps there. */
  _renderChat(detail) {
    const lines = detail.timeline.chat || [];
    this.els.chatLog.replaceChildren(
      ...lines.map((c) => {
        const who = c.name || this.describe(c.from);
        const button = el("button", { type: "button", class: "chat-seek", title: msg("replay.jump", { time: clock(c.t) }) }, [
          el("span", { class: "chat-meta", text: msg("chat.meta", { time: clock(Math.max(0, c.t)), who }) }),
          el("span", { class: "chat-text", text: String(c.text ?? "") }),
        ]);
        button.addEventListener("click", () => this.player.seek(Math.max(0, c.t)));
        return el("li", { "data-t": c.t.toFixed(3) }, [button]);
      }),
    );
    this.els.chat.hidden = lines.length === 0;
  }

  /** The recording's snapshots; a click jumps to the moment each was taken. */
  _renderSnapshots(detail) {
    const host = this.els.snapshots;
    host.querySelector("[data-snapshot-list]").replaceChildren();
    host.querySelector("[data-snapshot-empty]").hidden = false;
    const gallery = new SnapshotGallery({
      host,
      cid: detail.recording.consultation.id,
      token: this.token,
      describe: (identity) => this.describe(identity),
      notices: this.notices,
    });
    const frozenIds = new Set(detail.timeline.freezes.map((f) => f.snapshot_id).filter(Boolean));
    for (const s of detail.snapshots) {
      gallery.add(s, null, { frozen: frozenIds.has(s.id) });
      const item = gallery.items.get(s.id);
      if (item) {
        setAttr(item.li, "title", msg("replay.jump", { time: clock(s.t) }));
        item.img.addEventListener("click", () => this.player.seek(s.t));
        item.meta.addEventListener("click", () => this.player.seek(s.t));
      }
    }
    host.hidden = false;
  }
}

let page = null;

// Read-only handles for diagnostics and the browser tests (no token, no patient data).
window.endolink = Object.freeze({
  page: "replay",
  get replay() {
    return page?.debug;
  },
});

startPage({
  key: "replay",
  refuse: (session) =>
    session.role !== "admin" && !session.may_replay
      ? {
          title: msg("replay.refused"),
          detail: msg("replay.refusedDetail", { role: roleLabel(session.role) }),
        }
      : null,
  start: (loaded) => {
    page = new ReplayPage(loaded);
    return page.start();
  },
});
