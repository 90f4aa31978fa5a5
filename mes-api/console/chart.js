// The performance chart: a unit's availability, performance, quality and OEE per day,
// drawn as inline SVG by this file (no chart library, no inline style or script, so the
// page's CSP stays strict). The OEE target is a dashed line, days under it are marked,
// hovering or focusing a day shows its values, and a click (or Enter) on a day opens it.

import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";

// The lines drawn, OEE first (and on top); `cls` picks the colour in style.css.
export const LINES = [
  { key: "availability", label: "Availability", cls: "availability" },
  { key: "performance", label: "Performance", cls: "performance" },
  { key: "quality", label: "Quality", cls: "quality" },
  { key: "oee", label: "OEE", cls: "oee" },
];

// Room for the axis labels (left, bottom) and the target's label (right).
const PAD = { left: 46, right: 70, top: 14, bottom: 30 };

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// A fraction as a percentage with one decimal, or a dash.
export function pct(x) {
  return typeof x === "number" && Number.isFinite(x) ? `${(x * 100).toFixed(1)} %` : "—";
}

// "YYYY-MM-DD" to a date at noon UTC (days count the same in every time zone).
const day = (iso) => Date.parse(`${iso}T12:00:00Z`);
const DAY_MS = 86_400_000;

// "Mon 3 Nov" for a YYYY-MM-DD day.
export function dayLabel(iso, opts = { weekday: "short", day: "numeric", month: "short" }) {
  const t = day(iso);
  return Number.isNaN(t) ? iso : new Date(t).toLocaleDateString(undefined, { ...opts, timeZone: "UTC" });
}

