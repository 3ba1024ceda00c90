// Media statistics: once a second pc.getStats() → {fps, width, height, bitrate_kbps, rtt_ms,
// loss_pct, jitter_ms, direction} for the main video (inbound on viewers, outbound on the
// publisher), and the word a clinician reads beside them: good / fair / poor link.

// Where a link stops being good / fair, per measure (the worst one decides). Round trip: added
// latency past ~100 ms hampers a surgeon's hand–eye work, past 300 ms a conversation; loss:
// ~1 % costs WebRTC video little, > 5 % freezes it; jitter: past 30 ms the receiver's buffer
// (and so the delay) grows; frame rate: under 20 motion judders, under 10 it is a slideshow.
export const QUALITY_LIMITS = {
  rtt_ms: { good: 150, fair: 300 },
  loss_pct: { good: 1, fair: 5 },
  jitter_ms: { good: 30, fair: 60 },
  fps: { good: 20, fair: 10, higherIsBetter: true },
};
const QUALITY_ORDER = ["good", "fair", "poor"];

/**
 * "good" | "fair" | "poor" from the measures that are known (the worst decides), with the one
 * that decided (`reason`); null when nothing is known yet.
 */
export function linkQuality(stats) {
  let level = null;
  let reason = null;
  for (const [key, limit] of Object.entries(QUALITY_LIMITS)) {
    const value = stats ? stats[key] : null;
    if (typeof value !== "number" || !Number.isFinite(value)) continue;
    const better = limit.higherIsBetter ? (a, b) => a >= b : (a, b) => a <= b;
    const here = better(value, limit.good) ? "good" : better(value, limit.fair) ? "fair" : "poor";
    if (level == null || QUALITY_ORDER.indexOf(here) > QUALITY_ORDER.indexOf(level)) {
      level = here;
      reason = here === "good" ? null : key;
    }
  }
  return level == null ? null : { level, reason };
}

import { msg, setText } from "./i18n.js";

// [stats key, label key, value → msg() or text]
export const STAT_FIELDS = [
  ["fps", "stats.fps", (v) => fmt(v, 0, "stats.value")],
  ["resolution", "stats.resolution", null],
  ["bitrate_kbps", "stats.bitrate", (v) => fmt(v, 0, "stats.kbps")],
  ["rtt_ms", "stats.rtt", (v) => fmt(v, 0, "stats.ms")],
  ["loss_pct", "stats.loss", (v) => fmt(v, 1, "stats.percent")],
];

/** A figure with `digits` decimals in the page's language, as the msg() `key` ({n}); "–" when unknown. */
function fmt(value, digits, key) {
  if (value == null || Number.isNaN(value)) return "–";
  const options = { minimumFractionDigits: digits, maximumFractionDigits: digits };
  return msg(key, { n: { number: Number(value), options } });
}

export class StatsMonitor {
  /**
   * @param {RTCPeerConnection} pc
   * @param {{direction: "inbound"|"outbound", kind?: "video"|"audio", intervalMs?: number,
   *          onStats: (stats: object) => void}} options
   */
  constructor(pc, { direction, kind = "video", intervalMs = 1000, onStats }) {
    this.pc = pc;
    this.direction = direction;
    this.kind = kind;
    this.intervalMs = intervalMs;
    this.onStats = onStats;
    this.previous = null;
    this.timer = null;
    this.latest = null;
  }

