// Replay page: the recordings the token may replay, and a player that draws the marks of the
// consultation in sync with the video (docs/replay.md).
//
//   * Media: a <video> cannot send the Bearer header, so the page asks for a short-lived media
//     token (GET /api/recordings/{id}/media-token, ≤ 5 min, this recording only) and plays
//     /api/recordings/{id}/media/{segment}?t=<token>. The browser's own Range requests then reach
//     the server unchanged, so seeking works at once without downloading the file first. The token
//     is renewed before it expires; a media error after expiry reloads the source at the same
//     position with a fresh one.
//   * Marks: the timeline (GET /api/recordings/{id}) lists every mark's states with their times
//     on the recording clock; the overlay draws, at `offset_s + video.currentTime`, each mark's
//     state at that time (pen strokes grow as they were drawn), fading ones fading out over their
//     last second, with annotations.js's drawMark and geometry.js's picture rectangle — the same
//     drawing as the live pages.
//   * Sound: a <video> plays only a file's default audio track (the clinic's microphone); the
//     surgeon's talk-back track is served as its own audio-only file and played in an <audio>
//     element kept at the video's time (re-synced when it drifts more than 150 ms).
//   * Freezes: while the surgeon had everyone's picture frozen, the player shows the frozen frame
//     (the stored snapshot, or the recording's own frame at the freeze) with the marks drawn on it,
//     while the sound goes on: the picture pauses as it did live.

import { drawMark } from "./annotations.js";
import { backingSize, pictureRect } from "./geometry.js";
import { loadSession, readError } from "./session.js";
import { SnapshotGallery, fetchSnapshotBlob } from "./snapshots.js";
import { $, Notices, formatTime, roleLabel, setChip, showFatal } from "./ui.js";

const TOKEN_RENEW_MARGIN_S = 60; // renew the media token this long before it expires
const EXPORT_POLL_MS = 500;
const FADE_OUT_S = 1; // a fading mark's last second, alpha 1 → 0 (as on the live pages)
const STILL_TIMEOUT_MS = 8000;
const TALKBACK_MAX_DRIFT_S = 0.15;

const notices = new Notices($("#notices"));
const els = {
  list: $("#recordings-list"),
  empty: $("#recordings-empty"),
  filters: $("#filters"),
  consultationRow: $("#filter-consultation-row"),
  consultation: $("#filter-consultation"),
  since: $("#filter-since"),
  until: $("#filter-until"),
  player: $("#player"),
  hint: $("#player-hint"),
  title: $("#player-title"),
  meta: $("#player-meta"),
  frame: $("#video-frame"),
  video: $("#replay-video"),
  talkback: $("#replay-talkback"),
  talkbackRow: $("#talkback-row"),
  talkbackToggle: $("#talkback-toggle"),
  frozen: $("#frozen-frame"),
  canvas: $("#replay-overlay"),
  frozenBadge: $("#frozen-badge"),
  gapBadge: $("#gap-badge"),
  track: $("#timeline-track"),
  playhead: $("#timeline-playhead"),
  time: $("#timeline-time"),
  total: $("#timeline-total"),
  segment: $("#segment-select"),
  showMarks: $("#show-annotations"),
  authors: $("#author-filter"),
  download: $("#download"),
  exportButton: $("#export"),
  exportProgress: $("#export-progress"),
  exportState: $("#export-state"),
  exportLink: $("#export-link"),
  details: $("#details"),
  detailsList: $("#details-list"),
  participants: $("#participants"),
  integrity: $("#integrity-list"),
  integrityChip: $("#integrity-chip"),
  snapshots: $("#snapshots-panel"),
};

const state = {
  token: null,
  session: null,
  recordings: [],
  detail: null, // GET /api/recordings/{id}
  segment: 0, // index into detail.media
  media: null, // {token, expiresAt, urls: Map(seq → url)}
  mediaRenewTimer: 0,
  hiddenAuthors: new Set(),
  showMarks: true,
  stills: new Map(), // freeze index → Promise<blob URL | null>
  frozenShown: null, // freeze index whose picture is shown
  renders: 0,
  rafId: 0,
  lastDrawn: [],
  exportJob: null,
  recovering: false,
  gallery: null,
};
const ctx = els.canvas.getContext("2d");

