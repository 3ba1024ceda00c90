// How a mark and a laser dot look, shared by the live pages and the replay player (which must
// not load the input or toolbar code): the tools, colours, widths and fades offered, and the
// drawing itself onto a 2-D context.
//
// Sizes follow the frame height like the burned-in rendition (relay/overlay.py): line width =
// width × picture height, arrow head 4 widths (≥ 2 % of the height), text cap height `size` ×
// picture height (6 widths for marks without a size).

import { toElement } from "./geometry.js";
import { msg } from "./i18n.js";

// Labels are catalogue messages (i18n.js msg()), written in the page's language where shown.
export const TOOLS = ["pen", "arrow", "circle", "rect", "text", "pointer"].map((id) => ({
  id,
  label: msg(`tool.${id}`),
  title: msg(`tool.${id}.title`),
}));

// High contrast on red/pink mucosa: no reds.
export const COLORS = [
  { id: "green", value: "#00e676" },
  { id: "yellow", value: "#ffea00" },
  { id: "cyan", value: "#00e5ff" },
  { id: "blue", value: "#2979ff" },
  { id: "magenta", value: "#ff40ff" },
  { id: "white", value: "#ffffff" },
].map((c) => ({ ...c, label: msg(`color.${c.id}`) }));

export const WIDTHS = [
  { id: "thin", value: 0.004 },
  { id: "medium", value: 0.008 },
  { id: "thick", value: 0.016 },
].map((w) => ({ ...w, label: msg(`width.${w.id}`) }));

// Text cap height as a fraction of the picture height (a mark's `size`); labels of marks
// without one (older logs) are 6 line widths tall.
export const TEXT_SIZES = [
  { id: "small", value: 0.03, label: msg("toolbar.textSmall") },
  { id: "medium", value: 0.05, label: msg("toolbar.textMedium") },
  { id: "large", value: 0.08, label: msg("toolbar.textLarge") },
];
const TEXT_CAP_WIDTHS = 6;

export const FADES = [
  { value: "", label: msg("fade.keep") },
  ...[5, 10, 30].map((n) => ({ value: String(n), label: msg("fade.seconds", { n }) })),
  { value: "60", label: msg("fade.minutes", { n: 1 }) },
];

// A page that sends no colour (older pages): by role, never red (invisible on mucosa).
const POINTER_COLORS = { surgeon: "#00e676", clinic: "#00e5ff", observer: "#ffea00", admin: "#00e676" };

/** Laser-dot colour of a role (the same on every page). */
export function pointerColor(role) {
  return POINTER_COLORS[role] || POINTER_COLORS.observer;
}

let capHeightRatio = null;

/** Cap height of the canvas sans-serif font as a fraction of its font size (measured once). */
function capRatio(ctx) {
  if (capHeightRatio == null) {
    ctx.save();
    ctx.font = "100px sans-serif";
    const m = ctx.measureText("H");
    ctx.restore();
    const ascent = m.actualBoundingBoxAscent;
    capHeightRatio = ascent > 0 ? ascent / 100 : 0.72;
  }
  return capHeightRatio;
}

/**
 * Draws one mark (annotation JSON) onto a 2-D context whose units are CSS px, with `rect` the
 * picture rectangle in those units.
 */
