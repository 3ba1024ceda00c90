// Publisher (WHIP, sendonly) and FeedPlayer (WHEP, recvonly) sessions with the states the pages
// show and the recovery rules of a live consultation:
//   - a lost connection is replaced by a fresh session (new RTCPeerConnection, new POST: aiortc
//     cannot restart ICE) as soon as the server answers again (link.js probes it about every
//     second), not after a growing back-off; a server that answers but fails gets a short one;
//   - a publisher's new session replaces its old one on the server (same identity), so it never
//     DELETEs the old one first (that would tell viewers "the clinic ended the stream");
//   - WHEP viewers connect at once (the relay accepts viewers before the publisher is live) and
//     start a new session when the room says the feed went live and no media is arriving;
//   - 401/403/409 stop retrying and surface the server's reason; 429 waits its Retry-After.

import { Session } from "./mediasession.js";
import { StatsMonitor } from "./stats.js";
import { WhipClient } from "./whip.js";

const RECEIVING_WINDOW_MS = 2500;
const LIVE_GRACE_MS = 2000;

/** WHIP publisher: sends the given tracks (sendonly). */
export class Publisher extends Session {
  /**
   * @param {{endpoint: string, token: string, iceServers: RTCIceServer[],
   *          stream: MediaStream, kinds: string[], configure?: (pc, transceivers) => Promise<void>,
   *          afterAnswer?: (pc, transceivers) => Promise<void>}} options
   */
  constructor(options) {
    super(options);
    this.stream = options.stream;
    this.kinds = options.kinds || ["video", "audio"];
    this.configure = options.configure;
    this.afterAnswer = options.afterAnswer;
    this.transceivers = {};
    this.monitor = null;
    this.statsOptions = options.stats || null;
    this.replacedByServer = true;
  }

  async connect() {
    const generation = ++this.generation;
    await this._teardown();
    if (generation !== this.generation) return;
    this.error = null;
    this._emit("connecting");
    const pc = await this._newPeerConnection();
    if (generation !== this.generation) return pc.close();
    this.pc = pc;
    const transceivers = {};
    for (const kind of this.kinds) {
      const track = this.stream?.getTracks().find((t) => t.kind === kind && t.readyState === "live");
      transceivers[kind] = pc.addTransceiver(track ?? kind, {
        direction: "sendonly",
        streams: this.stream ? [this.stream] : [],
      });
    }
    this.transceivers = transceivers;
    const client = new WhipClient(this.endpoint, this.token);
    this.client = client;
    try {
      if (this.configure) await this.configure(pc, transceivers);
      await client.start(pc);
      if (generation !== this.generation) {
        await client.stop();
        return;
      }
      if (this.afterAnswer) await this.afterAnswer(pc, transceivers);
      this._emit(pc.connectionState === "connected" ? "connected" : "negotiated");
      if (this.statsOptions) {
        this.monitor = new StatsMonitor(pc, { direction: "outbound", ...this.statsOptions }).start();
      }
    } catch (err) {
      if (generation === this.generation && this.client === client) await client.stop();
      this._handleStartError(err, generation);
    }
  }

  /** Swaps the source (new camera / microphone) without renegotiation. */
  async replaceStream(stream) {
    this.stream = stream;
    for (const [kind, transceiver] of Object.entries(this.transceivers)) {
      const track = stream.getTracks().find((t) => t.kind === kind) ?? null;
      try {
        await transceiver.sender.replaceTrack(track);
        if (track) transceiver.sender.setStreams?.(stream);
      } catch {
        // Replacing failed (e.g. codec change needed): renegotiate with a new session.
        if (this.wanted) await this.connect();
        return;
      }
    }
  }
}

/** WHEP viewer of one feed (recvonly). */
export class FeedPlayer extends Session {
  /**
   * @param {{endpoint: string, token: string, iceServers: RTCIceServer[], kinds: string[],
   *          onTrack: (event: RTCTrackEvent, stream: MediaStream) => void,
   *          stats?: {kind, onStats}}} options
   */
  constructor(options) {
    super(options);
    this.kinds = options.kinds || ["video", "audio"];
    this.onTrack = options.onTrack;
    this.statsOptions = options.stats || null;
    this.stream = null;
    this.lastPacketAt = 0;
    this.packets = 0;
    this.receiving = false;
    this.playedEarlierPublisher = false;
    this._pollTimer = null;
    this.monitor = null;
  }

