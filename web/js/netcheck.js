// The pre-call network test: round trip and throughput between this page and the server
// (signaling/http/netcheck.py), graded against what the endoscope feed needs. The server says
// what "good" and "fair" are (from its publisher bitrate settings), so the page and the relay
// never disagree.

import { apiFetch } from "./api.js";

const PINGS = 5; // the first one also opens the connection: it is not counted
const SIZES = [64 * 1024, 512 * 1024, 2 * 1024 * 1024];
const ENOUGH_MS = 1000; // a transfer this long measures well: no bigger one needed
const TRANSFER_TIMEOUT_MS = 8000; // a slower link is "poor" however slow it is
const RANDOM_CHUNK = 65536; // crypto.getRandomValues fills at most this many bytes per call

/** "good" | "fair" | "poor" for `value` against `{good, fair}` (`lowerIsBetter` for times). */
export function grade(value, { good, fair }, lowerIsBetter = false) {
  if (lowerIsBetter) return value <= good ? "good" : value <= fair ? "fair" : "poor";
  return value >= good ? "good" : value >= fair ? "fair" : "poor";
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function noise(size) {
  const bytes = new Uint8Array(size);
  for (let offset = 0; offset < size; offset += RANDOM_CHUNK) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(size, offset + RANDOM_CHUNK)));
  }
  return bytes;
}

/**
 * Times `transfer(size, signal)` with growing sizes until one takes long enough to measure, or
 * the largest is done. Resolves to `{kbps, timedOut}`: the rate of the last transfer; after a
 * timeout, at most what that transfer would have needed (the link is slower than that).
 */
async function throughput(transfer, maxBytes) {
  let kbps = 0;
  for (const size of SIZES.filter((s) => s <= maxBytes)) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TRANSFER_TIMEOUT_MS);
    const started = performance.now();
    try {
      await transfer(size, abort.signal);
    } catch (err) {
      if (!abort.signal.aborted) throw err;
      return { kbps: (size * 8) / TRANSFER_TIMEOUT_MS, timedOut: true };
    } finally {
      clearTimeout(timer);
    }
    const elapsed = Math.max(1, performance.now() - started);
    kbps = (size * 8) / elapsed; // bits per ms = kbit/s
    if (elapsed >= ENOUGH_MS) break;
  }
  return { kbps, timedOut: false };
}

/**
 * Measures the link to the server for consultation `cid`. Resolves to
 * `{rttMs, downloadKbps, uploadKbps, needs, grades: {rtt, download, upload}}`; rejects with the
 * api.js ApiError when the server refuses or cannot be reached.
 */
export async function measureNetwork({ cid, token }) {
  const base = `/api/consultations/${encodeURIComponent(cid)}/netcheck`;
  let needs = null;
  const rtts = [];
  for (let i = 0; i < PINGS; i++) {
    const started = performance.now();
    const response = await apiFetch(base, { token });
    needs = await response.json();
    if (i > 0) rtts.push(performance.now() - started);
  }
  const rttMs = median(rtts);

  const download = await throughput(async (size, signal) => {
    const response = await apiFetch(`${base}/download?bytes=${size}`, { token, signal });
    await response.arrayBuffer();
  }, needs.max_bytes);
  const payload = noise(Math.min(needs.max_bytes, SIZES[SIZES.length - 1]));
  const upload = await throughput(async (size, signal) => {
    const body = new Blob([payload.subarray(0, size)]);
    const response = await apiFetch(`${base}/upload`, {
      token,
      method: "POST",
      body,
      headers: { "Content-Type": "application/octet-stream" },
      signal,
    });
    await response.json();
  }, needs.max_bytes);

  return {
    rttMs,
    downloadKbps: download.kbps,
    uploadKbps: upload.kbps,
    needs,
    grades: {
      rtt: grade(rttMs, needs.rtt_ms, true),
      download: download.timedOut ? "poor" : grade(download.kbps, needs.download_kbps),
      upload: upload.timedOut ? "poor" : grade(upload.kbps, needs.upload_kbps),
    },
  };
}
