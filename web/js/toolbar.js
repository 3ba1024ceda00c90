// The annotation toolbar of a page that may draw: tool, colour, width, text size and fade
// buttons (and the current choice of each, which new marks take), undo / clear, freeze /
// snapshot for the lead, and the status line under it. On small screens it folds behind a
// Tools button (app.css decides when; the button is hidden elsewhere).

import { COLORS, FADES, TEXT_SIZES, TOOLS, WIDTHS } from "./drawing.js";
import { msg, setAttr, setText } from "./i18n.js";
import { ANCHORABLE } from "./placements.js";
import { el } from "./ui.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const ICONS = {
  pen: "M4 20c3-1 4-5 7-8s6-6 9-7",
  arrow: "M5 19L19 5M19 5h-8M19 5v8",
  circle: "M12 4a8 7 0 1 0 0.01 0z",
  rect: "M4 6h16v12H4z",
  text: "M5 6h14M12 6v13M9 19h6",
  pointer: "M12 12m-3 0a3 3 0 1 0 6 0a3 3 0 1 0 -6 0M12 3v3M12 18v3M3 12h3M18 12h3",
  undo: "M9 7L4 12l5 5M4 12h10a6 6 0 0 1 0 12",
  clear: "M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13",
  restore: "M4 12a8 8 0 1 0 3-6.2M4 4v5h5",
  freeze: "M8 5v14M16 5v14",
  snapshot: "M4 8h4l2-3h4l2 3h4v11H4zM12 10a3.5 3.5 0 1 0 0.01 0z",
  anchored: "M12 21s-6-5.5-6-10a6 6 0 0 1 12 0c0 4.5-6 10-6 10zM12 11m-2 0a2 2 0 1 0 4 0a2 2 0 1 0 -4 0",
  tools: "M4 7h10M18 7h2M4 17h2M10 17h10M16 5v4M8 15v4",
};

function icon(name) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.classList.add("icon");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", ICONS[name] || "");
  svg.append(path);
  return svg;
}

/** A labelled button with an icon. */
function iconButton(name, label, attrs) {
  const b = el("button", { type: "button", ...attrs });
  const text = el("span", { class: "tool-label", text: label });
  b.append(icon(name), text);
  return { button: b, label: text };
}

export class Toolbar {
  /**
   * @param {import("./annotations.js").AnnotationLayer} layer
   * @param {HTMLElement} [host]  where the buttons go (only on a page that may draw)
   */
  constructor(layer, host) {
    this.layer = layer;
    this.tool = layer.canDraw && layer.page === "surgeon" ? "pen" : null;
    this.color = layer.page === "surgeon" ? COLORS[0].value : COLORS[1].value;
    this.width = WIDTHS[1].value;
    this.textSize = TEXT_SIZES[1].value;
    this.fadeS = null;
    // Marks "on the tissue" follow it as the scope moves (the server tracks them): the surgeon's
    // default; the clinic's marks stay where they are put unless it asks.
    this.anchored = layer.page === "surgeon";
    this.anchoredButton = null;
    this.status = null;
    this.toolButtons = new Map();
    this.colorButtons = new Map();
    this.widthButtons = new Map();
    this.textSizeButtons = new Map();
    if (layer.canDraw && host) this._build(host);
  }

