// The clinic's pre-call check: camera picture, a live microphone level, a speaker test the user
// confirms, and the network to the server (netcheck.js), each in plain words, then one result
// line. Advice, never a gate: the stream can start whatever the check says (the medical staff
// decide). A folded panel at the top of the sidebar (the chat keeps its place): opening it runs
// the check, "Run the check again" repeats it, starting the stream folds it away. Every text is
// kept as a key and its parameters, so a language switch rewrites it.

import { formatNumber, t } from "./i18n.js";
import { measureNetwork } from "./netcheck.js";
import { $, setChip } from "./ui.js";

const METER_INTERVAL_MS = 50;
const SILENCE_WINDOW_MS = 4000; // "no sound for a few seconds"
const SOUND_RMS = 0.003; // about -50 dBFS: above a quiet room's noise after noise suppression
const METER_FLOOR_DB = -60; // the meter's empty end
const CHIME = [
  { hz: 659.25, at: 0, for: 0.25 }, // E5
  { hz: 880, at: 0.22, for: 0.45 }, // A5
];
const TONE = { ok: "ok", warn: "warn", bad: "bad", pending: "idle" };
const NETWORK_LEVEL = { good: "ok", fair: "warn", poor: "bad" };

/** Mbit/s in the page's language, with more digits below 1. */
function rate(kbps) {
  const mbps = kbps / 1000;
  return t("precall.mbps", { value: formatNumber(mbps, { maximumFractionDigits: mbps < 1 ? 2 : 1 }) });
}

export class PrecallCheck {
  /**
   * @param {object} o
   * @param {string} o.cid
   * @param {string} o.token
   * @param {() => MediaStream | null} o.stream  the camera's current stream (video and microphone)
   */
  constructor({ cid, token, stream }) {
    Object.assign(this, { cid, token, stream });
    this.els = {
      panel: $("#precall"),
      chip: $("#precall-chip"),
      run: $("#precall-run"),
      result: $("#precall-result"),
      camera: $("#precall-camera"),
      mic: $("#precall-mic"),
      meter: $("#precall-mic-meter"),
      bar: $("#precall-mic-bar"),
      play: $("#precall-play"),
      heard: $("#precall-heard"),
      notHeard: $("#precall-not-heard"),
      speaker: $("#precall-speaker"),
      network: $("#precall-network"),
      rtt: $("#precall-rtt"),
      download: $("#precall-download"),
      upload: $("#precall-upload"),
    };
    this.items = {}; // name → {level: ok|warn|bad|pending, key, params}
    this.network = null; // the last measurement, for the tests' debug handle
    this.micPeak = 0; // highest RMS since the meter started
    this.runs = 0;
    this.audio = null; // AudioContext, made on the first click (autoplay rules)
    this.meter = null; // {source, analyser, timer, started, heard}
    this.els.run.addEventListener("click", () => this.run());
    this.els.play.addEventListener("click", () => this.playChime());
    this.els.heard.addEventListener("click", () => this._answerSpeaker(true));
    this.els.notHeard.addEventListener("click", () => this._answerSpeaker(false));
    // Opening the check (a click: WebAudio may start) runs it the first time.
    this.els.panel.addEventListener("toggle", () => {
      if (!this.els.panel.open) this._stopMeter();
      else if (this.runs) this._startMeter();
      else this.run();
    });
    document.addEventListener("endolink:language", () => this._render());
    this._render();
  }

  /** Read-only figures for diagnostics and the browser tests. */
  get debug() {
    return {
      runs: this.runs,
      micPeak: this.micPeak,
      rttMs: this.network?.rttMs ?? null,
      downloadKbps: this.network?.downloadKbps ?? null,
      uploadKbps: this.network?.uploadKbps ?? null,
      result: this._overall().level,
    };
  }

