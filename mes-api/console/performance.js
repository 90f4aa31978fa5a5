// The performance tab: for each production unit a summary row (last day's OEE, the
// 7-day average and its trend, days under target this month, the target) and a chart
// of its availability, performance, quality and OEE over the last 7, 30 or 90 days for
// one shift or the whole day. A day on the chart opens its report; operators enter a
// day report by hand and change a unit's target from here.

import { $, h } from "./dom.js";
import { api, canAnswer, download } from "./api.js";
import { chart, dayLabel, pct } from "./chart.js";
import { openDay, openForm } from "./dayreport.js";
import { targetEditor } from "./targets.js";

// What the tab shows: the period in days back from today, and the shift.
const view = { days: 30, shift: "day", units: [], series: new Map() };
// Units changed since they were drawn (live updates), and the pending redraw.
const stale = new Set();
let redrawing = null;

// A local calendar day as YYYY-MM-DD.
export function isoDay(d) {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

// The period shown: the `days` days before today, and today (once it has a report).
function period() {
  const to = new Date();
  const from = new Date();
  from.setDate(from.getDate() - view.days);
  return { from: isoDay(from), to: isoDay(to) };
}

const TREND = { up: ["▲", "up", "Up against the 7 days before"], down: ["▼", "down", "Down against the 7 days before"], flat: ["▶", "flat", "Flat against the 7 days before"] };

export async function loadPerformance() {
  const panel = $("panel-performance");
  const days = h("select", { id: "perf-days", onchange: (e) => { view.days = Number(e.target.value); loadSeries(); } },
    ...[[7, "Last 7 days"], [30, "Last 30 days"], [90, "Last 90 days"]].map(([v, t]) => h("option", { value: v, selected: view.days === v }, t)));
  const shift = h("select", { id: "perf-shift", onchange: (e) => { view.shift = e.target.value; loadSeries(); } },
    ...[["day", "Whole day"], ["A", "Shift A"], ["B", "Shift B"], ["C", "Shift C"]].map(([v, t]) => h("option", { value: v, selected: view.shift === v }, t)));
  panel.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, "Performance"),
      h("label", { for: "perf-days" }, "Period"), days,
      h("label", { for: "perf-shift" }, "Shift"), shift,
      canAnswer() ? h("button", { type: "button", class: "btn primary", id: "perf-enter", onclick: () => openForm({ units: view.units, onSaved: loadSeries }) }, "Enter a day report") : null,
      h("button", { type: "button", class: "btn", id: "perf-csv", onclick: (e) => { const p = period(); download(`/api/DayReport.csv?${new URLSearchParams(p)}`, e.currentTarget); } }, "Download CSV"),
      h("button", { type: "button", class: "btn", onclick: loadPerformance }, "Refresh")),
    h("p", { class: "hint" }, "OEE = availability × performance × quality (ISO 22400-2), from the day reports stored in the MES. Hover a day for its values; click it to open the day report."),
    h("p", { class: "notice bad", id: "perf-error", role: "alert", hidden: true }),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Performance summary" },
      h("thead", {}, h("tr", {}, ...["Unit", "Last day's OEE", "7-day average", "Trend", "Days under target this month", "OEE target"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", { id: "perf-summary" }))),
    h("div", { id: "perf-charts", class: "charts" }));
  try {
    view.units = await api("GET", "/api/ProductionUnit");
  } catch (e) {
    showError(e.message);
    view.units = [];
  }
  await loadSeries();
}

function showError(text) {
  const error = $("perf-error");
  if (!error) return;
  error.textContent = text;
  error.hidden = !text;
}

// The series of each of `units` for the period and shift, six calls at a time (a plant
// with many units does not queue a hundred calls at once), or null when the period or
// shift changed meanwhile (the newer call draws).
async function fetchSeries(units) {
  const { from, to } = period();
  const shift = view.shift;
  const one = async (u) => {
    try {
      return [u.code, await api("GET", `/api/DayReport/series?${new URLSearchParams({ unit: u.code, from, to, shift })}`)];
    } catch (e) {
      return [u.code, { error: e.message }];
    }
  };
  const answers = [];
  for (let i = 0; i < units.length; i += 6) answers.push(...await Promise.all(units.slice(i, i + 6).map(one)));
  return shift === view.shift && from === period().from ? answers : null;
}

// Loads every unit's series for the period and shift, then draws them.
async function loadSeries() {
  stale.clear();
  const answers = await fetchSeries(view.units);
  if (!answers) return;
  view.series = new Map(answers);
  const failed = answers.find(([, s]) => s.error);
  showError(failed ? `${failed[0]}: ${failed[1].error}` : "");
  render();
}

// Live updates (live.js): a unit whose day reports or targets changed on this server is
// drawn again shortly (changes that come together are drawn once). An open target
// editor would be lost, so the redraw waits until it is saved or cancelled.
export function onUnitChanged(code) {
  if (typeof code !== "string") return;
  stale.add(code);
  scheduleRedraw();
}

function scheduleRedraw() {
  clearTimeout(redrawing);
  redrawing = setTimeout(redrawStale, 250);
}

async function redrawStale() {
  if (!stale.size || $("panel-performance")?.hidden || !$("perf-summary")) return;
  if (document.querySelector("#perf-summary .target-edit")) return;
  // A unit this tab does not know yet (made since it loaded): load the whole tab.
  if ([...stale].some((code) => !view.units.some((u) => u.code === code))) return loadPerformance();
  const units = view.units.filter((u) => stale.has(u.code));
  stale.clear();
  const answers = await fetchSeries(units);
  if (!answers) return;
  for (const [code, series] of answers) view.series.set(code, series);
  render();
}

// Drawn again for the new width when the window is resized (once it settles).
let resizing = null;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => { if (!$("panel-performance")?.hidden && view.series.size) render(); }, 200);
});