  start() {
    this.stop();
    this.timer = setInterval(() => this.sample().catch(() => {}), this.intervalMs);
    return this;
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async sample() {
    if (this.pc.connectionState === "closed") return null;
    const report = await this.pc.getStats();
    const stats = summarise(report, this.direction, this.kind, this.previous);
    if (!stats) return null;
    this.previous = stats._raw;
    delete stats._raw;
    this.latest = stats;
    this.onStats?.(stats);
    return stats;
  }
}

/** Reduces an RTCStatsReport to the contract's stats object (plus `_raw` counters for deltas). */
export function summarise(report, direction, kind, previous) {
  const rtpType = direction === "inbound" ? "inbound-rtp" : "outbound-rtp";
  let rtp = null;
  let remote = null;
  let pair = null;
  let selectedPairId = null;
  const byId = new Map();
  report.forEach((s) => {
    byId.set(s.id, s);
    if (s.type === rtpType && (s.kind ?? s.mediaType) === kind) {
      // Several encodings (simulcast) or stale streams: take the one that moved the most bytes.
      const bytes = direction === "inbound" ? s.bytesReceived : s.bytesSent;
      const best = rtp ? (direction === "inbound" ? rtp.bytesReceived : rtp.bytesSent) : -1;
      if ((bytes ?? 0) > best) rtp = s;
    }
    if (s.type === "transport" && s.selectedCandidatePairId) selectedPairId = s.selectedCandidatePairId;
  });
  if (!rtp) return null;
  if (selectedPairId) pair = byId.get(selectedPairId) ?? null;
  if (!pair) {
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.state === "succeeded" && (s.nominated || !pair)) pair = s;
    });
  }
  if (direction === "outbound" && rtp.remoteId) remote = byId.get(rtp.remoteId) ?? null;
  if (direction === "outbound" && !remote) {
    report.forEach((s) => {
      if (s.type === "remote-inbound-rtp" && s.ssrc === rtp.ssrc) remote = s;
    });
  }

  const now = rtp.timestamp;
  const bytes = direction === "inbound" ? rtp.bytesReceived ?? 0 : rtp.bytesSent ?? 0;
  const frames = direction === "inbound" ? rtp.framesDecoded : rtp.framesEncoded;
  const raw = {
    id: rtp.id,
    timestamp: now,
    bytes,
    frames,
    packetsReceived: rtp.packetsReceived ?? 0,
    packetsLost: rtp.packetsLost ?? 0,
  };
  const prev = previous && previous.id === rtp.id ? previous : null;
  const dt = prev ? (now - prev.timestamp) / 1000 : 0;

  let bitrate = null;
  if (prev && dt > 0) bitrate = Math.max(0, ((bytes - prev.bytes) * 8) / dt / 1000);

  let fps = rtp.framesPerSecond ?? null;
  if (fps == null && prev && dt > 0 && frames != null && prev.frames != null) {
    fps = Math.max(0, (frames - prev.frames) / dt);
  }
  if (kind === "audio") fps = null;

  let loss = null;
  if (direction === "inbound") {
    if (prev) {
      const received = raw.packetsReceived - prev.packetsReceived;
      const lost = Math.max(0, raw.packetsLost - prev.packetsLost);
      loss = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
    }
  } else if (remote && remote.fractionLost != null) {
    loss = 100 * remote.fractionLost;
  }

  // Inbound: our receiver's jitter; outbound: the jitter the far end reports receiving ours.
  const jitterS = direction === "inbound" ? rtp.jitter : remote?.jitter;
  const jitter = typeof jitterS === "number" ? jitterS * 1000 : null;

  let rtt = null;
  if (pair && pair.currentRoundTripTime != null) rtt = pair.currentRoundTripTime * 1000;
  else if (remote && remote.roundTripTime != null) rtt = remote.roundTripTime * 1000;

  return {
    fps: fps == null ? null : round(fps, 1),
    width: rtp.frameWidth ?? null,
    height: rtp.frameHeight ?? null,
    bitrate_kbps: bitrate == null ? null : round(bitrate, 0),
    rtt_ms: rtt == null ? null : round(rtt, 0),
    loss_pct: loss == null ? null : round(loss, 2),
    jitter_ms: jitter == null ? null : round(jitter, 1),
    direction,
    // Extra, for the test suite and the page only (not sent): audio packet counters.
    ...(kind === "audio" ? { packets_received: raw.packetsReceived } : {}),
    _raw: raw,
  };
}