// Read-only handles for diagnostics and the browser tests (no token, no patient data).
window.endolink = Object.freeze({
  page: "replay",
  get replay() {
    const rect = layout().rect;
    return {
      recording: state.detail?.recording.id ?? null,
      segment: state.detail ? state.detail.media[state.segment]?.segment ?? null : null,
      t: state.detail ? recordingTime() : null,
      marks: state.lastDrawn.map((m) => ({ key: m.key, alpha: m.alpha })),
      frozen: state.frozenShown,
      renders: state.renders,
      picture: rect ? { ...rect } : null,
      mediaTokenExpiresAt: state.media?.expiresAt ?? null,
      exportJob: state.exportJob ? { ...state.exportJob } : null,
      talkback: els.talkback.getAttribute("src")
        ? { paused: els.talkback.paused, drift: els.talkback.currentTime - els.video.currentTime }
        : null,
    };
  },
});

main().catch((err) => {
  $("#loading").hidden = true;
  showFatal({ title: "The page failed to start.", detail: err?.message || String(err) });
});

async function main() {
  let loaded;
  try {
    loaded = await loadSession("replay", null);
  } catch (err) {
    $("#loading").hidden = true;
    showFatal(err);
    return;
  }
  state.token = loaded.token;
  state.session = loaded.session;
  $("#loading").hidden = true;
  const role = state.session.role;
  if (role !== "admin" && !state.session.may_replay) {
    showFatal({
      title: "Replay is not part of this link.",
      detail: `A ${roleLabel(role).toLowerCase()} link does not allow watching recordings. Ask the consultation coordinator for a link with the replay right.`,
    });
    return;
  }
  $("#app").hidden = false;
  $("#chips").hidden = false;
  setChip($("#role-chip"), roleLabel(role), "idle");
  els.consultationRow.hidden = !(role === "admin" && state.session.consultation === "*");
  bindPlayer();
  bindTimeline();
  bindControls();
  els.filters.addEventListener("submit", (event) => {
    event.preventDefault();
    loadList();
  });
  await loadList();
  const wanted = new URLSearchParams(location.search).get("recording");
  if (wanted && state.recordings.some((r) => r.id === wanted)) await openRecording(wanted);
}

