// Logging a page off after a time without interaction (the replay page: a screen left open in a
// corridor must not keep showing, or keep the right to fetch, a patient's recordings).
//
// Interaction is a key, a click, a touch, the wheel or the mouse moving; `busy()` (e.g. a
// recording playing: someone watches it) also counts. Once idle, `onIdle` runs once and the
// watch ends.

const ACTIVITY = ["pointerdown", "pointermove", "keydown", "wheel", "touchstart"];

/**
 * @param {object} o
 * @param {number} o.idleS          seconds without interaction before `onIdle`
 * @param {() => boolean} [o.busy]  true while something counts as being watched
 * @param {() => void} o.onIdle
 * @returns {() => void} stops watching
 */
export function watchIdle({ idleS, busy = () => false, onIdle }) {
  let last = performance.now();
  const mark = () => {
    last = performance.now();
  };
  for (const type of ACTIVITY) addEventListener(type, mark, { capture: true, passive: true });
  const stop = () => {
    clearInterval(timer);
    for (const type of ACTIVITY) removeEventListener(type, mark, { capture: true });
  };
  const timer = setInterval(() => {
    if (busy()) mark();
    else if (performance.now() - last >= idleS * 1000) {
      stop();
      onIdle();
    }
  }, Math.min(1000, idleS * 250));
  return stop;
}