function render() {
  const summary = $("perf-summary");
  const charts = $("perf-charts");
  if (!summary || !charts) return;
  summary.replaceChildren(...view.units.map((u) => summaryRow(u, view.series.get(u.code))));
  if (!view.units.length) summary.append(h("tr", {}, h("td", { class: "empty", colspan: 6 }, "No production units yet.")));
  charts.replaceChildren(...view.units.map((u) => unitCard(u, view.series.get(u.code))));
  // Changes that came while a target editor was open.
  if (stale.size) scheduleRedraw();
}

function summaryRow(unit, series) {
  const s = series?.summary ?? {};
  const trend = TREND[s.trend];
  const targetCell = h("td", { class: "target-cell" }, pct(series?.target?.oee ?? unit.target?.oee));
  if (canAnswer()) {
    targetCell.append(" ", h("button", { type: "button", class: "btn small", "aria-label": `Change the targets of ${unit.code}`, onclick: () => {
      targetCell.replaceChildren(targetEditor(series?.target ?? unit.target, unit.code, (saved) => {
        unit.target = saved.target;
        loadSeries();
      }, () => render()));
    } }, "Change"));
  }
  return h("tr", { "data-unit": unit.code },
    h("td", { class: "mono" }, h("a", { href: `#performance/${encodeURIComponent(unit.code)}`, onclick: (e) => { e.preventDefault(); document.querySelector(`.unit-chart[data-unit="${CSS.escape(unit.code)}"]`)?.scrollIntoView({ behavior: "smooth" }); } }, unit.code)),
    h("td", { "data-summary": "last" }, s.last_date ? h("span", { title: s.last_date }, `${pct(s.last_oee)} `, h("span", { class: "hint" }, `(${dayLabel(s.last_date, { day: "numeric", month: "short" })})`)) : "—"),
    h("td", { "data-summary": "avg7" }, pct(s.avg_oee_7d)),
    h("td", { "data-summary": "trend" }, trend ? h("span", { class: `trend ${trend[1]}`, title: trend[2] }, `${trend[0]} ${trend[1]}`) : "—"),
    h("td", { "data-summary": "under" }, series?.target ? String(s.days_under_target_this_month ?? 0) : h("span", { class: "muted", title: "No OEE target set" }, "—")),
    targetCell);
}

function unitCard(unit, series) {
  const head = h("div", { class: "toolbar" },
    h("h3", {}, h("span", { class: "mono" }, unit.code), " ", h("span", { class: "muted" }, unit.name ?? "")));
  if (!series || series.error) {
    return h("section", { class: "card unit-chart", "data-unit": unit.code }, head,
      h("p", { class: "result bad" }, series?.error ?? "Not loaded."));
  }
  const open = (date) => openDay({ unit: unit.code, date, units: view.units, onSaved: loadSeries });
  // The card's inner width: the chart is drawn at the size it is shown.
  const width = ($("perf-charts")?.clientWidth ?? 1000) - 50;
  return h("section", { class: "card unit-chart", "data-unit": unit.code, "aria-label": `Performance of ${unit.code}` }, head, chart(series, open, width));
}