  _build(host) {
    const layer = this.layer;
    const barId = `annotation-toolbar-${layer.page}`;
    const { button: toggle } = iconButton("tools", msg("toolbar.toggle"), {
      class: "tools-toggle",
      "data-testid": "tools-toggle",
      "aria-expanded": "false",
      "aria-controls": barId,
      title: msg("toolbar.toolsTitle"),
    });
    toggle.addEventListener("click", () => {
      const open = host.classList.toggle("open");
      toggle.setAttribute("aria-expanded", String(open));
    });
    const bar = el("div", {
      id: barId,
      class: "annotation-toolbar",
      role: "toolbar",
      "aria-label": msg("toolbar.label"),
      "data-testid": "annotation-toolbar",
    });
    const tools = el("div", { class: "tool-group", role: "group", "aria-label": msg("toolbar.tools") });
    for (const t of TOOLS) {
      const { button } = iconButton(t.id, t.label, { class: "tool", "data-testid": `tool-${t.id}`, "aria-pressed": "false", title: t.title });
      button.addEventListener("click", () => layer.setTool(this.tool === t.id ? null : t.id));
      this.toolButtons.set(t.id, button);
      tools.append(button);
    }
    this.anchoredButton = iconButton("anchored", msg("toolbar.anchored"), {
      class: "tool anchored",
      "data-testid": "anchored",
      "aria-pressed": String(this.anchored),
      title: msg("toolbar.anchored.title"),
    }).button;
    this.anchoredButton.addEventListener("click", () => this.setAnchored(!this.anchored));
    tools.append(this.anchoredButton);

    const colors = this._choices(COLORS, {
      kind: "color",
      buttonClass: "swatch",
      group: { class: "tool-group swatches", label: msg("toolbar.colour") },
      current: this.color,
      pick: (value) => this.setColor(value),
    });
    this.colorButtons = colors.buttons;
    const widths = this._choices(WIDTHS, {
      kind: "width",
      buttonClass: "width",
      group: { class: "tool-group widths", label: msg("toolbar.width") },
      current: this.width,
      pick: (value) => this.setWidth(value),
      sample: true,
    });
    this.widthButtons = widths.buttons;
    // Text size is its own choice: a label stays readable whatever the line width.
    const textSizes = this._choices(
      TEXT_SIZES,
      {
        kind: "text-size",
        buttonClass: "text-size",
        group: { class: "tool-group text-sizes", label: msg("toolbar.textSize") },
        current: this.textSize,
        pick: (value) => this.setTextSize(value),
        glyph: true,
      },
    );
    this.textSizeButtons = textSizes.buttons;

    const fadeId = `annotation-fade-${layer.page}`;
    const fadeSelect = el("select", { id: fadeId, "data-testid": "fade" });
    for (const f of FADES) fadeSelect.append(el("option", { value: f.value, text: f.label }));
    fadeSelect.addEventListener("change", () => {
      this.fadeS = fadeSelect.value ? Number(fadeSelect.value) : null;
    });
    const fade = el("div", { class: "tool-group" }, [
      el("label", { for: fadeId, class: "visually-hidden", text: msg("toolbar.fade") }),
      fadeSelect,
    ]);

    const actions = el("div", { class: "tool-group", role: "group", "aria-label": msg("toolbar.marks") });
    this.undoButton = iconButton("undo", msg("toolbar.undo"), { "data-testid": "undo", title: msg("toolbar.undo.title") }).button;
    this.undoButton.addEventListener("click", () => layer.undo());
    actions.append(this.undoButton);
    if (layer.isLead) {
      this.clearButton = iconButton("clear", msg("toolbar.clear"), { "data-testid": "clear", title: msg("toolbar.clear.title") }).button;
      this.clearButton.addEventListener("click", () => layer.clear());
      const restore = iconButton("restore", msg("marks.restore"), {
        "data-testid": "restore-marks",
        title: msg("marks.restore_title"),
        hidden: "",
      });
      this.restoreButton = restore.button;
      this.restoreButton.addEventListener("click", () => layer.restoreMarks());
      actions.append(this.clearButton, this.restoreButton);
    }
    bar.append(tools, colors.group, widths.group, textSizes.group, fade, actions);

    if (layer.isLead) {
      const picture = el("div", { class: "tool-group", role: "group", "aria-label": msg("toolbar.picture") });
      const freeze = iconButton("freeze", msg("toolbar.freeze"), {
        class: "freeze",
        "data-testid": "freeze",
        "aria-pressed": "false",
        title: msg("toolbar.freeze.title"),
      });
      this.freezeButton = freeze.button;
      this.freezeLabel = freeze.label;
      this.freezeButton.addEventListener("click", () => layer.toggleFreeze());
      this.snapshotButton = iconButton("snapshot", msg("toolbar.snapshot"), {
        "data-testid": "snapshot",
        title: msg("toolbar.snapshot.title"),
      }).button;
      this.snapshotButton.addEventListener("click", () => layer.takeSnapshot());
      picture.append(this.freezeButton, this.snapshotButton);
      bar.append(picture);
    }
    this.status = el("p", { class: "hint annotation-status", "data-testid": "annotation-status", "aria-live": "polite" });
    host.append(toggle, bar, this.status);
    this.update();
  }

