// Geometry of the annotation overlay: where the video *frame* sits inside an element, and the
// mapping between pointer positions (CSS pixels) and normalised frame coordinates.
//
// Normalised frame coordinates (docs/architecture.md, "Annotations"): (0, 0) is the top-left
// corner of the video frame, (1, 1) its bottom-right corner, whatever the frame's resolution and
// whatever the element's size. A <video> (or <img>) with `object-fit: contain` shows the frame
// letterboxed (bars above and below) or pillarboxed (bars left and right); the bars are not part
// of the frame, so a pointer position must be mapped through the picture rectangle, never
// through the element box.
//
// Points outside the picture (decision, the same on every page):
//   * a gesture that *starts* outside the picture (in a letterbox bar, or with no picture yet) is
//     ignored: nothing is drawn and nothing is sent;
//   * while a gesture that started inside goes on, positions outside the picture are clamped to
//     its nearest edge, so a mark never leaves the frame (the server refuses coordinates outside
//     0..1 anyway), and the clamped point is exactly where the pointer left the picture when it
//     moved straight out;
//   * the laser pointer hides while it is outside the picture.
//
// Every size here is in CSS pixels; `backingSize` gives the canvas's device-pixel buffer for a
// devicePixelRatio, and drawing code scales its context by the same ratio, so the same CSS-pixel
// geometry is used for input and for drawing.

/** Decimal places kept in normalised coordinates: 1e-5 of a 4K frame is 0.04 pixel. */
export const COORD_DECIMALS = 5;
const ROUND = 10 ** COORD_DECIMALS;

/** Rounds a normalised coordinate to COORD_DECIMALS places (keeps WebSocket frames small). */
export function roundCoord(value) {
  return Math.round(value * ROUND) / ROUND;
}

/**
 * The rectangle (CSS px, relative to the box's origin) where a media of mediaW×mediaH is drawn
 * inside a box of boxW×boxH, like CSS object-fit / object-position.
 * @param {number} boxW
 * @param {number} boxH
 * @param {number} mediaW  intrinsic width (videoWidth / naturalWidth)
 * @param {number} mediaH
 * @param {string} [fit]   "contain" (default) | "cover" | "fill" | "none" | "scale-down"
 * @param {[number, number]} [position]  object-position as fractions of the free space (0.5, 0.5 = centred)
 * @returns {{x: number, y: number, width: number, height: number} | null}  null without a picture
 */
export function fitRect(boxW, boxH, mediaW, mediaH, fit = "contain", position = [0.5, 0.5]) {
  if (!(boxW > 0 && boxH > 0 && mediaW > 0 && mediaH > 0)) return null;
  let width;
  let height;
  if (fit === "fill") {
    width = boxW;
    height = boxH;
  } else {
    const containScale = Math.min(boxW / mediaW, boxH / mediaH);
    let scale;
    if (fit === "cover") scale = Math.max(boxW / mediaW, boxH / mediaH);
    else if (fit === "none") scale = 1;
    else if (fit === "scale-down") scale = Math.min(1, containScale);
    else scale = containScale; // contain, and anything unknown
    width = mediaW * scale;
    height = mediaH * scale;
  }
  const [px, py] = position;
  return { x: (boxW - width) * px, y: (boxH - height) * py, width, height };
}

/**
 * Element position (CSS px, same origin as `rect`) → normalised frame coordinates.
 * Returns {x, y, inside}: x and y are clamped to 0..1 and rounded; `inside` tells whether the
 * position was on the picture (edges included).
 */
export function toFrame(px, py, rect) {
  const rx = (px - rect.x) / rect.width;
  const ry = (py - rect.y) / rect.height;
  const inside = rx >= 0 && rx <= 1 && ry >= 0 && ry <= 1;
  return { x: roundCoord(clamp01(rx)), y: roundCoord(clamp01(ry)), inside };
}

/** Normalised frame coordinates → element position (CSS px, same origin as `rect`). */
export function toElement(nx, ny, rect) {
  return { x: rect.x + nx * rect.width, y: rect.y + ny * rect.height };
}

/** A mark's width (fraction of the frame height) in CSS px for this picture rectangle. */
export function widthToPx(width, rect) {
  return width * rect.height;
}

