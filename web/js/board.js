// The board of a consultation as this page shows it: the marks the server accepted
// (`welcome.annotations` + `annotation` ops, the sender's own ops echoed back), the others'
// laser dots and this page's own, and the freeze state; and how they are drawn, fades included.
// Protocol: docs/architecture.md, "Annotations (telestration), protocol v1 additions".

import { drawPlacedMark, drawPointer, pointerColor } from "./drawing.js";
import { toElement } from "./geometry.js";
import { placementOf } from "./placements.js";

const FADE_OUT_MS = 1000; // a fading mark's last second, alpha 1 → 0
// Laser dot: fully visible as long as it moves and 1.5 s after its last move (a surgeon pausing
// to talk keeps pointing), then fades out.
export const POINTER_HOLD_MS = 1500;
const POINTER_FADE_MS = 400;
const HEX_COLOR = /^#[0-9a-f]{6}$/i;

/** Who drew a visible mark, as the server named them (an own draft: from its accepted copy). */
export function authorName(m) {
  return m.mark.author_name || m.entry?.mark?.author_name || "";
}

/** Mark ids are unique per author only. */
export function keyOf(author, id) {
  return `${author}\u0000${id}`;
}

/** Fade of a mark: 1 until its last second, then linear to 0 (fade_s after its last update). */
function markAlpha(entry, now) {
  if (entry.fadeEndsAt == null) return 1;
  const left = entry.fadeEndsAt - now;
  if (left <= 0) return 0;
  const span = Math.min(FADE_OUT_MS, entry.fadeMs / 2);
  return left >= span ? 1 : left / span;
}

function pointerAlpha(p, now) {
  const age = now - p.at;
  if (age <= POINTER_HOLD_MS) return 1;
  return Math.max(0, 1 - (age - POINTER_HOLD_MS) / POINTER_FADE_MS);
}

export class Board {
  /** @param {import("./room.js").Room} room */
  constructor(room) {
    this.room = room;
    this.marks = new Map(); // key → {mark, fadeEndsAt, fadeMs}
    this.pointers = new Map(); // identity → {x, y, at, color}
    this.localPointer = null;
    this.freeze = { frozen: false, snapshot: null, by: null };
    this.archived = 0; // marks of the previous stream session the surgeon can restore
  }

  /** The marks of a `welcome`: the whole board, replacing what was shown. */
  load(annotations, archived = 0) {
    this.marks.clear();
    this.archived = typeof archived === "number" ? archived : 0;
    const now = performance.now();
    for (const a of Array.isArray(annotations) ? annotations : []) this.store(a, now, true);
  }

  store(a, now, fromWelcome = false) {
    if (!a || typeof a !== "object" || typeof a.id !== "string") return;
    const entry = { mark: a, fadeEndsAt: null, fadeMs: 0 };
    if (typeof a.fade_s === "number" && a.fade_s > 0) {
      entry.fadeMs = a.fade_s * 1000;
      let left = entry.fadeMs;
      if (fromWelcome) {
        // Marks already on the board: what is left of their time (server clock, clamped).
        const updated = Date.parse(a.updated_at);
        if (Number.isFinite(updated)) left = Math.min(entry.fadeMs, Math.max(0, updated + entry.fadeMs - Date.now()));
      }
      entry.fadeEndsAt = now + left;
    }
    this.marks.set(keyOf(a.author, a.id), entry);
  }

  /** Applies an `annotation` op; returns what it did to this page's own marks. */
  applyAnnotation(msg) {
    const op = msg.op;
    const me = this.room.you;
    if ((op === "add" || op === "update") && msg.annotation) {
      const a = msg.annotation;
      this.store(a, performance.now());
      return a.author === me ? { acknowledged: a } : {};
    }
    if ((op === "remove" || op === "undo") && typeof msg.id === "string") {
      // Ids are unique per author: the remover is the author (undo/remove touch own marks only).
      const author = msg.by ?? msg.author;
      this.marks.delete(keyOf(author, msg.id));
      return author === me ? { removed: msg.id } : {};
    }
    if (op === "clear") {
      this.marks.clear();
      return { cleared: true };
    }
    if (op === "archive") {
      // A new stream session: the marks belong to the old picture (restorable, kept in the replay).
      this.marks.clear();
      this.archived = typeof msg.count === "number" ? msg.count : 0;
      return { cleared: true, archived: this.archived };
    }
    if (op === "restore" && Array.isArray(msg.annotations)) {
      const now = performance.now();
      for (const a of msg.annotations) this.store(a, now);
      this.archived = 0;
      return { restored: msg.annotations.length };
    }
    return {};
  }

