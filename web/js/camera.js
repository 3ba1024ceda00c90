// The clinic's camera: the endoscope / camera stream shown in the preview, the camera and
// microphone pickers, and readable explanations when the browser or the device refuses.

import { msg, setText } from "./i18n.js";
import { $ } from "./ui.js";

const VIDEO_CONSTRAINTS = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
const AUDIO_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

function describeMediaError(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
      return msg("camera.blocked");
    case "NotFoundError":
    case "DevicesNotFoundError":
      return msg("camera.none");
    case "NotReadableError":
    case "TrackStartError":
      return msg("camera.busy");
    case "OverconstrainedError":
      return msg("camera.gone");
    case "SecurityError":
    case "TypeError":
      return msg("camera.insecure");
    default:
      return msg("camera.failed", { detail: err?.name || "" });
  }
}

async function getStream(videoId, audioId) {
  const video = { ...VIDEO_CONSTRAINTS, ...(videoId ? { deviceId: { exact: videoId } } : {}) };
  const audio = audioId === "none" ? false : { ...AUDIO_CONSTRAINTS, ...(audioId ? { deviceId: { exact: audioId } } : {}) };
  if (!navigator.mediaDevices?.getUserMedia) throw Object.assign(new Error("no mediaDevices"), { name: "SecurityError" });
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ video, audio }), audioFailed: null };
  } catch (err) {
    if (!audio || err.name === "NotAllowedError" || err.name === "SecurityError") throw err;
    // Maybe only the microphone is missing or busy: the video matters most.
    const stream = await navigator.mediaDevices.getUserMedia({ video, audio: false });
    return { stream, audioFailed: err };
  }
}

function stopTracks(stream) {
  for (const track of stream.getTracks()) track.stop();
}

function fillSelect(select, devices, currentId, fallbackLabel, allowNone = false) {
  select.replaceChildren();
  devices.forEach((d, i) => {
    const option = document.createElement("option");
    option.value = d.deviceId;
    setText(option, d.label || msg(fallbackLabel, { n: i + 1 }));
    select.append(option);
  });
  if (allowNone) {
    const none = document.createElement("option");
    none.value = "none";
    setText(none, msg("devices.noMic"));
    select.append(none);
  }
  if (currentId && devices.some((d) => d.deviceId === currentId)) select.value = currentId;
  else if (allowNone && !currentId) select.value = "none";
  select.disabled = devices.length === 0 && !allowNone;
}

export class Camera {
  /**
   * @param {object} o
   * @param {import("./ui.js").Notices} o.notices
   * @param {(stream: MediaStream) => Promise<void>} o.onStream  a new stream is in the preview
   * @param {() => void} o.onChange  the stream's state changed (the page updates its buttons)
   */
  constructor({ notices, onStream, onChange }) {
    Object.assign(this, { notices, onStream, onChange });
    this.stream = null;
    this.opening = false;
    this.els = {
      preview: $("#local-preview"),
      overlay: $("#preview-overlay"),
      overlayText: $("#preview-overlay-text"),
      retry: $("#camera-retry"),
      camera: $("#camera-select"),
      mic: $("#mic-select"),
      info: $("#capture-info"),
    };
    const reopen = () => this.open({ videoId: this.els.camera.value || null, audioId: this.els.mic.value || null });
    this.els.camera.addEventListener("change", reopen);
    this.els.mic.addEventListener("change", reopen);
    this.els.retry.addEventListener("click", () => this.open());
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this._refreshDevices());
  }

  /** Whether the preview has a live video track. */
  get hasVideo() {
    return !!this.stream?.getVideoTracks().some((t) => t.readyState === "live");
  }

  async open({ videoId = null, audioId = null } = {}) {
    if (this.opening) return;
    this.opening = true;
    this.els.retry.hidden = true;
    this._showOverlay(msg("camera.opening"));
    let result;
    try {
      try {
        result = await getStream(videoId, audioId);
      } catch (err) {
        if ((err.name === "NotReadableError" || err.name === "TrackStartError") && this.stream) {
          // Some capture cards allow one reader only: release the current one and retry.
          stopTracks(this.stream);
          result = await getStream(videoId, audioId);
        } else {
          throw err;
        }
      }
    } catch (err) {
      this.opening = false;
      this._fail(describeMediaError(err));
      this.onChange();
      return;
    }
    this.opening = false;
    this.notices.clear("camera");
    if (result.audioFailed) {
      this.notices.show("mic", msg("camera.micUnavailable"), "warn");
    } else {
      this.notices.clear("mic");
    }
    const previous = this.stream;
    this.stream = result.stream;
    const videoTrack = result.stream.getVideoTracks()[0];
    if (videoTrack) {
      videoTrack.contentHint = "detail";
      videoTrack.addEventListener("ended", (event) => this._onVideoEnded(event));
    }
    this.els.preview.srcObject = result.stream;
    this.els.preview.play().catch(() => {});
    this.els.overlay.hidden = true;
    await this.onStream(result.stream);
    if (previous && previous !== result.stream) stopTracks(previous);
    this._describeCapture(videoTrack);
    await this._refreshDevices();
    this.onChange();
  }

  _fail(text) {
    this._showOverlay(text);
    this.els.retry.hidden = false;
    this.notices.show("camera", text, "error");
  }

  _onVideoEnded(event) {
    if (event.target !== this.stream?.getVideoTracks()[0]) return;
    this._fail(msg("camera.stopped"));
  }

  _showOverlay(text) {
    this.els.overlay.hidden = false;
    setText(this.els.overlayText, text);
  }

  _describeCapture(track) {
    const info = this.els.info;
    if (!track) {
      setText(info, "");
      return;
    }
    const s = track.getSettings();
    if (!s.width || !s.height) {
      setText(info, "");
      return;
    }
    const size = { width: s.width, height: s.height, fps: { number: Math.round(s.frameRate || 0) } };
    setText(info, msg(s.width < 1280 ? "camera.capturingLow" : "camera.capturing", size));
  }

  async _refreshDevices() {
    let devices = [];
    try {
      devices = await navigator.mediaDevices.enumerateDevices();
    } catch {
      return;
    }
    const currentVideo = this.stream?.getVideoTracks()[0]?.getSettings().deviceId;
    const currentAudio = this.stream?.getAudioTracks()[0]?.getSettings().deviceId;
    fillSelect(this.els.camera, devices.filter((d) => d.kind === "videoinput"), currentVideo, "devices.cameraN");
    fillSelect(this.els.mic, devices.filter((d) => d.kind === "audioinput"), currentAudio, "devices.micN", true);
  }
}
