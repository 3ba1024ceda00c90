// What the live pages (clinic and surgeon) share around a consultation: its details, the room
// with the panels both show (room chip, presence, remote stats, chat, annotations, recording
// chip) and the media connection state.

import { AnnotationLayer } from "./annotations.js";
import { apiFetch, refusalText } from "./api.js";
import { ChatPanel } from "./chat.js";
import { hasText, msg, setText } from "./i18n.js";
import { bindOutOfBodyNotice } from "./privacy.js";
import { bindRecordingIndicator } from "./recording.js";
import { Room } from "./room.js";
import { SessionError } from "./session.js";
import { RemoteStatsBoard, renderStats, wireStats } from "./stats.js";
import { $, bindRoomChip, connectionTone, describer, keepInViewOnLandscapePhone, renderPresence, roleLabel, setChip } from "./ui.js";

/**
 * GET /api/consultations/{cid}; shows its title. Resolves to the consultation, or null when it
 * could not be loaded (a notice says so). With `refusedEndsPage`, a refused link (401/403/404)
 * rejects with a SessionError for the error panel instead.
 */
export async function loadConsultation(session, token, notices, { refusedEndsPage = false } = {}) {
  let consultation;
  try {
    const response = await apiFetch(`/api/consultations/${encodeURIComponent(session.consultation)}`, { token });
    consultation = await response.json();
  } catch (err) {
    if (refusedEndsPage && [401, 403, 404].includes(err.status)) {
      throw new SessionError(
        err.status === 401 ? "expired" : "forbidden",
        msg(err.status === 401 ? "error.link-expired" : "session.unavailable"),
        msg("session.askCoordinator"),
      );
    }
    notices.show("consultation", msg("consultation.notLoaded", { why: refusalText(err) }), "warn");
    return null;
  }
  $('[data-testid="consultation-title"]').textContent = consultation.title || "";
  if (consultation.title) {
    setText(document.querySelector("title"), msg("title.consultation", { role: roleLabel(session.role), title: consultation.title }));
  }
  return consultation;
}

/**
 * The room of a live page with the panels every live page shows. The page adds its own
 * listeners, then calls `room.connect()`; `onPresence(people, {reconnecting})` follows the
 * presence list (while the room reconnects, who is there is not known). `notices` is the page's
 * list; `pictureNotes` the one over the picture (the camera outside the body is said there).
 *
 * @returns {{room: Room, annotations: AnnotationLayer}}
 */
export function joinRoom({ page, session, token, notices, pictureNotes, video, galleryHost = null, onPresence = () => {} }) {
  const room = new Room(session.consultation, token);
  let people = [];
  const describe = describer(() => people);
  const roomChip = $("#room-chip");
  bindRoomChip(room, roomChip, notices);
  const board = new RemoteStatsBoard($("#remote-stats"), describe);
  let known = [];
  const present = (participants, reconnecting = false) => {
    known = participants;
    people = renderPresence($("#presence"), participants, room.you, { reconnecting });
    onPresence(people, { reconnecting });
  };
  room.addEventListener("state", (event) => {
    if (event.detail.state === "reconnecting") present(known, true);
  });
  room.addEventListener("welcome", (event) => {
    notices.clear("restarting");
    present(event.detail.participants);
  });
  // Sent just before a planned restart closes the socket: say so instead of "connection lost".
  room.addEventListener("restarting", () => notices.show("restarting", msg("room.serverRestarting"), "info"));
  room.addEventListener("presence", (event) => {
    present(event.detail.participants);
    board.retain(new Set(people.map((p) => p.identity)));
  });
  room.addEventListener("stats", (event) => {
    if (event.detail.from !== room.you) board.update(event.detail);
  });
  room.addEventListener("fatal", (event) => {
    const closedHere = { 4409: "room.tooManyDevices", 4410: "room.withdrawn" }[event.detail.code];
    if (closedHere) {
      notices.show("room", msg(closedHere), "error");
      setChip(roomChip, msg("room.closedHere"), "idle", "closed");
      return;
    }
    notices.show("room", msg("room.fatal", { why: roomRefusal(event.detail) }), "error");
    setChip(roomChip, msg("room.refused"), "bad", "refused");
  });
  new ChatPanel({
    panel: $("#chat-panel"),
    form: $("#chat-form"),
    input: $("#chat-input"),
    log: $("#chat-log"),
    toggle: $("#chat-toggle"),
    notice: $("#chat-notice"),
    phrases: $("#chat-phrases"),
    room,
    describe,
  });
  const annotations = new AnnotationLayer({
    page,
    frame: $("#video-frame"),
    video,
    room,
    session,
    token,
    notices,
    toolbarHost: $("#annotation-tools"),
    galleryHost,
    describe,
  });
  bindRecordingIndicator(room, $("#recording-chip"), { cid: session.consultation, token });
  bindOutOfBodyNotice(room, pictureNotes);
  keepInViewOnLandscapePhone($("#video-frame"));
  return { room, annotations };
}

/** The `stats` option of the endoscope's Publisher / FeedPlayer: shown here, shared with the room. */
export function endoscopeStats(room) {
  return {
    kind: "video",
    onStats: (stats) => {
      renderStats($("#stats"), stats);
      room.sendStats(wireStats(stats, "endoscope"));
    },
  };
}

/** The media chip: the peer connection's state. */
/** The media chip: `state` (an RTCPeerConnection state, "stopped" or "refused") in plain words for
 * the `page` ("clinic" | "surgeon"); `data-state` keeps the state itself. */
export function showConnectionState(page, state, tone = connectionTone(state)) {
  const node = $('[data-testid="connection-state"]');
  setText(node, msg(`media.${page}.${state}`));
  node.dataset.state = state;
  $("#media-chip").dataset.tone = tone;
}

/** Why the server closed the room (a WebSocket close code), in the page's words. */
function roomRefusal({ code, reason }) {
  const key = `room.close.${code}`;
  return hasText(key) ? msg(key) : msg("error.other", { reason: reason || code || "" });
}
