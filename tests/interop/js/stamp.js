// The stamp of client/testpattern.py in an I420 luma plane: 64 black/white blocks along the top,
// bits 0-23 the frame counter, bits 24-63 wall-clock milliseconds (mod 2**40).
"use strict";

const STAMP_BITS = 64;
const COUNTER_MASK = (1n << 24n) - 1n;
const CLOCK_MASK = (1n << 40n) - 1n;

function stamp(luma, width, counter, wallMs) {
  const block = Math.floor(width / STAMP_BITS);
  const value = (BigInt(counter) & COUNTER_MASK) | ((BigInt(wallMs) & CLOCK_MASK) << 24n);
  for (let bit = 0; bit < STAMP_BITS; bit += 1) {
    const shade = (value >> BigInt(bit)) & 1n ? 235 : 16;
    for (let y = 0; y < block; y += 1) {
      luma.fill(shade, y * width + bit * block, y * width + (bit + 1) * block);
    }
  }
}

// The frame counter read back from a decoded luma plane (like read_stamp).
function readCounter(luma, width) {
  const block = width / STAMP_BITS;
  const row = Math.floor(block / 2);
  let counter = 0;
  for (let bit = 0; bit < 24; bit += 1) {
    if (luma[row * width + Math.floor((bit + 0.5) * block)] > 128) {
      counter |= 1 << bit;
    }
  }
  return counter;
}

// A stamped I420 frame: a grey picture whose brightness drifts, so every frame differs.
function i420Frame(width, height, counter) {
  const data = new Uint8ClampedArray((width * height * 3) / 2);
  const luma = data.subarray(0, width * height);
  luma.fill(60 + (counter % 120));
  data.fill(128, width * height);
  stamp(luma, width, counter, Date.now());
  return { width, height, data };
}

module.exports = { i420Frame, readCounter };