// ------------------------------------------------------------------------------------ API

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${state.token}`, Accept: "application/json", ...extra };
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {
      ...options,
      headers: authHeaders(options.headers || {}),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new Error("the server could not be reached");
  }
  if (!response.ok) {
    const err = await readError(response);
    const error = new Error(`${err.reason} (HTTP ${err.status})`);
    error.status = err.status;
    throw error;
  }
  return response;
}

// ------------------------------------------------------------------------------------ list

async function loadList() {
  const query = new URLSearchParams();
  if (els.consultation.value.trim()) query.set("consultation", els.consultation.value.trim());
  if (els.since.value) query.set("since", els.since.value);
  if (els.until.value) query.set("until", els.until.value);
  let body;
  try {
    const search = query.toString();
    body = await (await api(`/api/recordings${search ? `?${search}` : ""}`)).json();
  } catch (err) {
    notices.show("list", `Could not list the recordings: ${err.message}`, "error");
    return;
  }
  notices.clear("list");
  state.recordings = Array.isArray(body.recordings) ? body.recordings : [];
  els.list.replaceChildren(...state.recordings.map(listItem));
  els.empty.hidden = state.recordings.length > 0;
  markCurrent();
}

function listItem(rec) {
  const li = document.createElement("li");
  li.dataset.id = rec.id;
  li.dataset.testid = "recording-item";
  li.setAttribute("data-testid", "recording-item");
  const button = document.createElement("button");
  button.type = "button";
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = "";
  const title = span("rec-title", rec.consultation?.title || rec.consultation?.id || "Consultation");
  const when = span("rec-meta", `${formatTime(rec.started_at)} · ${duration(rec.duration_s)}`);
  const people = span("rec-people", participantsText(rec.participants));
  const status = span("rec-meta rec-status", statusText(rec));
  status.dataset.status = rec.status;
  button.append(img, title, when, people, status);
  button.addEventListener("click", () => openRecording(rec.id));
  li.append(button);
  loadThumbnail(rec, img);
  return li;
}

function span(className, text) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

function statusText(rec) {
  const parts = [];
  if (rec.status === "recording") parts.push("recording now");
  else if (rec.status === "interrupted") parts.push("interrupted");
  if (rec.segments > 1) parts.push(`${rec.segments} parts`);
  return parts.join(" · ");
}

function participantsText(list) {
  const people = (list || []).map((p) => p.name || roleLabel(p.role));
  return people.length ? people.join(", ") : "";
}

async function loadThumbnail(rec, img) {
  try {
    const blob = await fetchSnapshotBlob(rec.thumbnail, state.token);
    img.src = URL.createObjectURL(blob);
    img.alt = `First picture of the recording of ${formatTime(rec.started_at)}`;
  } catch {
    img.alt = "No picture";
  }
}

function markCurrent() {
  const id = state.detail?.recording.id;
  for (const li of els.list.children) li.setAttribute("aria-current", li.dataset.id === id ? "true" : "false");
}

// ------------------------------------------------------------------------------------ recording

async function openRecording(id) {
  let detail;
  try {
    detail = await (await api(`/api/recordings/${encodeURIComponent(id)}`)).json();
  } catch (err) {
    notices.show("recording", `Could not open the recording: ${err.message}`, "error");
    return;
  }
  notices.clear("recording");
  resetPlayer();
  state.detail = detail;
  history.replaceState(history.state, "", `${location.pathname}?recording=${encodeURIComponent(id)}`);
  markCurrent();
  els.hint.hidden = true;
  els.player.hidden = false;
  const rec = detail.recording;
  els.title.textContent = rec.consultation?.title || "Recording";
  els.meta.textContent = `${formatTime(rec.started_at)} · ${duration(rec.duration_s)}${rec.status === "interrupted" ? " · interrupted" : ""}`;
  document.title = `EndoLink – Replay – ${els.title.textContent}`;
  renderDetails(detail);
  renderIntegrity(detail.integrity);
  renderSegments(detail);
  renderAuthors(detail);
  renderTimeline(detail);
  renderSnapshots(detail);
  try {
    await renewMediaToken();
  } catch (err) {
    notices.show("media", `The recording cannot be played: ${err.message}`, "error");
    return;
  }
  await loadSegment(0, 0);
}

function resetPlayer() {
  clearTimeout(state.mediaRenewTimer);
  for (const still of state.stills.values()) still.then((url) => url && URL.revokeObjectURL(url));
  state.stills.clear();
  state.frozenShown = null;
  state.hiddenAuthors.clear();
  state.exportJob = null;
  els.frozen.hidden = true;
  els.frozenBadge.hidden = true;
  els.exportProgress.hidden = true;
  els.exportState.textContent = "";
  els.exportLink.hidden = true;
  els.exportButton.disabled = false;
  els.video.pause();
  els.video.removeAttribute("src");
  els.video.load();
  els.talkback.pause();
  els.talkback.removeAttribute("src");
}

function describe(identity) {
  const p = (state.detail?.recording.participants || []).find((x) => x.identity === identity);
  if (p?.name) return p.name;
  return roleLabel(p?.role || String(identity || "").split("-")[0]);
}

function renderDetails(detail) {
  const rec = detail.recording;
  const manifest = detail.manifest || {};
  const rows = [
    ["Started", formatTime(rec.started_at)],
    ["Ended", rec.ended_at ? formatTime(rec.ended_at) : "—"],
    ["Duration", duration(rec.duration_s)],
    ["Status", rec.stop_reason ? `${rec.status} (${rec.stop_reason})` : rec.status],
    ["Video", [manifest.video?.codec, manifest.video?.width && `${manifest.video.width}×${manifest.video.height}`].filter(Boolean).join(" ")],
    ["Consent", manifest.consent ? `${manifest.consent.confirmed_by} (${manifest.consent.method})` : "—"],
  ];
  if (detail.gaps?.length) rows.push(["Gaps", detail.gaps.map((g) => `${g.duration_s.toFixed(1)} s`).join(", ")]);
  els.detailsList.replaceChildren();
  for (const [name, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value || "—";
    els.detailsList.append(dt, dd);
  }
  els.participants.replaceChildren();
  for (const p of rec.participants || []) {
    const li = document.createElement("li");
    li.dataset.role = p.role || "";
    const badge = span("role-badge", roleLabel(p.role));
    li.append(badge, span("who", p.name || p.identity));
    els.participants.append(li);
  }
  els.details.hidden = false;
}

function renderIntegrity(integrity) {
  els.integrity.replaceChildren();
  for (const file of integrity?.files || []) {
    const li = document.createElement("li");
    li.dataset.verdict = file.verdict;
    li.dataset.failed = String(["MODIFIED", "TRUNCATED", "MISSING"].includes(file.verdict));
    li.textContent = `${file.file}: ${file.verdict}${file.detail ? ` (${file.detail})` : ""}`;
    els.integrity.append(li);
  }
  els.integrityChip.hidden = false;
  if (integrity?.ok) {
    setChip(els.integrityChip, "files verified", "ok");
  } else {
    setChip(els.integrityChip, "files altered!", "bad");
    notices.show(
      "integrity",
      "This recording's files do not match the hashes taken when it was made: they were changed or damaged afterwards. See Integrity.",
      "error",
    );
  }
  if (integrity?.ok) notices.clear("integrity");
}

function renderSegments(detail) {
  els.segment.replaceChildren();
  detail.media.forEach((m, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = `Part ${m.segment} (${clock(m.offset_s)}–${clock(m.offset_s + m.duration_s)})`;
    els.segment.append(option);
  });
  els.segment.hidden = detail.media.length < 2;
}

// ------------------------------------------------------------------------------------ media

async function renewMediaToken() {
  const id = state.detail.recording.id;
  const body = await (await api(`/api/recordings/${encodeURIComponent(id)}/media-token`)).json();
  if (state.detail?.recording.id !== id) return;
  state.media = {
    token: body.token,
    expiresAt: body.expires_at,
    urls: new Map(body.media.map((m) => [m.segment, m.url])),
    talkback: new Map(body.media.map((m) => [m.segment, m.talkback])),
  };
  clearTimeout(state.mediaRenewTimer);
  const inMs = Math.max(5, body.expires_at - Date.now() / 1000 - TOKEN_RENEW_MARGIN_S) * 1000;
  state.mediaRenewTimer = setTimeout(() => {
    renewMediaToken()
      .then(() => {
        // A paused or idle player would reconnect with the old URL: point it at the new one now.
        if (els.video.paused) reloadSource();
      })
      .catch((err) => notices.show("media", `Could not renew access to the video: ${err.message}`, "warn"));
  }, inMs);
}

function mediaUrl(index) {
  const seq = state.detail.media[index]?.segment;
  return state.media?.urls.get(seq) || null;
}

function once(target, event, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      target.removeEventListener(event, done);
      reject(new Error(`no ${event} within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    target.addEventListener(event, done, { once: true });
  });
}

