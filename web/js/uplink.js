// The clinic's uplink: the endoscope picture follows what the link carries, down and back up.
//
// About once a second the publisher's stats are read: the browser's estimate of what it may
// send (candidate-pair availableOutgoingBitrate, which follows the relay's REMB), the encoder's
// targetBitrate, qualityLimitationReason and the frames per second. A level (720p, 540p, 360p or
// "low") is chosen for that rate with hysteresis — down quickly, up only after the rate held
// with a margin — and applied with scaleResolutionDownBy and maxBitrate under
// degradationPreference "maintain-framerate": at a fixed rate the frame rate matters more than
// the size, and a smaller picture at 30 fps stays sharper than a large one at 8.
// Every second `endolink:uplink` {kbps, level} is dispatched on window (stills listen to it).
// The sender has one owner at a time: stills mode (stills.js) takes it with
// `endolink:stills` {active: true} and hands it back with {active: false}, which this follower
// claims (preventDefault) by applying its own current level; the reports go on meanwhile, so
// stills mode hears when the link recovers.
// The same levels and holds are in client/uplink.py (`endolink publish`).

/** Highest first: a level from `minKbps` of estimate upward. */
export const LEVELS = Object.freeze([
  Object.freeze({ name: "720p", height: 720, minKbps: 1500 }),
  Object.freeze({ name: "540p", height: 540, minKbps: 800 }),
  Object.freeze({ name: "360p", height: 360, minKbps: 350 }),
  Object.freeze({ name: "low", height: 270, minKbps: 0 }),
]);
export const DOWN_HOLD_S = 1.5;
export const UP_HOLD_S = 4;
export const UP_MARGIN = 1.15;
export const MAX_BITRATE = 2_500_000;
const SAMPLE_MS = 1000;

/** Which level for a stream of rate samples (pure: time is passed in, in seconds). */
export class LevelChooser {
  constructor() {
    this.level = null;
    this.belowSince = null;
    this.aboveSince = null;
  }

  update(kbps, now) {
    const fits = LEVELS.find((level) => kbps >= level.minKbps);
    if (!this.level) {
      this.level = fits;
      return fits;
    }
    const rank = LEVELS.indexOf(this.level);
    if (LEVELS.indexOf(fits) > rank) {
      this.aboveSince = null;
      this.belowSince ??= now;
      if (now - this.belowSince >= DOWN_HOLD_S) {
        this.level = fits;
        this.belowSince = null;
      }
      return this.level;
    }
    this.belowSince = null;
    if (rank > 0 && kbps >= LEVELS[rank - 1].minKbps * UP_MARGIN) {
      this.aboveSince ??= now;
      if (now - this.aboveSince >= UP_HOLD_S) {
        this.level = LEVELS[rank - 1];
        this.aboveSince = null;
      }
    } else {
      this.aboveSince = null;
    }
    return this.level;
  }
}

/**
 * The encoding for `level` from a camera of `sourceHeight` lines: never upscaled; the bitrate
 * capped where the next level up would take over (with room for the estimate to climb there).
 */
export function encodingFor(level, sourceHeight) {
  const rank = LEVELS.indexOf(level);
  const cap = rank > 0 ? LEVELS[rank - 1].minKbps * 1500 : MAX_BITRATE;
  return {
    scaleResolutionDownBy: Math.max(1, sourceHeight / level.height),
    maxBitrate: Math.min(cap, MAX_BITRATE),
  };
}

/** The numbers one sample reads from a publisher's stats report (null where absent). */
export function uplinkSample(report) {
  let pair = null;
  let out = null;
  report.forEach((s) => {
    if (s.type === "candidate-pair" && (s.nominated || s.selected) && s.state === "succeeded") pair = s;
    if (s.type === "outbound-rtp" && s.kind === "video") out = s;
  });
  const available = pair?.availableOutgoingBitrate;
  const target = out?.targetBitrate;
  const bps = available ?? target ?? null;
  return {
    kbps: bps == null ? null : Math.round(bps / 1000),
    targetKbps: target == null ? null : Math.round(target / 1000),
    limitation: out?.qualityLimitationReason ?? null,
    fps: out?.framesPerSecond ?? null,
    height: out?.frameHeight ?? null,
  };
}

/**
 * Keeps one video sender at the level its link carries. `onChange({level, limited})` hears
 * each change: `limited` when the link, not the camera, sets the picture below its best.
 */
export class UplinkFollower {
  constructor({ pc, sender, onChange = () => {} }) {
    this.pc = pc;
    this.sender = sender;
    this.onChange = onChange;
    this.chooser = new LevelChooser();
    this.applied = null;
    this.last = { kbps: null, level: null, limited: false };
    this.timer = null;
    this.yielded = false; // stills mode owns the sender
    this.silent = false; // no `endolink:uplink` reports (tests that send their own)
    this.onStills = (event) => this.stills(event);
  }

  start() {
    if (this.timer) return;
    window.addEventListener("endolink:stills", this.onStills);
    this.timer = setInterval(() => this.tick().catch(() => {}), SAMPLE_MS);
  }

  stop() {
    window.removeEventListener("endolink:stills", this.onStills);
    clearInterval(this.timer);
    this.timer = null;
  }

  /** Stills mode takes the sender (the follower only reports), or hands it back: the follower
   * claims it and applies the level it holds now (the link may have moved meanwhile). */
  stills(event) {
    this.yielded = event.detail?.active === true;
    if (this.yielded || !this.chooser.level) return;
    event.preventDefault();
    this.applied = null;
    this.apply(this.chooser.level);
  }

  /** The source's height, from the track's own settings (the camera, not the encoder). */
  sourceHeight() {
    return this.sender.track?.getSettings?.().height || LEVELS[0].height;
  }

  async tick() {
    const sample = uplinkSample(await this.pc.getStats());
    const level = sample.kbps == null ? this.chooser.level : this.chooser.update(sample.kbps, performance.now() / 1000);
    if (level && level !== this.applied && !this.yielded) await this.apply(level);
    const best = LEVELS.find((l) => l.height <= this.sourceHeight()) ?? LEVELS[LEVELS.length - 1];
    const limited = !!level && LEVELS.indexOf(level) > LEVELS.indexOf(best);
    const detail = { kbps: sample.kbps, level: level?.name ?? null };
    if (!this.silent) window.dispatchEvent(new CustomEvent("endolink:uplink", { detail }));
    if (limited !== this.last.limited || detail.level !== this.last.level) this.onChange({ level: detail.level, limited });
    this.last = { ...sample, level: detail.level, limited };
  }

  async apply(level) {
    const params = this.sender.getParameters();
    if (!params.encodings?.length) return;
    Object.assign(params.encodings[0], encodingFor(level, this.sourceHeight()));
    delete params.encodings[0].maxFramerate; // the frame rate is kept ("maintain-framerate")
    params.degradationPreference = "maintain-framerate";
    try {
      await this.sender.setParameters(params);
      this.applied = level;
    } catch {
      // A renegotiation in flight changed the parameters: the next sample tries again.
    }
  }

  /** For diagnostics and the tests: the last sample and level (no token, no patient data). */
  get debug() {
    return { ...this.last, applied: this.applied?.name ?? null, yielded: this.yielded };
  }
}
