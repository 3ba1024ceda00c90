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

/**
 * Runs `request(url)` (a fetch of `url` that reads the whole answer) and resolves to how long
 * the network took in ms: the browser's Resource Timing from sending the request to the last
 * byte, which leaves out the page's own busy main thread (video, drawing); the wall clock
 * where the browser has no entry. `url` gets a unique query so its entry can be found.
 */
async function timed(path, request) {
  const url = new URL(path, location.href);
  url.searchParams.set("n", `${Date.now()}-${Math.random().toString(36).slice(2)}`);
  const started = performance.now();
  await request(url.pathname + url.search);
  const wall = performance.now() - started;
  const entry = performance.getEntriesByName(url.href, "resource").pop();
  performance.clearResourceTimings(); // the buffer is small (250) and this check fills it fast
  const network = entry && entry.requestStart > 0 ? entry.responseEnd - entry.requestStart : 0;
  return network > 0 ? network : wall;
}

function noise(size) {
  const bytes = new Uint8Array(size);
  for (let offset = 0; offset < size; offset += RANDOM_CHUNK) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(size, offset + RANDOM_CHUNK)));
  }
  return bytes;
}

/**
 * Times `transfer(size, signal)` (resolving to its network time in ms) with growing sizes until
 * one takes long enough to measure, or the largest is done. Resolves to `{kbps, timedOut}`: the
 * rate of the last transfer; after a timeout, at most what that transfer would have needed.
 */
async function throughput(transfer, maxBytes) {
  let kbps = 0;
  for (const size of SIZES.filter((s) => s <= maxBytes)) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TRANSFER_TIMEOUT_MS);
    let elapsed;
    try {
      elapsed = Math.max(0.1, await transfer(size, abort.signal));
    } catch (err) {
      if (!abort.signal.aborted) throw err;
      return { kbps: (size * 8) / TRANSFER_TIMEOUT_MS, timedOut: true };
    } finally {
      clearTimeout(timer);
    }
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
    const ms = await timed(base, async (url) => {
      needs = await (await apiFetch(url, { token })).json();
    });
    if (i > 0) rtts.push(ms);
  }
  const rttMs = median(rtts);

  const download = await throughput(
    (size, signal) =>
      timed(`${base}/download?bytes=${size}`, async (url) => {
        await (await apiFetch(url, { token, signal })).arrayBuffer();
      }),
    needs.max_bytes,
  );
  const payload = noise(Math.min(needs.max_bytes, SIZES[SIZES.length - 1]));
  const upload = await throughput(
    (size, signal) =>
      timed(`${base}/upload`, async (url) => {
        const body = new Blob([payload.subarray(0, size)]);
        const headers = { "Content-Type": "application/octet-stream" };
        await (await apiFetch(url, { token, method: "POST", body, headers, signal })).json();
      }),
    needs.max_bytes,
  );

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
