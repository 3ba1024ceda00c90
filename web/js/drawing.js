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