  /** Runs (or runs again) every part; the speaker waits for the user's answer. */
  async run() {
    this.runs += 1;
    const run = this.runs;
    this.els.run.disabled = true;
    await this._audioContext()?.resume().catch(() => {});
    this._checkCamera();
    this._set("speaker", "pending", "precall.speaker.ask");
    this._showSpeakerAnswer(false);
    this._startMeter();
    this._set("network", "pending", "precall.network.running");
    this._lines({});
    try {
      this.network = await measureNetwork({ cid: this.cid, token: this.token });
      if (run !== this.runs) return;
      this._showNetwork(this.network);
    } catch (err) {
      if (run !== this.runs) return;
      this.network = null;
      const key =
        err?.status === 429
          ? "precall.network.busy"
          : err?.status === 0
            ? "precall.network.unreachable"
            : "precall.network.failed";
      this._set("network", err?.status === 0 ? "bad" : "warn", key);
    } finally {
      if (run === this.runs) {
        this.els.run.disabled = false;
        this.els.run.textContent = t("precall.runAgain");
        this.els.run.dataset.i18n = "precall.runAgain";
      }
    }
  }

  /** The stream changed (another camera or microphone): measure the new microphone. */
  streamChanged() {
    this._checkCamera();
    if (this.meter) this._startMeter();
  }

  /** Folds the check away (the stream started); it can be opened and run again. */
  collapse() {
    this.els.panel.open = false;
  }

  /** A short two-note chime on the default output; then the user says whether it was heard. */
  playChime() {
    const ctx = this._audioContext();
    if (!ctx) {
      this._set("speaker", "warn", "precall.speaker.notHeard");
      return;
    }
    ctx.resume().catch(() => {});
    const now = ctx.currentTime + 0.05;
    for (const note of CHIME) {
      const osc = new OscillatorNode(ctx, { type: "sine", frequency: note.hz });
      const gain = new GainNode(ctx, { gain: 0.0001 });
      gain.gain.setValueAtTime(0.0001, now + note.at); // the ramps start here, not at time 0
      gain.gain.exponentialRampToValueAtTime(0.35, now + note.at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + note.at + note.for);
      osc.connect(gain).connect(ctx.destination);
      osc.start(now + note.at);
      osc.stop(now + note.at + note.for + 0.05);
    }
    this._set("speaker", "pending", "precall.speaker.confirm");
    this._showSpeakerAnswer(true);
  }

  /** The page's one AudioContext (made on a click: autoplay rules), or null without WebAudio. */
  _audioContext() {
    if (!this.audio && window.AudioContext) this.audio = new AudioContext();
    return this.audio;
  }

  _answerSpeaker(heard) {
    this._showSpeakerAnswer(false);
    this._set("speaker", heard ? "ok" : "warn", heard ? "precall.speaker.heard" : "precall.speaker.notHeard");
  }

  _showSpeakerAnswer(show) {
    this.els.heard.hidden = !show;
    this.els.notHeard.hidden = !show;
  }

  _checkCamera() {
    const track = this.stream()?.getVideoTracks().find((tr) => tr.readyState === "live");
    if (!track) {
      this._set("camera", "bad", "precall.camera.none");
      return;
    }
    const { width = 0, height = 0, frameRate = 0 } = track.getSettings();
    const params = { width, height, fps: Math.round(frameRate) };
    if (width >= 1280) this._set("camera", "ok", "precall.camera.hd", params);
    else this._set("camera", "warn", "precall.camera.low", params);
  }

  // ---------------------------------------------------------------- microphone level

  _startMeter() {
    this._stopMeter();
    const track = this.stream()?.getAudioTracks().find((tr) => tr.readyState === "live");
    this.micPeak = 0;
    this._showLevel(0);
    if (!track || !this.audio) {
      this._set("mic", "warn", "precall.mic.none");
      return;
    }
    const source = this.audio.createMediaStreamSource(new MediaStream([track]));
    const analyser = new AnalyserNode(this.audio, { fftSize: 1024 });
    source.connect(analyser); // not to the speakers: no feedback
    const samples = new Float32Array(analyser.fftSize);
    const meter = { source, analyser, started: performance.now(), timer: 0, heard: false };
    meter.timer = setInterval(() => this._sample(meter, samples), METER_INTERVAL_MS);
    this.meter = meter;
    this._set("mic", "pending", "precall.mic.listening");
  }