/** Shows segment `index` at file time `fileTime` (keeps playing if it was playing). */
async function loadSegment(index, fileTime, play = false) {
  const url = mediaUrl(index);
  if (!url) return;
  state.segment = index;
  els.segment.value = String(index);
  const ready = once(els.video, "loadedmetadata", 15000);
  els.video.src = url;
  const talkback = state.detail.media[index].talkback ? state.media.talkback.get(state.detail.media[index].segment) : null;
  if (talkback) els.talkback.src = talkback;
  else els.talkback.removeAttribute("src");
  els.talkbackRow.hidden = !state.detail.media.some((m) => m.talkback);
  try {
    await ready;
  } catch (err) {
    notices.show("media", `The video did not load: ${err.message}`, "error");
    return;
  }
  if (fileTime > 0) await seekFile(fileTime);
  if (play) els.video.play().catch(() => {});
  invalidate();
}

async function seekFile(fileTime) {
  const video = els.video;
  const target = Math.max(0, Math.min(fileTime, (Number.isFinite(video.duration) ? video.duration : fileTime) - 0.001));
  if (Math.abs(video.currentTime - target) < 0.001) return;
  const seeked = once(video, "seeked", 15000);
  video.currentTime = target;
  await seeked.catch(() => {});
}

/** The same source at the same position with the current media token. */
async function reloadSource() {
  if (!state.detail) return;
  const t = els.video.currentTime;
  const playing = !els.video.paused;
  await loadSegment(state.segment, t, playing);
}