  async connect() {
    const generation = ++this.generation;
    await this._teardown();
    if (generation !== this.generation) return;
    this.error = null;
    this.packets = 0;
    this.playedEarlierPublisher = false;
    this._setReceiving(false);
    this._emit("connecting");
    const pc = await this._newPeerConnection();
    if (generation !== this.generation) return pc.close();
    this.pc = pc;
    this.stream = new MediaStream();
    for (const kind of this.kinds) pc.addTransceiver(kind, { direction: "recvonly" });
    pc.addEventListener("track", (event) => {
      if (pc !== this.pc) return;
      this.stream.addTrack(event.track);
      this.onTrack?.(event, this.stream);
    });
    const client = new WhipClient(this.endpoint, this.token);
    this.client = client;
    try {
      await client.start(pc);
      if (generation !== this.generation) {
        await client.stop();
        return;
      }
      this._emit(pc.connectionState === "connected" ? "connected" : "negotiated");
      this._startPolling(pc);
      if (this.statsOptions) {
        this.monitor = new StatsMonitor(pc, { direction: "inbound", ...this.statsOptions }).start();
      }
    } catch (err) {
      if (generation === this.generation && this.client === client) await client.stop();
      this._handleStartError(err, generation);
    }
  }

  /** The room says the feed went offline: the next "live" is a new publisher session. */
  feedOffline() {
    clearTimeout(this._liveTimer);
    if (this.packets > 0) this.playedEarlierPublisher = true;
  }

  /**
   * The room says the feed went live. A session that already played an earlier publisher is
   * replaced at once (a fresh jitter buffer and decoder instead of bridging two publishers'
   * timestamps), as is one that is not usable. A session that never received anything is kept
   * (the relay attaches waiting viewers to the new publisher) unless media still does not
   * arrive after a short grace.
   */
  feedLive() {
    if (!this.wanted) return;
    clearTimeout(this._liveTimer);
    if (this.playedEarlierPublisher) {
      this._log("feed live again: new session");
      this.attempt = 0;
      this.connect();
      return;
    }
    if (this.receiving && performance.now() - this.lastPacketAt < RECEIVING_WINDOW_MS) return;
    const pc = this.pc;
    if (!pc || ["failed", "closed"].includes(pc.connectionState) || ["refused", "retrying"].includes(this.phase)) {
      this._log("feed live: new session");
      this.attempt = 0;
      this.connect();
      return;
    }
    const generation = this.generation;
    const packetsAtEvent = this.packets;
    let checks = 0;
    const check = () => {
      if (!this.wanted || generation !== this.generation || this.packets > packetsAtEvent) return;
      checks += 1;
      if (this.pc?.connectionState === "connected" || checks >= 4) {
        this._log("feed live but no media arriving: new session");
        this.attempt = 0;
        this.connect();
      } else {
        this._liveTimer = setTimeout(check, LIVE_GRACE_MS);
      }
    };
    this._liveTimer = setTimeout(check, LIVE_GRACE_MS);
  }

  _startPolling(pc) {
    clearInterval(this._pollTimer);
    this._pollTimer = setInterval(async () => {
      if (pc !== this.pc) {
        clearInterval(this._pollTimer);
        return;
      }
      let packets = 0;
      try {
        const report = await pc.getStats();
        report.forEach((s) => {
          if (s.type === "inbound-rtp") packets += s.packetsReceived ?? 0;
        });
      } catch {
        return;
      }
      const now = performance.now();
      if (packets > this.packets) {
        this.packets = packets;
        this.lastPacketAt = now;
        this._setReceiving(true);
      } else if (now - this.lastPacketAt > RECEIVING_WINDOW_MS) {
        this._setReceiving(false);
      }
    }, 500);
  }

  _setReceiving(receiving) {
    if (receiving === this.receiving) return;
    this.receiving = receiving;
    this.dispatchEvent(new CustomEvent("receiving", { detail: { receiving } }));
  }

  _survivedOutage() {
    return this.receiving && performance.now() - this.lastPacketAt < RECEIVING_WINDOW_MS;
  }

  async _teardown(options) {
    clearInterval(this._pollTimer);
    clearTimeout(this._liveTimer);
    await super._teardown(options);
  }
}

/** Restricts a video transceiver to one codec (VP8 / H264) when the browser offers it. */
export function preferCodec(transceiver, codecName) {
  if (!codecName || !transceiver.setCodecPreferences || !window.RTCRtpSender?.getCapabilities) return false;
  const caps = RTCRtpSender.getCapabilities("video");
  if (!caps) return false;
  const wanted = `video/${codecName}`.toLowerCase();
  const primary = caps.codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (!primary.length) return false;
  if (wanted === "video/h264") {
    // Constrained baseline, packetization-mode=1 first: what every browser and the relay decode.
    const score = (c) =>
      (/packetization-mode=1/.test(c.sdpFmtpLine || "") ? 2 : 0) +
      (/profile-level-id=42e0/i.test(c.sdpFmtpLine || "") ? 1 : 0);
    primary.sort((a, b) => score(b) - score(a));
  }
  const rtx = caps.codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx");
  try {
    transceiver.setCodecPreferences([...primary, ...rtx]);
    return true;
  } catch {
    return false;
  }
}