export function drawMark(ctx, mark, rect, alpha = 1) {
  const points = Array.isArray(mark.points) ? mark.points : [];
  if (!points.length || alpha <= 0) return;
  const lw = Math.max(1, mark.width * rect.height);
  const pts = points.map(([x, y]) => toElement(x, y, rect));
  ctx.save();
  ctx.globalAlpha = Math.min(1, alpha);
  ctx.strokeStyle = mark.color;
  ctx.fillStyle = mark.color;
  ctx.lineWidth = lw;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  switch (mark.tool) {
    case "pen":
      if (pts.length === 1) {
        ctx.beginPath();
        ctx.arc(pts[0].x, pts[0].y, lw / 2, 0, Math.PI * 2);
        ctx.fill();
      } else {
        ctx.beginPath();
        ctx.moveTo(pts[0].x, pts[0].y);
        for (let i = 1; i < pts.length; i += 1) ctx.lineTo(pts[i].x, pts[i].y);
        ctx.stroke();
      }
      break;
    case "arrow": {
      if (pts.length < 2) break;
      const [tail, head] = pts;
      const dx = head.x - tail.x;
      const dy = head.y - tail.y;
      const length = Math.hypot(dx, dy);
      ctx.beginPath();
      ctx.moveTo(tail.x, tail.y);
      ctx.lineTo(head.x, head.y);
      if (length > 0) {
        // Open head of two strokes at ±45°, like cv2.arrowedLine in the burned-in rendition.
        const headLen = Math.min(0.5 * length, Math.max(4 * lw, 0.02 * rect.height));
        const angle = Math.atan2(tail.y - head.y, tail.x - head.x);
        for (const side of [Math.PI / 4, -Math.PI / 4]) {
          ctx.moveTo(head.x, head.y);
          ctx.lineTo(head.x + headLen * Math.cos(angle + side), head.y + headLen * Math.sin(angle + side));
        }
      }
      ctx.stroke();
      break;
    }
    case "circle": {
      if (pts.length < 2) break;
      const [a, b] = pts;
      ctx.beginPath();
      ctx.ellipse((a.x + b.x) / 2, (a.y + b.y) / 2, Math.abs(b.x - a.x) / 2, Math.abs(b.y - a.y) / 2, 0, 0, Math.PI * 2);
      ctx.stroke();
      break;
    }
    case "rect": {
      if (pts.length < 2) break;
      const [a, b] = pts;
      ctx.lineJoin = "miter";
      ctx.strokeRect(Math.min(a.x, b.x), Math.min(a.y, b.y), Math.abs(b.x - a.x), Math.abs(b.y - a.y));
      break;
    }
    case "text": {
      const text = String(mark.text ?? "");
      if (!text) break;
      const capHeight = typeof mark.size === "number" ? mark.size * rect.height : TEXT_CAP_WIDTHS * lw;
      ctx.font = `${(capHeight / capRatio(ctx)).toFixed(2)}px sans-serif`;
      ctx.textBaseline = "alphabetic";
      ctx.textAlign = "left";
      // A thin dark outline keeps light text legible on bright tissue; the anchor (left end of
      // the baseline) is exactly the point the author clicked.
      ctx.lineWidth = Math.max(1, capHeight * 0.12);
      ctx.strokeStyle = "rgba(0, 0, 0, 0.55)";
      ctx.strokeText(text, pts[0].x, pts[0].y);
      ctx.fillText(text, pts[0].x, pts[0].y);
      break;
    }
    default:
      break; // unknown tool from a newer server: not drawn
  }
  ctx.restore();
}

/**
 * Draws a laser pointer: a ring in the author's colour between dark outlines around a white
 * core, 3 % of the picture height (≥ 10 px) — it stands out on red mucosa and on white light.
 */
export function drawPointer(ctx, x, y, color, rect, alpha) {
  if (alpha <= 0) return;
  const r = Math.max(10, 0.03 * rect.height);
  const ring = r * 0.32;
  ctx.save();
  ctx.globalAlpha = alpha;
  ctx.beginPath();
  ctx.arc(x, y, r, 0, Math.PI * 2);
  ctx.lineWidth = ring + Math.max(3, r * 0.16);
  ctx.strokeStyle = "rgba(0, 0, 0, 0.85)";
  ctx.stroke();
  ctx.lineWidth = ring;
  ctx.strokeStyle = color;
  ctx.stroke();
  ctx.beginPath();
  ctx.arc(x, y, r * 0.3, 0, Math.PI * 2);
  ctx.fillStyle = "#ffffff";
  ctx.fill();
  ctx.lineWidth = Math.max(2, r * 0.1);
  ctx.strokeStyle = "rgba(0, 0, 0, 0.85)";
  ctx.stroke();
  ctx.restore();
}