/** Jump to recording time `t` (switching segment if needed). */
async function seek(t) {
  const media = state.detail?.media;
  if (!media?.length) return;
  let index = media.findIndex((m) => t < m.offset_s + m.duration_s);
  if (index < 0) index = media.length - 1;
  const fileTime = Math.max(0, t - media[index].offset_s);
  if (state.media && state.media.expiresAt - Date.now() / 1000 < TOKEN_RENEW_MARGIN_S) await renewMediaToken();
  if (index !== state.segment || !els.video.currentSrc || els.video.currentSrc !== new URL(mediaUrl(index), location.href).href) {
    await loadSegment(index, fileTime, !els.video.paused);
  } else {
    await seekFile(fileTime);
  }
  invalidate();
}

function recordingTime() {
  const m = state.detail?.media[state.segment];
  return (m?.offset_s || 0) + (els.video.currentTime || 0);
}

function totalSpan(detail = state.detail) {
  const media = detail?.media || [];
  return Math.max(0.001, ...media.map((m) => m.offset_s + m.duration_s), detail?.recording.duration_s || 0);
}

function bindPlayer() {
  const video = els.video;
  const loop = () => {
    state.rafId = 0;
    render();
    if (!video.paused && !video.ended) state.rafId = requestAnimationFrame(loop);
  };
  video.addEventListener("play", () => {
    if (!state.rafId) state.rafId = requestAnimationFrame(loop);
  });
  for (const event of ["seeked", "seeking", "pause", "loadeddata", "timeupdate", "ratechange"]) {
    video.addEventListener(event, () => invalidate());
  }
  video.addEventListener("ended", () => {
    // The next part of a recording with gaps plays on.
    const next = state.segment + 1;
    if (state.detail && next < state.detail.media.length) loadSegment(next, 0, true);
  });
  video.addEventListener("error", async () => {
    // Most likely the media token expired while the browser had to reconnect: reload once.
    if (!state.detail || state.recovering) return;
    state.recovering = true;
    try {
      await renewMediaToken();
      await reloadSource();
      notices.clear("media");
    } catch (err) {
      notices.show("media", `The video stopped: ${err.message}`, "error");
    } finally {
      setTimeout(() => (state.recovering = false), 3000);
    }
  });
  els.frozen.addEventListener("load", () => invalidate());
  new ResizeObserver(() => invalidate()).observe(els.frame);
  bindTalkback();
}

/** Keeps the talk-back <audio> on the video's clock. */
function bindTalkback() {
  const video = els.video;
  const audio = els.talkback;
  const active = () => Boolean(audio.getAttribute("src")) && els.talkbackToggle.checked;
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
  els.talkbackToggle.addEventListener("change", follow);
  setInterval(() => {
    if (!video.paused) sync(false);
  }, 1000);
}

// ------------------------------------------------------------------------------------ overlay

function invalidate() {
  if (!state.rafId) state.rafId = requestAnimationFrame(() => {
    state.rafId = 0;
    render();
    if (!els.video.paused && !els.video.ended) invalidate();
  });
}

function layout() {
  const box = els.canvas.getBoundingClientRect();
  let rect = null;
  if (!els.frozen.hidden && els.frozen.naturalWidth > 0) rect = pictureRect(els.frozen, els.canvas);
  else rect = pictureRect(els.video, els.canvas);
  return { box, rect };
}

/** The state of `mark` at `t`: {mark (drawable JSON), alpha} or null. */
function markAt(mark, t) {
  if (t < mark.start_t || (mark.end_t != null && t >= mark.end_t)) return null;
  const versions = mark.versions;
  let lo = 0;
  let hi = versions.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (versions[mid][0] <= t) lo = mid;
    else hi = mid - 1;
  }
  const [, shapeIndex, count] = versions[lo];
  const shape = mark.shapes[shapeIndex];
  let alpha = 1;
  if (mark.end === "fade" && mark.end_t != null) {
    const span = Math.min(FADE_OUT_S, (mark.fade_s || 2 * FADE_OUT_S) / 2);
    alpha = Math.max(0, Math.min(1, (mark.end_t - t) / span));
  }
  return { mark: { ...shape, points: shape.points.slice(0, count) }, alpha };
}