  /** A group of buttons, one per choice (`data-<kind>` its id), the current one pressed. */
  _choices(items, { kind, buttonClass, group, current, pick, sample = false, glyph = false }) {
    const node = el("div", { class: group.class, role: "group", "aria-label": group.label });
    const buttons = new Map();
    for (const item of items) {
      const b = el("button", {
        type: "button",
        class: buttonClass,
        "data-testid": `${kind}-${item.id}`,
        [`data-${kind}`]: item.id,
        "aria-label": item.label,
        "aria-pressed": String(item.value === current),
        title: item.label,
      });
      // A line of the width itself, drawn by the stylesheet.
      if (sample) b.append(el("span", { class: "width-sample", "aria-hidden": "true" }));
      // A letter at the size (relative), drawn by the stylesheet.
      if (glyph) b.append(el("span", { class: "text-size-sample", "aria-hidden": "true", text: "A" }));
      b.addEventListener("click", () => pick(item.value));
      buttons.set(item.value, b);
      node.append(b);
    }
    return { group: node, buttons };
  }

  /** Shows `tool` as the chosen one (the layer decides what choosing it does). */
  showTool(tool) {
    this.tool = tool;
    for (const [id, b] of this.toolButtons) b.setAttribute("aria-pressed", String(id === tool));
    if (this.anchoredButton) this.anchoredButton.hidden = !ANCHORABLE.has(tool);
  }

  setAnchored(on) {
    this.anchored = on;
    this.anchoredButton?.setAttribute("aria-pressed", String(on));
  }

  /** Whether a new mark of `tool` is drawn on the tissue. */
  anchors(tool) {
    return this.anchored && ANCHORABLE.has(tool);
  }

  setColor(color) {
    this.color = color;
    for (const [value, b] of this.colorButtons) b.setAttribute("aria-pressed", String(value === color));
  }

  setWidth(width) {
    this.width = width;
    for (const [value, b] of this.widthButtons) b.setAttribute("aria-pressed", String(value === width));
  }

  setTextSize(size) {
    this.textSize = size;
    for (const [value, b] of this.textSizeButtons) b.setAttribute("aria-pressed", String(value === size));
  }

  /** Enables what can be done now: undo with own marks, clear with any, freeze while idle. */
  update() {
    if (!this.undoButton) return;
    const { board, drafts, freezeFrame } = this.layer;
    const drafting = drafts.items.size > 0;
    this.undoButton.disabled = !(drafting || board.hasOwnMarks());
    if (this.clearButton) this.clearButton.disabled = board.marks.size === 0 && !drafting;
    if (this.restoreButton) this.restoreButton.hidden = board.archived === 0;
    if (this.freezeButton) {
      const frozen = board.freeze.frozen;
      const busy = freezeFrame.busy;
      this.freezeButton.setAttribute("aria-pressed", String(frozen));
      this.freezeButton.disabled = busy;
      const label = busy ? (frozen ? "toolbar.resuming" : "toolbar.freezing") : frozen ? "toolbar.resume" : "toolbar.freeze";
      setText(this.freezeLabel, msg(label));
      setAttr(this.freezeButton, "title", msg(frozen ? "toolbar.resume.title" : "toolbar.freeze.title"));
    }
  }

  /** The toolbar's status line: a msg() (or "" to clear). */
  say(text) {
    if (this.status) setText(this.status, text);
  }
}