function round(value, digits) {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** Renders one stats object into a <dl> (created if needed) inside `container`. */
export function renderStats(container, stats, { label } = {}) {
  let dl = container.querySelector("dl");
  if (!dl) {
    dl = document.createElement("dl");
    dl.className = "stats-grid";
    for (const [key, name] of STAT_FIELDS) {
      const dt = document.createElement("dt");
      setText(dt, msg(name));
      const dd = document.createElement("dd");
      dd.dataset.stat = key;
      dd.textContent = "–";
      dl.append(dt, dd);
    }
    if (label) {
      const caption = document.createElement("p");
      caption.className = "stats-caption";
      setText(caption, label);
      container.append(caption);
    }
    container.append(dl);
  }
  renderQuality(container, stats, dl);
  for (const [key, , format] of STAT_FIELDS) {
    const dd = dl.querySelector(`[data-stat="${key}"]`);
    if (key === "resolution") {
      setText(dd, stats && stats.width && stats.height ? msg("stats.size", { width: stats.width, height: stats.height }) : "–");
    } else {
      setText(dd, stats ? format(stats[key]) : "–");
      dd.dataset.value = stats && stats[key] != null ? String(stats[key]) : "";
    }
  }
}

/** The good / fair / poor word (with its colour) above the numbers of one participant. */
function renderQuality(container, stats, dl) {
  let badge = container.querySelector(".link-quality");
  if (!badge) {
    badge = document.createElement("p");
    badge.className = "link-quality";
    badge.setAttribute("data-testid", "link-quality");
    container.insertBefore(badge, dl);
  }
  const quality = linkQuality(stats);
  const level = quality ? quality.level : "unknown";
  badge.dataset.quality = level;
  badge.dataset.reason = quality?.reason || "";
  setText(badge, msg(`stats.quality.${level}`));
}

/** Stats the other participants sent (`stats` room events), one block per sender. */
export class RemoteStatsBoard {
  constructor(container, describe, staleMs = 3000) {
    this.container = container;
    this.describe = describe; // (identity, role) → label
    this.blocks = new Map();
    // A sender that stopped (stream stopped, page closed) must not leave numbers that look live.
    setInterval(() => {
      const now = Date.now();
      for (const [key, block] of this.blocks) {
        if (now - Number(block.dataset.updated || 0) > staleMs) {
          block.remove();
          this.blocks.delete(key);
        }
      }
    }, 1000);
  }

  update(msg) {
    if (!msg || !msg.from || !msg.stats || typeof msg.stats !== "object") return;
    // One block per device: a person watching on a laptop and drawing on a tablet has two links.
    const key = `${msg.from}/${msg.device ?? ""}`;
    let block = this.blocks.get(key);
    if (!block) {
      block = document.createElement("div");
      block.className = "remote-stats";
      block.dataset.from = msg.from;
      this.container.append(block);
      this.blocks.set(key, block);
    }
    const sends = ["outbound", "send"].includes(msg.stats.direction);
    const label = { key: sends ? "stats.sends" : "stats.receives", params: { who: this.describe(msg.from, msg.role) } };
    renderStats(block, msg.stats, { label });
    const caption = block.querySelector(".stats-caption");
    if (caption) setText(caption, label);
    block.dataset.updated = String(Date.now());
  }

  /** Drops blocks of participants who left. */
  retain(identities) {
    for (const [from, block] of this.blocks) {
      if (!identities.has(from)) {
        block.remove();
        this.blocks.delete(from);
      }
    }
  }
}

/**
 * The room's stats payload: the numbers that are known (the server refuses null, negative or
 * non-finite values) and direction "send" / "recv", plus the feed they describe.
 */
export function wireStats(stats, feed = null) {
  const out = {};
  for (const key of ["fps", "width", "height", "bitrate_kbps", "rtt_ms", "loss_pct", "jitter_ms"]) {
    const value = stats[key];
    if (typeof value === "number" && Number.isFinite(value) && value >= 0) out[key] = value;
  }
  out.direction = stats.direction === "outbound" || stats.direction === "send" ? "send" : "recv";
  if (feed) out.feed = feed;
  return out;
}