function freezeAt(t) {
  const freezes = state.detail?.timeline.freezes || [];
  for (let i = 0; i < freezes.length; i += 1) {
    const f = freezes[i];
    if (t >= f.start_t && (f.end_t == null || t < f.end_t)) return i;
  }
  return -1;
}

function gapAt(t) {
  const media = state.detail?.media || [];
  const m = media[state.segment];
  return m && els.video.ended && t >= m.offset_s + m.duration_s - 0.05 && state.segment + 1 < media.length;
}

function render() {
  const detail = state.detail;
  const { box, rect } = layout();
  const { width, height } = backingSize(box.width, box.height, window.devicePixelRatio || 1);
  if (els.canvas.width !== width || els.canvas.height !== height) {
    els.canvas.width = width;
    els.canvas.height = height;
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, width, height);
  state.renders += 1;
  if (!detail) return;
  const t = recordingTime();
  updateFreeze(t);
  updatePlayhead(t);
  els.gapBadge.hidden = !gapAt(t);
  const drawn = [];
  const shownRect = layout().rect;
  if (shownRect && state.showMarks && box.width >= 1) {
    ctx.setTransform(width / box.width, 0, 0, height / box.height, 0, 0);
    ctx.save();
    ctx.beginPath();
    ctx.rect(shownRect.x, shownRect.y, shownRect.width, shownRect.height);
    ctx.clip();
    for (const mark of detail.timeline.marks) {
      if (state.hiddenAuthors.has(mark.author)) continue;
      const at = markAt(mark, t);
      if (!at || at.alpha <= 0) continue;
      drawMark(ctx, at.mark, shownRect, at.alpha);
      drawn.push({ key: mark.key, alpha: at.alpha });
    }
    ctx.restore();
  }
  state.lastDrawn = drawn;
  els.canvas.dataset.marks = String(drawn.length);
  els.canvas.dataset.t = t.toFixed(3);
  els.canvas.dataset.ready = rect ? "true" : "false";
}

function updateFreeze(t) {
  const index = freezeAt(t);
  if (index < 0) {
    if (state.frozenShown != null) {
      state.frozenShown = null;
      els.frozen.hidden = true;
      els.frozen.removeAttribute("src");
      els.frozenBadge.hidden = true;
      els.frame.classList.remove("frozen");
    }
    return;
  }
  if (state.frozenShown === index) return;
  state.frozenShown = index;
  const freeze = state.detail.timeline.freezes[index];
  els.frame.classList.add("frozen");
  els.frozenBadge.hidden = false;
  els.frozenBadge.textContent = `FROZEN by ${describe(freeze.by)}`;
  els.frozenBadge.dataset.state = "loading";
  stillFor(index).then((url) => {
    if (state.frozenShown !== index) return;
    if (url) {
      els.frozen.src = url;
      els.frozen.hidden = false;
      els.frozenBadge.dataset.state = "shown";
    } else {
      els.frozenBadge.dataset.state = "no-image";
    }
    invalidate();
  });
}

/** The frozen picture of freeze `index`: its snapshot, else the recording's own frame there. */
function stillFor(index) {
  if (!state.stills.has(index)) {
    const freeze = state.detail.timeline.freezes[index];
    const cid = state.detail.recording.consultation.id;
    const work = freeze.snapshot_id
      ? fetchSnapshotBlob(`/api/consultations/${encodeURIComponent(cid)}/snapshots/${freeze.snapshot_id}.png`, state.token)
          .then((blob) => URL.createObjectURL(blob))
          .catch(() => captureStill(freeze.start_t))
      : captureStill(freeze.start_t);
    state.stills.set(index, work);
  }
  return state.stills.get(index);
}

/** Grabs the frame at recording time `t` with a hidden second player (the visible one plays on). */
async function captureStill(t) {
  const media = state.detail.media;
  let index = media.findIndex((m) => t < m.offset_s + m.duration_s);
  if (index < 0) index = media.length - 1;
  const url = mediaUrl(index);
  if (!url) return null;
  const probe = document.createElement("video");
  probe.muted = true;
  probe.preload = "auto";
  try {
    const meta = once(probe, "loadeddata", STILL_TIMEOUT_MS);
    probe.src = url;
    await meta;
    const seeked = once(probe, "seeked", STILL_TIMEOUT_MS);
    probe.currentTime = Math.max(0, t - media[index].offset_s);
    await seeked;
    const canvas = document.createElement("canvas");
    canvas.width = probe.videoWidth;
    canvas.height = probe.videoHeight;
    canvas.getContext("2d").drawImage(probe, 0, 0);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    return blob ? URL.createObjectURL(blob) : null;
  } catch {
    return null;
  } finally {
    probe.removeAttribute("src");
    probe.load();
  }
}