const TAG_FONT_PX = 12;
const TAG_PAD_PX = 3;

/**
 * A small dark tag with `text`, placed by `place(width, height)` → {x, y} (its top-left corner).
 */
function drawTag(ctx, text, alpha, place) {
  ctx.save();
  ctx.globalAlpha = Math.min(1, alpha);
  ctx.font = `${TAG_FONT_PX}px sans-serif`;
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  const width = ctx.measureText(text).width + 2 * TAG_PAD_PX;
  const height = TAG_FONT_PX + 2 * TAG_PAD_PX;
  const { x, y } = place(width, height);
  ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
  ctx.fillRect(x, y, width, height);
  ctx.fillStyle = "#ffffff";
  ctx.fillText(text, x + TAG_PAD_PX, y + TAG_PAD_PX);
  ctx.restore();
}

/**
 * The author's name in a small dark tag beside the mark, so everyone sees who drew what;
 * nothing for a mark without a name.
 */
export function drawAuthor(ctx, mark, rect, name, alpha = 1) {
  const first = Array.isArray(mark.points) ? mark.points[0] : null;
  if (!name || !first || alpha <= 0) return;
  const at = toElement(first[0], first[1], rect);
  const lw = Math.max(1, mark.width * rect.height);
  // Up and to the left of where the mark starts (strokes mostly run on from there), inside the
  // picture; above a text label's capitals.
  drawTag(ctx, name, alpha, (width, height) => {
    const cap = mark.tool === "text" ? (mark.size ?? 6 * mark.width) * rect.height : 0;
    return {
      x: Math.max(rect.x, mark.tool === "text" ? at.x : at.x - width - lw),
      y: Math.max(rect.y, at.y - height - lw - cap),
    };
  });
}

// An anchored mark whose tissue the server lost (occlusion, blur, the scope out): grey, at its
// last confident place, saying so — never shown confidently in the wrong place.
const LOST_COLOR = "#9e9e9e";
const LOST_TEXT = msg("anchor.lost");

/** `[x, y]` (normalised) through a placement matrix [a, b, c, d, e, f]. */
export function placePoint([x, y], [a, b, c, d, e, f]) {
  return [a * x + b * y + c, d * x + e * y + f];
}

/**
 * Draws a mark with its author tag where its `placement` ({m, lost}: relay/tracker.py's
 * normalised 2×3 matrix) puts it; as sent without one. Lines keep their width as the tissue
 * zooms (only the geometry follows it).
 */
export function drawPlacedMark(ctx, mark, rect, alpha, placement, name) {
  const points = Array.isArray(mark.points) ? mark.points : [];
  if (!placement || !points.length) {
    drawMark(ctx, mark, rect, alpha);
    drawAuthor(ctx, mark, rect, name, alpha);
    return;
  }
  const [a, b, c, d, e, f] = placement.m;
  const { x, y, width: w, height: h } = rect;
  const scale = Math.sqrt(Math.abs(a * e - b * d)) || 1;
  const shown = { ...mark, width: mark.width / scale, ...(placement.lost ? { color: LOST_COLOR } : {}) };
  ctx.save();
  // The matrix in CSS px: p' = R(M(R⁻¹(p))), R the picture rectangle's normalised → px map.
  ctx.transform(a, (d * h) / w, (b * w) / h, e, x + w * c - a * x - ((b * w) / h) * y, y + h * f - ((d * h) / w) * x - e * y);
  drawMark(ctx, shown, rect, alpha);
  ctx.restore();
  const first = placePoint(points[0], placement.m);
  drawAuthor(ctx, { ...mark, points: [first] }, rect, name, alpha);
  if (!placement.lost || alpha <= 0) return;
  const at = toElement(first[0], first[1], rect);
  const below = Math.max(1, mark.width * rect.height) + 2;
  drawTag(ctx, LOST_TEXT, alpha, (width, height) => ({
    x: Math.min(Math.max(rect.x, at.x - width / 2), rect.x + rect.width - width),
    y: Math.min(at.y + below, rect.y + rect.height - height),
  }));
}