/** Device-pixel size of a canvas that covers cssW×cssH CSS px at devicePixelRatio `dpr`. */
export function backingSize(cssW, cssH, dpr = 1) {
  const ratio = dpr > 0 && Number.isFinite(dpr) ? dpr : 1;
  return { width: Math.max(1, Math.round(cssW * ratio)), height: Math.max(1, Math.round(cssH * ratio)), ratio };
}

export function clamp01(value) {
  return value < 0 ? 0 : value > 1 ? 1 : value;
}

/** Intrinsic size of what an element shows: a video frame, an image, a canvas. */
export function intrinsicSize(el) {
  if (!el) return null;
  if (typeof HTMLVideoElement !== "undefined" && el instanceof HTMLVideoElement) {
    return el.videoWidth > 0 && el.videoHeight > 0 ? { width: el.videoWidth, height: el.videoHeight } : null;
  }
  if (typeof HTMLImageElement !== "undefined" && el instanceof HTMLImageElement) {
    return el.naturalWidth > 0 && el.naturalHeight > 0 ? { width: el.naturalWidth, height: el.naturalHeight } : null;
  }
  if (el.width > 0 && el.height > 0) return { width: el.width, height: el.height };
  return null;
}

/** CSS object-position ("50% 50%", "0px 10%", "left top"…) → fractions, given the free space. */
export function parseObjectPosition(value, freeW, freeH) {
  const keywords = { left: 0, top: 0, center: 0.5, right: 1, bottom: 1 };
  const parts = String(value || "50% 50%").trim().split(/\s+/);
  const one = (token, free) => {
    if (token in keywords) return keywords[token];
    if (token.endsWith("%")) return parseFloat(token) / 100;
    if (token.endsWith("px")) return free ? parseFloat(token) / free : 0.5;
    return 0.5;
  };
  const x = parts[0] ?? "50%";
  const y = parts[1] ?? "50%";
  // "top left" style (vertical keyword first).
  if (x === "top" || x === "bottom" || y === "left" || y === "right") return [one(y, freeW), one(x, freeH)];
  return [one(x, freeW), one(y, freeH)];
}

/**
 * The picture rectangle of a media element, in CSS px relative to `origin` (the overlay canvas's
 * border box), honouring the element's computed object-fit and object-position. `size` overrides
 * the intrinsic size (e.g. the last known frame size while a stream restarts).
 * @returns {{x, y, width, height} | null}
 */
export function pictureRect(mediaEl, origin, size = null) {
  const media = size || intrinsicSize(mediaEl);
  if (!media) return null;
  const box = mediaEl.getBoundingClientRect();
  const base = origin ? origin.getBoundingClientRect() : { left: 0, top: 0 };
  const style = getComputedStyle(mediaEl);
  // The picture is laid out in the content box (borders and padding excluded).
  const bl = parseFloat(style.borderLeftWidth) || 0;
  const bt = parseFloat(style.borderTopWidth) || 0;
  const pl = parseFloat(style.paddingLeft) || 0;
  const pt = parseFloat(style.paddingTop) || 0;
  const contentW = mediaEl.clientWidth - pl - (parseFloat(style.paddingRight) || 0);
  const contentH = mediaEl.clientHeight - pt - (parseFloat(style.paddingBottom) || 0);
  // getBoundingClientRect includes CSS transforms (scale); clientWidth does not.
  const sx = mediaEl.offsetWidth ? box.width / mediaEl.offsetWidth : 1;
  const sy = mediaEl.offsetHeight ? box.height / mediaEl.offsetHeight : 1;
  const fit = style.objectFit || "contain";
  const probe = fitRect(contentW, contentH, media.width, media.height, fit);
  if (!probe) return null;
  const position = parseObjectPosition(style.objectPosition, contentW - probe.width, contentH - probe.height);
  const rect = fitRect(contentW, contentH, media.width, media.height, fit, position);
  return {
    x: box.left - base.left + (bl + pl + rect.x) * sx,
    y: box.top - base.top + (bt + pt + rect.y) * sy,
    width: rect.width * sx,
    height: rect.height * sy,
  };
}
