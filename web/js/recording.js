// The "recording" indicator of the live pages: a chip that says whether this session is being
// recorded, driven by the room's `recording` messages (recorder/recordings.py:
// {state: "recording"|"paused"|"stopped"|"interrupted", recording_id, reason, segment}) and, for
// a page that joins later, by GET /api/consultations/{cid}/recording (or `welcome.recording`).

import { apiFetch } from "./api.js";
import { setChip } from "./ui.js";

const REASONS = {
  "low-disk": "disk full",
  disabled: "switched off",
  "write-error": "disk error",
  "feed-offline": "stream ended",
  shutdown: "server stopped",
};

/** Shows `message` (a `recording` message or the REST answer) on `chip`. */
export function showRecordingState(chip, message) {
  if (!chip || !message || typeof message.state !== "string") return;
  const { state, reason } = message;
  chip.dataset.state = state;
  chip.dataset.recordingId = message.recording_id || "";
  if (state === "recording") {
    setChip(chip, "REC", "live");
    chip.title = "This session is being recorded";
    chip.hidden = false;
  } else if (state === "paused") {
    setChip(chip, "REC paused", "warn");
    chip.title = "Recording waits for the endoscope stream to come back";
    chip.hidden = false;
  } else if (state === "interrupted" || (state === "stopped" && (reason === "low-disk" || reason === "write-error"))) {
    setChip(chip, `recording stopped: ${REASONS[reason] || reason || "error"}`, "bad");
    chip.title = "The recording stopped; what was recorded so far is kept";
    chip.hidden = false;
  } else {
    setChip(chip, "not recording", "idle");
    chip.title = reason ? `Recording ended (${REASONS[reason] || reason})` : "Nothing is being recorded";
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
  setChip(chip, "Recording status unknown — reconnecting", "warn");
  chip.title = "The server cannot be reached: whether it still records is not known";
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