// ------------------------------------------------------------------------------------ timeline

function renderTimeline(detail) {
  const track = els.track;
  track.replaceChildren(els.playhead);
  const total = totalSpan(detail);
  const pct = (t) => `${(Math.max(0, Math.min(total, t)) / total) * 100}%`;
  for (const m of detail.media) {
    const block = document.createElement("div");
    block.className = "timeline-segment";
    block.style.left = pct(m.offset_s);
    block.style.width = `${(m.duration_s / total) * 100}%`;
    track.append(block);
  }
  const markers = [];
  for (const mark of detail.timeline.marks) {
    markers.push({ kind: "annotation", t: Math.max(0, mark.start_t), author: mark.author, label: `${mark.tool} by ${describe(mark.author)}` });
  }
  for (const s of detail.snapshots) markers.push({ kind: "snapshot", t: s.t, author: s.by, label: `snapshot by ${describe(s.by)}` });
  detail.timeline.freezes.forEach((f) => {
    markers.push({ kind: "freeze", t: Math.max(0, f.start_t), author: f.by, label: `frozen by ${describe(f.by)}` });
    const bar = document.createElement("div");
    bar.className = "timeline-freeze";
    bar.style.left = pct(f.start_t);
    bar.style.width = `${((Math.min(total, f.end_t ?? total) - Math.max(0, f.start_t)) / total) * 100}%`;
    track.append(bar);
  });
  markers.sort((a, b) => a.t - b.t);
  for (const m of markers) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "timeline-marker";
    button.dataset.kind = m.kind;
    button.dataset.t = m.t.toFixed(3);
    button.dataset.author = m.author || "";
    button.setAttribute("data-testid", "timeline-marker");
    button.title = `${clock(m.t)} ${m.label}`;
    button.setAttribute("aria-label", `Jump to ${clock(m.t)}: ${m.label}`);
    button.style.left = pct(m.t);
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      seek(m.t);
    });
    track.append(button);
  }
  track.setAttribute("aria-valuemax", total.toFixed(1));
  els.total.textContent = clock(total);
  updateMarkerVisibility();
}

function bindTimeline() {
  els.track.addEventListener("click", (event) => {
    if (!state.detail) return;
    const box = els.track.getBoundingClientRect();
    seek(((event.clientX - box.left) / box.width) * totalSpan());
  });
  els.track.addEventListener("keydown", (event) => {
    if (!state.detail) return;
    const step = event.shiftKey ? 10 : 1;
    if (event.key === "ArrowRight") seek(recordingTime() + step);
    else if (event.key === "ArrowLeft") seek(Math.max(0, recordingTime() - step));
    else return;
    event.preventDefault();
  });
}

function updatePlayhead(t) {
  const total = totalSpan();
  els.playhead.style.left = `${(Math.max(0, Math.min(total, t)) / total) * 100}%`;
  els.track.setAttribute("aria-valuenow", t.toFixed(1));
  els.time.textContent = clock(t);
}

// ------------------------------------------------------------------------------------ filters

