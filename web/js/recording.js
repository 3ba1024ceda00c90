// The "recording" indicator of the live pages: a chip that says whether this session is being
// recorded, driven by the room's `recording` messages (recorder/recordings.py:
// {state: "recording"|"paused"|"stopped"|"interrupted", recording_id, reason, segment}) and, for
// a page that joins later, by GET /api/consultations/{cid}/recording (or `welcome.recording`).

import { apiFetch } from "./api.js";
import { hasText, msg, setAttr } from "./i18n.js";
import { setChip } from "./ui.js";

/** Why a recording stopped, in plain words (catalogue keys replay.stop.<reason>). */
function reasonText(reason) {
  return msg(hasText(`replay.stop.${reason}`) ? `replay.stop.${reason}` : "recording.reason.other");
}

/** Shows `message` (a `recording` message or the REST answer) on `chip`. */
export function showRecordingState(chip, message) {
  if (!chip || !message || typeof message.state !== "string") return;
  const { state, reason } = message;
  chip.dataset.state = state;
  chip.dataset.recordingId = message.recording_id || "";
  if (state === "recording") {
    setChip(chip, msg("recording.on"), "live");
    setAttr(chip, "title", msg("recording.onTitle"));
    chip.hidden = false;
  } else if (state === "paused") {
    setChip(chip, msg("recording.paused"), "warn");
    setAttr(chip, "title", msg("recording.pausedTitle"));
    chip.hidden = false;
  } else if (state === "interrupted" || (state === "stopped" && (reason === "low-disk" || reason === "write-error"))) {
    setChip(chip, msg("recording.failed", { why: reasonText(reason) }), "bad");
    setAttr(chip, "title", msg("recording.failedTitle"));
    chip.hidden = false;
  } else {
    setChip(chip, msg("recording.off"), "idle");
    setAttr(chip, "title", reason ? msg("recording.endedTitle", { why: reasonText(reason) }) : msg("recording.offTitle"));
    chip.hidden = true;
  }
}

/**
 * While the room is down the server cannot tell us: a chip that showed a recording says the state
 * is unknown instead of a REC that may be false (the `welcome` of the next connection has it).
 */
export function showRecordingUnknown(chip) {
  if (!chip || chip.hidden) return;
  chip.dataset.state = "unknown";
  setChip(chip, msg("recording.unknown"), "warn");
  setAttr(chip, "title", msg("recording.unknownTitle"));
}

/** Binds `chip` to the room's recording messages and loads the current state once. */
export function bindRecordingIndicator(room, chip, { cid, token }) {
  if (!chip) return;
  room.addEventListener("recording", (event) => showRecordingState(chip, event.detail));
  room.addEventListener("state", (event) => {
    if (event.detail.state === "reconnecting") showRecordingUnknown(chip);
  });
  room.addEventListener("welcome", (event) => {
    if (event.detail?.recording) showRecordingState(chip, event.detail.recording);
  });
  apiFetch(`/api/consultations/${encodeURIComponent(cid)}/recording`, { token })
    .then((response) => response.json())
    .then((body) => {
      // A room message may have arrived meanwhile: it is newer than this answer.
      if (!chip.dataset.state) showRecordingState(chip, body);
    })
    .catch(() => {
      /* the room's messages still drive the chip */
    });
}