// The chart of `series` (the answer of GET /api/DayReport/series); `onOpen(date)` is
// called when a day is clicked or chosen with Enter. It is drawn for `width` pixels
// (one SVG unit a pixel, so its text keeps its size on a tablet) and scales from there.
export function chart(series, onOpen, width = 1000) {
  const W = Math.round(Math.min(1600, Math.max(360, width)));
  const H = W < 700 ? 240 : 280;
  const points = Array.isArray(series.points) ? series.points : [];
  const target = typeof series.target?.oee === "number" ? series.target.oee : null;
  const first = day(series.from);
  const days = Math.max(1, Math.round((day(series.to) - first) / DAY_MS));
  const top = Math.max(1, ...points.flatMap((p) => LINES.map((l) => p[l.key]).filter((v) => typeof v === "number")));
  const yMax = Math.ceil(top * 10) / 10;
  const x = (iso) => PAD.left + ((day(iso) - first) / DAY_MS / days) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - v / yMax) * (H - PAD.top - PAD.bottom);
  const step = (W - PAD.left - PAD.right) / days;

  const grid = [];
  for (let v = 0; v <= yMax + 1e-9; v += 0.25) {
    grid.push(svg("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      svg("text", { class: "axis", x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, `${Math.round(v * 100)}%`));
  }
  // About six date labels along the bottom, whatever the range.
  const every = Math.max(1, Math.round(days / 6));
  for (let d = 0; d <= days; d += every) {
    const iso = new Date(first + d * DAY_MS).toISOString().slice(0, 10);
    grid.push(svg("text", { class: "axis", x: x(iso), y: H - 10, "text-anchor": "middle" }, dayLabel(iso, { day: "numeric", month: "short" })));
  }

  // A line per indicator, broken where a day has no value.
  const lines = LINES.map((l) => {
    const parts = [];
    let run = [];
    let last = null;
    for (const p of points) {
      const v = p[l.key];
      const gap = last !== null && Math.round((day(p.date) - day(last)) / DAY_MS) > 1;
      if (typeof v !== "number" || gap) { if (run.length) parts.push(run); run = []; }
      if (typeof v === "number") run.push(`${x(p.date).toFixed(1)},${y(v).toFixed(1)}`);
      last = p.date;
    }
    if (run.length) parts.push(run);
    return svg("g", { class: `line ${l.cls}`, "data-line": l.key },
      parts.map((r) => r.length > 1 ? svg("polyline", { points: r.join(" ") }) : null));
  });

  const targetLine = target === null ? null : svg("g", { class: "target", "data-value": target },
    svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(target), y2: y(target) }),
    // Labelled in the right margin, clear of the lines.
    svg("text", { x: W - PAD.right + 6, y: y(target) - 3 }, "Target"),
    svg("text", { x: W - PAD.right + 6, y: y(target) + 11 }, pct(target)));

  // The optional availability, performance and quality targets: thin dashed lines in
  // their indicator's colour.
  const auxTargets = LINES.filter((l) => l.key !== "oee" && typeof series.target?.[l.key] === "number").map((l) =>
    svg("line", { class: `target-aux ${l.cls}`, "data-target": l.key, "data-value": series.target[l.key], x1: PAD.left, x2: W - PAD.right, y1: y(series.target[l.key]), y2: y(series.target[l.key]) },
      svg("title", {}, `${l.label} target ${pct(series.target[l.key])}`)));

  const dots = points.filter((p) => typeof p.oee === "number").map((p) =>
    svg("circle", { class: `point${p.under_target ? " under" : ""}`, "data-date": p.date, cx: x(p.date), cy: y(p.oee), r: p.under_target ? 5 : 3.5 }));

  const tip = h("div", { class: "chart-tip", role: "status", hidden: true });
  const guide = svg("line", { class: "guide", y1: PAD.top, y2: H - PAD.bottom, visibility: "hidden" });
  const show = (p) => {
    guide.setAttribute("x1", x(p.date));
    guide.setAttribute("x2", x(p.date));
    guide.setAttribute("visibility", "visible");
    tip.replaceChildren(
      h("strong", {}, dayLabel(p.date, { weekday: "short", day: "numeric", month: "short", year: "numeric" })),
      h("dl", {}, ...LINES.slice().reverse().flatMap((l) => [h("dt", {}, l.label), h("dd", { "data-value": l.key }, pct(p[l.key]))])),
      p.under_target ? h("p", { class: "under" }, "Under the OEE target") : null,
      h("p", { class: "hint" }, "Click to open the day report"));
    tip.hidden = false;
    // Placed with the CSSOM (allowed by the CSP, unlike a style attribute).
    const share = (x(p.date) - PAD.left) / (W - PAD.left - PAD.right);
    tip.style.left = share > 0.6 ? "" : `${(x(p.date) / W) * 100 + 2}%`;
    tip.style.right = share > 0.6 ? `${(1 - x(p.date) / W) * 100 + 2}%` : "";
  };
  const hide = () => { tip.hidden = true; guide.setAttribute("visibility", "hidden"); };

  // One invisible, focusable column per day with a report: the hover and click area.
  const hits = points.map((p) => svg("rect", {
    class: "hit", "data-date": p.date, x: x(p.date) - step / 2, y: PAD.top, width: Math.max(step, 4), height: H - PAD.top - PAD.bottom,
    tabindex: 0, role: "button",
    "aria-label": `${p.date}: OEE ${pct(p.oee)}, availability ${pct(p.availability)}, performance ${pct(p.performance)}, quality ${pct(p.quality)}${p.under_target ? ", under target" : ""}. Open the day report.`,
    onmouseenter: () => show(p), onfocus: () => show(p), onmouseleave: hide, onblur: hide,
    onclick: () => onOpen(p.date),
    onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onOpen(p.date); } },
  }));

  const drawing = svg("svg", {
    class: "chart", viewBox: `0 0 ${W} ${H}`, role: "group", "data-unit": series.unit, "data-points": points.length,
    "aria-label": `${series.unit}: indicators per day from ${series.from} to ${series.to}`,
  }, grid, auxTargets, targetLine, lines, dots, guide, hits);
  const legend = h("ul", { class: "legend" },
    ...LINES.slice().reverse().map((l) => h("li", { class: l.cls }, l.label)),
    target === null ? null : h("li", { class: "target" }, "OEE target"),
    auxTargets.length ? h("li", { class: "target-aux" }, "A, P, Q targets") : null,
    h("li", { class: "under" }, "Under target"));
  return h("figure", { class: "chart-box" }, drawing, tip,
    points.length ? null : h("p", { class: "chart-empty" }, "No day report stored in this period."), legend);
}