function renderAuthors(detail) {
  const authors = [...new Set(detail.timeline.marks.map((m) => m.author))];
  els.authors.replaceChildren();
  const legend = document.createElement("legend");
  legend.textContent = "Marks by";
  els.authors.append(legend);
  for (const author of authors) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.value = author;
    box.setAttribute("data-testid", "author-toggle");
    box.addEventListener("change", () => {
      if (box.checked) state.hiddenAuthors.delete(author);
      else state.hiddenAuthors.add(author);
      updateMarkerVisibility();
      invalidate();
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = detail.timeline.marks.find((m) => m.author === author)?.color || "#fff";
    label.append(box, swatch, document.createTextNode(describe(author)));
    els.authors.append(label);
  }
  els.authors.hidden = authors.length === 0;
}

function updateMarkerVisibility() {
  for (const marker of els.track.querySelectorAll(".timeline-marker[data-kind='annotation']")) {
    marker.dataset.hidden = String(!state.showMarks || state.hiddenAuthors.has(marker.dataset.author));
  }
}

function bindControls() {
  els.showMarks.addEventListener("change", () => {
    state.showMarks = els.showMarks.checked;
    updateMarkerVisibility();
    invalidate();
  });
  els.segment.addEventListener("change", () => {
    const index = Number(els.segment.value);
    if (state.detail?.media[index]) seek(state.detail.media[index].offset_s);
  });
  els.download.addEventListener("click", () => downloadOriginal());
  els.exportButton.addEventListener("click", () => startExport());
  els.exportLink.addEventListener("click", (event) => {
    event.preventDefault();
    if (state.exportJob?.url) saveFrom(state.exportJob.url, `endolink-${state.detail.recording.id}-annotated.mp4`, els.exportLink);
  });
}

// ------------------------------------------------------------------------------------ snapshots

function renderSnapshots(detail) {
  const host = els.snapshots;
  host.querySelector("[data-snapshot-list]").replaceChildren();
  host.querySelector("[data-snapshot-empty]").hidden = false;
  state.gallery = new SnapshotGallery({
    host,
    cid: detail.recording.consultation.id,
    token: state.token,
    describe,
    notices,
  });
  const frozenIds = new Set(detail.timeline.freezes.map((f) => f.snapshot_id).filter(Boolean));
  for (const s of detail.snapshots) {
    state.gallery.add(s, null, { frozen: frozenIds.has(s.id) });
    const item = state.gallery.items.get(s.id);
    if (item) {
      item.li.title = `At ${clock(s.t)}: click to jump there`;
      item.img.addEventListener("click", () => seek(s.t));
      item.meta.addEventListener("click", () => seek(s.t));
    }
  }
  host.hidden = false;
}

// ------------------------------------------------------------------------------------ files

async function saveFrom(url, fallbackName, control) {
  const original = control.textContent;
  control.setAttribute("aria-busy", "true");
  control.textContent = "Downloading…";
  try {
    const response = await api(url, { headers: { Accept: "*/*" } });
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
    notices.show("download", `Download failed: ${err.message}`, "error");
  } finally {
    control.removeAttribute("aria-busy");
    control.textContent = original;
  }
}

function downloadOriginal() {
  if (!state.detail) return;
  const rec = state.detail.recording;
  const ext = rec.segments > 1 ? "zip" : rec.container;
  saveFrom(state.detail.links.download, `endolink-${rec.id}.${ext}`, els.download);
}

async function startExport() {
  if (!state.detail) return;
  const id = state.detail.recording.id;
  els.exportButton.disabled = true;
  els.exportLink.hidden = true;
  els.exportProgress.hidden = false;
  els.exportProgress.value = 0;
  els.exportState.textContent = "Starting the export…";
  let job;
  try {
    job = (await (await api(state.detail.links.exports, { method: "POST" })).json()).job;
  } catch (err) {
    els.exportState.textContent = `Export refused: ${err.message}`;
    els.exportButton.disabled = false;
    els.exportProgress.hidden = true;
    return;
  }
  while (state.detail?.recording.id === id) {
    state.exportJob = job;
    els.exportProgress.value = job.progress || 0;
    els.exportProgress.setAttribute("aria-valuenow", String(job.progress || 0));
    if (job.state === "done") {
      els.exportState.textContent = "Export ready.";
      els.exportLink.hidden = false;
      els.exportButton.disabled = false;
      return;
    }
    if (job.state === "failed") {
      els.exportState.textContent = `Export failed: ${job.error || "unknown error"}`;
      els.exportButton.disabled = false;
      return;
    }
    els.exportState.textContent = job.state === "queued" ? "Waiting for another export…" : `Exporting… ${Math.round(job.progress || 0)} %`;
    await new Promise((r) => setTimeout(r, EXPORT_POLL_MS));
    try {
      job = (await (await api(job.status_url)).json()).job;
    } catch (err) {
      els.exportState.textContent = `Lost track of the export: ${err.message}`;
      els.exportButton.disabled = false;
      return;
    }
  }
}

// ------------------------------------------------------------------------------------ formats

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function duration(seconds) {
  if (!seconds) return "0 s";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  return clock(seconds);
}