  /** Applies a `pointer` message of another participant. */
  applyPointer(msg) {
    const now = performance.now();
    if (typeof msg.x !== "number" || typeof msg.y !== "number") {
      const p = this.pointers.get(msg.from);
      // Hidden: fade out from now rather than vanish.
      if (p) p.at = Math.min(p.at, now - POINTER_HOLD_MS);
    } else {
      const color = HEX_COLOR.test(msg.color ?? "") ? msg.color : this._pointerColor(msg.from);
      this.pointers.set(msg.from, { x: msg.x, y: msg.y, at: now, color });
    }
  }

  _pointerColor(identity) {
    const p = (this.room.participants || []).find((x) => x && (x.identity === identity || x === identity));
    const role = (p && typeof p === "object" ? p.role : null) || String(identity).split("-")[0];
    return pointerColor(role);
  }

  /** Drops the dots of participants who left. */
  retainPointers() {
    const present = new Set((this.room.participants || []).map((p) => (typeof p === "string" ? p : p?.identity)));
    for (const id of [...this.pointers.keys()]) if (!present.has(id)) this.pointers.delete(id);
  }

  /** Applies a freeze state (`freeze` message or `welcome.freeze`); returns it normalised. */
  applyFreeze(f) {
    const frozen = f.frozen === true;
    const snapshot = frozen && f.snapshot && typeof f.snapshot === "object" && f.snapshot.id ? f.snapshot : null;
    this.freeze = { frozen, snapshot, by: f.by ?? null };
    return this.freeze;
  }

  /** Whether this page's author has a mark on the board. */
  hasOwnMarks() {
    const me = this.room.you;
    if (me) for (const e of this.marks.values()) if (e.mark.author === me) return true;
    return false;
  }

  /** Own drafts replace the server's copy of the same mark until it has caught up. */
  visibleMarks(now, drafts) {
    const me = this.room.you;
    const out = [];
    for (const [key, e] of this.marks) {
      const alpha = markAlpha(e, now);
      if (alpha <= 0) {
        this.marks.delete(key); // faded out: the server dropped it too
        continue;
      }
      if (e.mark.author === me && drafts.has(e.mark.id)) continue; // our newer local copy
      out.push({ mark: e.mark, alpha, entry: e });
    }
    for (const d of drafts.values()) {
      const e = this.marks.get(keyOf(me, d.mark.id));
      const alpha = e ? markAlpha(e, now) : 1;
      if (alpha > 0) out.push({ mark: d.mark, alpha, entry: e });
    }
    return out;
  }

  /**
   * Draws `marks` (the anchored ones where `placed`, placements.js, puts them) and the laser dots
   * inside `rect` (CSS px units); returns whether a fade is in progress (`animate`) and when the
   * next one starts (`wakeAt`, performance.now() time).
   */
  draw(ctx, rect, marks, now, placed = null) {
    let animate = false;
    let wakeAt = Infinity;
    ctx.save();
    ctx.beginPath();
    ctx.rect(rect.x, rect.y, rect.width, rect.height);
    ctx.clip(); // marks never spill into the letterbox bars
    for (const m of marks) {
      drawPlacedMark(ctx, m.mark, rect, m.alpha, placementOf(placed, m.mark), authorName(m));
      if (m.alpha < 1) animate = true;
      else if (m.entry?.fadeEndsAt != null) wakeAt = Math.min(wakeAt, m.entry.fadeEndsAt - Math.min(FADE_OUT_MS, m.entry.fadeMs / 2));
    }
    const dots = [];
    for (const [from, p] of this.pointers) {
      const a = pointerAlpha(p, now);
      if (a <= 0) {
        this.pointers.delete(from);
        continue;
      }
      dots.push({ p, a });
    }
    if (this.localPointer) {
      const a = pointerAlpha(this.localPointer, now);
      if (a <= 0) this.localPointer = null;
      else dots.push({ p: this.localPointer, a });
    }
    for (const { p, a } of dots) {
      const at = toElement(p.x, p.y, rect);
      drawPointer(ctx, at.x, at.y, p.color, rect, a);
      if (a < 1) animate = true;
      else wakeAt = Math.min(wakeAt, p.at + POINTER_HOLD_MS);
    }
    ctx.restore();
    return { animate, wakeAt };
  }
}