  _sample(meter, samples) {
    meter.analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    this.micPeak = Math.max(this.micPeak, rms);
    const db = rms > 0 ? 20 * Math.log10(rms) : METER_FLOOR_DB;
    this._showLevel(Math.min(1, Math.max(0, 1 - db / METER_FLOOR_DB)));
    if (rms >= SOUND_RMS) {
      meter.heard = true;
      if (this.items.mic?.key !== "precall.mic.heard") this._set("mic", "ok", "precall.mic.heard");
    } else if (!meter.heard && performance.now() - meter.started >= SILENCE_WINDOW_MS) {
      // Once heard, quiet is just a quiet room; before that it is worth saying.
      if (this.items.mic?.key !== "precall.mic.silent") this._set("mic", "warn", "precall.mic.silent");
    }
  }

  _showLevel(fraction) {
    const percent = Math.round(fraction * 100);
    this.els.bar.style.width = `${percent}%`;
    this.els.meter.setAttribute("aria-valuenow", String(percent));
  }

  _stopMeter() {
    if (!this.meter) return;
    clearInterval(this.meter.timer);
    this.meter.source.disconnect();
    this.meter = null;
    this._showLevel(0);
  }

  // ---------------------------------------------------------------- network

  _showNetwork({ rttMs, downloadKbps, uploadKbps, grades }) {
    this._lines({
      rtt: { grade: grades.rtt, key: `precall.rtt.${grades.rtt}`, params: { ms: formatNumber(Math.round(rttMs)) } },
      download: { grade: grades.download, key: `precall.download.${grades.download}`, params: { rate: rate(downloadKbps) } },
      upload: { grade: grades.upload, key: `precall.upload.${grades.upload}`, params: { rate: rate(uploadKbps) } },
    });
    const levels = Object.values(grades).map((g) => NETWORK_LEVEL[g]);
    // Slow upload stops the picture: not ready. Slow download or a long round trip: a warning.
    const level = grades.upload === "poor" ? "bad" : levels.some((l) => l !== "ok") ? "warn" : "ok";
    this._set("network", level, `precall.network.${level}`);
  }

  _lines(lines) {
    this.networkLines = lines;
    this._render();
  }

  // ---------------------------------------------------------------- words

  _set(name, level, key, params = {}) {
    this.items[name] = { level, key, params };
    this._render();
  }

  /** The overall result: pending while a part still measures; the speaker unanswered is a warning. */
  _overall() {
    if (!this.runs) return { level: "idle", key: "precall.result.notRun", params: {} };
    const items = Object.entries(this.items);
    const measuring = items.some(([name, item]) => item.level === "pending" && name !== "speaker");
    if (measuring) return { level: "pending", key: "precall.result.checking", params: {} };
    const level = (name, item) => (item.level === "pending" ? "warn" : item.level);
    const names = (wanted) =>
      items.filter(([name, item]) => level(name, item) === wanted).map(([name]) => t(`precall.${name}`));
    const bad = names("bad");
    if (bad.length) return { level: "bad", key: "precall.result.notReady", params: { items: bad.join(", ") } };
    const warn = names("warn");
    if (warn.length) return { level: "warn", key: "precall.result.warnings", params: { items: warn.join(", ") } };
    return { level: "ok", key: "precall.result.ready", params: {} };
  }

  _render() {
    for (const name of ["camera", "mic", "speaker", "network"]) this._write(this.els[name], this.items[name]);
    for (const name of ["rtt", "download", "upload"]) {
      const line = this.networkLines?.[name];
      this._write(this.els[name], line ? { level: NETWORK_LEVEL[line.grade], ...line } : null);
    }
    const overall = this._overall();
    this.els.result.textContent = t(overall.key, overall.params);
    this.els.result.dataset.tone = TONE[overall.level] ?? "idle";
    this.els.result.dataset.result = overall.level;
    setChip(this.els.chip, t(`precall.chip.${overall.level}`), TONE[overall.level] ?? "idle");
  }

  _write(node, item) {
    node.hidden = !item;
    if (!item) return;
    node.textContent = t(item.key, item.params);
    node.dataset.tone = TONE[item.level] ?? "idle";
  }
}
