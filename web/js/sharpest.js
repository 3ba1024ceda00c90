// The sharpest recent frame of a live <video>, for the snapshot button: a snapshot taken while the
// scope moves or the lens fogs for a moment keeps the best frame of the last WINDOW_MS instead
// of whichever frame was on screen at the click.
//
// Frames are sampled SAMPLE_MS apart into ImageBitmaps and scored with the stills' focus measure
// (stills.js scorePicture: the variance of the Laplacian of a 320-px grey copy, a few ms). Memory
// stays small: a frame is dropped as soon as a newer one is at least as sharp (it can never be
// the sharpest of a later window: the newer one outlives it), so the kept frames are sharper
// the older they are, the oldest is the answer, and at most MAX_KEPT are ever held.

import { scorePicture } from "./stills.js";

const WINDOW_MS = 2000;
const SAMPLE_MS = 200;
const MAX_KEPT = WINDOW_MS / SAMPLE_MS;

export class SharpestFrames {
  /** @param {HTMLVideoElement} video  @param {() => boolean} wanted  sample only while true */
  constructor(video, wanted = () => true) {
    this.video = video;
    this.wanted = wanted;
    this.kept = []; // {bitmap, score, at}, oldest (and sharpest) first
    this.scratch = document.createElement("canvas");
    this.busy = false;
    setInterval(() => this._sample(), SAMPLE_MS); // as long as the page: the layer is never torn down
  }

  /** The sharpest frame of the last WINDOW_MS ({bitmap, score}), or null (then use the video). */
  best() {
    this._expire(performance.now());
    const best = this.kept[0];
    const { videoWidth, videoHeight } = this.video;
    return best && best.bitmap.width === videoWidth && best.bitmap.height === videoHeight ? best : null;
  }

  _clear() {
    for (const frame of this.kept.splice(0)) frame.bitmap.close();
  }

  async _sample() {
    const video = this.video;
    if (this.busy || document.hidden || video.readyState < 2 || !video.videoWidth || !this.wanted()) return;
    this.busy = true;
    try {
      const bitmap = await createImageBitmap(video);
      const score = scorePicture(bitmap, this.scratch);
      const at = performance.now();
      // A frame of another size (the clinic's sender adapts) is no candidate: a sharper but
      // smaller picture is not a better snapshot, and focus measures of two sizes differ.
      const resized = (frame) => frame.bitmap.width !== bitmap.width || frame.bitmap.height !== bitmap.height;
      if (this.kept.some(resized)) this._clear();
      while (this.kept.length && this.kept.at(-1).score <= score) this.kept.pop().bitmap.close();
      this.kept.push({ bitmap, score, at });
      if (this.kept.length > MAX_KEPT) this.kept.shift().bitmap.close();
      this._expire(at);
    } catch {
      // No frame to take (the video is between streams): the next sample tries again.
    } finally {
      this.busy = false;
    }
  }

  _expire(now) {
    while (this.kept.length && now - this.kept[0].at > WINDOW_MS) this.kept.shift().bitmap.close();
  }
}
