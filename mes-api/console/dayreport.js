// A unit's day report in the details dialog: what is stored per shift (the inputs and
// the indicators), and, for operators, a form that enters one shift by hand for plants
// without an MES feed. The form shows the indicators it will store before saving
// (the server computes them the same way, ISO 22400-2), says what is wrong next to
// the field in a sentence, and saves through POST /api/DayReport. A day already sent
// to the chain is read-only: the chain keeps a day report as first written.

import { $, h, toast } from "./dom.js";
import { api, canAnswer } from "./api.js";
import { dayLabel, pct } from "./chart.js";

const SHIFTS = ["A", "B", "C"];

// "2 h 05 min" for seconds.
function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
  const m = Math.round(seconds / 60);
  return m >= 60 ? `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min` : `${m} min`;
}

const num = (x, digits = 0) => (typeof x === "number" && Number.isFinite(x) ? x.toLocaleString(undefined, { maximumFractionDigits: digits }) : "—");

// The stored day of `unit` on `date` (null when none is stored).
async function stored(unit, date) {
  const reports = await api("GET", `/api/DayReport?${new URLSearchParams({ date, unit })}`);
  return Array.isArray(reports) && reports.length ? reports[0] : null;
}

function sentNotice(report) {
  return h("p", { class: "notice", id: "dr-sent" },
    `This day was sent to the chain${report.chain?.state === "delivered" ? "" : " (delivery under way)"}. The chain keeps a day report as first written, so it can no longer be changed here.`);
}

function showDialog(title, ...body) {
  $("detail-title").textContent = title;
  $("detail-body").replaceChildren(...body);
  if (!$("detail").open) $("detail").showModal();
}

// Opens the day report of `unit` on `date`: its shifts as stored, and for operators
// (while the day is not sent) the way to enter or change a shift.
export async function openDay({ unit, date, units, onSaved }) {
  showDialog(`Day report · ${unit} · ${dayLabel(date)}`, h("p", { class: "result busy" }, "Loading…"));
  let report;
  try {
    report = await stored(unit, date);
  } catch (e) {
    showDialog(`Day report · ${unit} · ${dayLabel(date)}`, h("p", { class: "result bad" }, e.message));
    return;
  }
  const shifts = report?.shifts ?? [];
  const label = (s) => h("th", { scope: "row" }, s.shift === "DAY" ? "Day" : `Shift ${s.shift}`);
  const inputs = shifts.map((s) => {
    const i = s.inputs ?? {};
    const down = typeof i.planned_busy_time_s === "number" && typeof i.actual_production_time_s === "number" ? i.planned_busy_time_s - i.actual_production_time_s : null;
    return h("tr", { "data-shift": s.shift }, label(s),
      h("td", {}, duration(i.planned_busy_time_s)), h("td", {}, duration(down)), h("td", {}, num(i.failure_count)),
      h("td", {}, duration(i.repair_time_s)), h("td", {}, num(i.produced_quantity)), h("td", {}, num(i.good_quantity)),
      h("td", {}, typeof i.planned_unit_time_s === "number" ? `${num(i.planned_unit_time_s, 2)} s` : "—"));
  });
  const kpis = shifts.map((s) => {
    const k = s.kpis ?? {};
    return h("tr", { "data-shift": s.shift }, label(s),
      h("td", {}, pct(k.availability)), h("td", {}, pct(k.performance)), h("td", {}, pct(k.quality)),
      h("td", { class: "oee", "data-kpi": "oee" }, pct(k.oee)), h("td", {}, duration(k.mtbf_s)), h("td", {}, duration(k.mttr_s)),
      h("td", {}, duration(k.production_time_s)));
  });
  const grid = (aria, head, rows) => h("div", { class: "table-wrap" }, h("table", { class: "compact", "aria-label": aria },
    h("thead", {}, h("tr", {}, h("td", {}), ...head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows)));
  const table = shifts.length
    ? h("div", { class: "day-tables" },
      h("h3", {}, "Indicators"),
      grid(`Day report of ${unit} for ${date}`, ["Availability", "Performance", "Quality", "OEE", "MTBF", "MTTR", "Production time"], kpis),
      h("h3", {}, "Inputs"),
      grid(`Inputs of ${unit} for ${date}`, ["Planned", "Downtime", "Failures", "Repair", "Produced", "Good", "Ideal cycle"], inputs))
    : h("p", { class: "empty" }, "No day report is stored for this day.");
  const actions = [];
  if (report?.enqueued) actions.push(sentNotice(report));
  else if (canAnswer()) {
    actions.push(h("div", { class: "row" }, ...SHIFTS.map((s) => h("button", {
      type: "button", class: "btn small", "data-enter": s,
      onclick: () => openForm({ unit, date, shift: s, units, onSaved }),
    }, report?.shifts?.some((x) => x.shift === s) ? `Change shift ${s}` : `Enter shift ${s}`))));
  }
  showDialog(`Day report · ${unit} · ${dayLabel(date, { weekday: "short", day: "numeric", month: "short", year: "numeric" })}`,
    report ? h("p", { class: "hint" }, `Flow id ${report.report_id}`) : null, table, ...actions);
}

// The form's fields: id suffix, label, unit, what it means, and the body field it fills.
const FIELDS = [
  ["planned", "Planned time", "min", "Time the unit was planned to produce in this shift"],
  ["downtime", "Downtime", "min", "Planned time the unit did not produce (failures, changeovers, waiting)"],
  ["failures", "Failures", "count", "How many times the unit failed"],
  ["repair", "Repair time", "min", "Time spent repairing those failures"],
  ["produced", "Produced", "parts", "Parts produced, good and bad"],
  ["good", "Good", "parts", "Parts that passed quality"],
  ["cycle", "Ideal cycle time", "s", "Planned time for one part at the unit's rated speed"],
];

// Reads and checks the form: the values, or the sentence for each field that is wrong.
export function check(values, date) {
  const errors = {};
  const v = {};
  const NAMES = { planned: "the planned time", downtime: "the downtime", failures: "the number of failures", repair: "the repair time", produced: "the parts produced", good: "the good parts", cycle: "the ideal cycle time" };
  for (const [key, , unit] of FIELDS) {
    const text = String(values[key] ?? "").trim().replace(",", ".");
    if (!text) { errors[key] = `Enter ${NAMES[key]}${unit === "min" ? ", in minutes" : unit === "s" ? ", in seconds" : ""}.`; continue; }
    const n = Number(text);
    if (!Number.isFinite(n) || n < 0) { errors[key] = `${NAMES[key][0].toUpperCase()}${NAMES[key].slice(1)} must be a number, 0 or more.`; continue; }
    v[key] = n;
  }
  if (v.planned !== undefined && v.planned > 1440) errors.planned = "A shift cannot plan more than 24 hours (1440 minutes).";
  if (v.repair !== undefined && v.repair > 1440) errors.repair = "The repair time cannot be more than 24 hours (1440 minutes).";
  if (v.cycle !== undefined && v.cycle > 86400) errors.cycle = "The ideal cycle time cannot be more than a day (86400 seconds).";
  if (v.cycle === 0) errors.cycle = "The ideal cycle time must be more than 0 seconds.";
  if (v.failures !== undefined && !Number.isInteger(v.failures)) errors.failures = "Failures are counted in whole numbers.";
  if (v.downtime !== undefined && v.planned !== undefined && !errors.planned && v.downtime > v.planned) errors.downtime = `Downtime cannot be longer than the planned time (${num(v.planned, 1)} minutes).`;
  if (v.good !== undefined && v.produced !== undefined && v.good > v.produced) errors.good = `Good parts cannot be more than the parts produced (${num(v.produced, 2)}).`;
  if (!/^\d{4}-\d{2}-\d{2}$/.test(String(date ?? ""))) errors.date = "Pick the day the report is for.";
  else {
    const tomorrow = new Date();
    tomorrow.setDate(tomorrow.getDate() + 1);
    if (date < "2000-01-01") errors.date = "The day cannot be before 2000.";
    else if (date > tomorrow.toISOString().slice(0, 10)) errors.date = "The day has not begun yet.";
  }
  return { values: v, errors };
}

// The indicators the server will store for these inputs (mes-codec's Kpis::compute).
export function indicators(v) {
  const pbt = v.planned * 60;
  const apt = (v.planned - v.downtime) * 60;
  const ratio = (a, b) => (b > 0 && a >= 0 ? a / b : null);
  const availability = ratio(apt, pbt);
  const performance = ratio(v.cycle * v.produced, apt);
  const quality = ratio(v.good, v.produced);
  const oee = availability !== null && performance !== null && quality !== null ? availability * performance * quality : null;
  return {
    availability, performance, quality, oee,
    mtbf_s: ratio(apt, v.failures + 1), mttr_s: ratio(v.repair * 60, v.failures), production_time_s: apt,
  };
}

// The body of POST /api/DayReport for one shift.
function body(unit, date, shift, v) {
  return {
    unit, date, shifts: { [shift]: {
      planned_busy_time_s: v.planned * 60,
      actual_production_time_s: (v.planned - v.downtime) * 60,
      failure_count: v.failures,
      repair_time_s: v.repair * 60,
      produced_quantity: v.produced,
      good_quantity: v.good,
      planned_unit_time_s: v.cycle,
    } },
  };
}

// A stored shift's inputs as the form's values (minutes where the form has minutes).
function formValues(inputs) {
  const i = inputs ?? {};
  const min = (s) => (typeof s === "number" ? String(Math.round((s / 60) * 100) / 100) : "");
  const plain = (x) => (typeof x === "number" ? String(x) : "");
  return {
    planned: min(i.planned_busy_time_s),
    downtime: typeof i.planned_busy_time_s === "number" && typeof i.actual_production_time_s === "number" ? min(i.planned_busy_time_s - i.actual_production_time_s) : "",
    failures: plain(i.failure_count), repair: min(i.repair_time_s), produced: plain(i.produced_quantity),
    good: plain(i.good_quantity), cycle: plain(i.planned_unit_time_s),
  };
}

// Opens the form for one shift of a unit's day (by default the first unit, today and
// shift A); `onSaved()` after a report was stored.
export function openForm({ unit, date, shift = "A", units = [], onSaved = () => {} }) {
  if (!canAnswer()) return;
  const today = new Date();
  const isoToday = `${today.getFullYear()}-${String(today.getMonth() + 1).padStart(2, "0")}-${String(today.getDate()).padStart(2, "0")}`;
  const codes = units.map((u) => u.code);
  if (unit && !codes.includes(unit)) codes.unshift(unit);
  const unitSelect = h("select", { id: "dr-unit", "aria-describedby": "dr-unit-error" }, ...codes.map((c) => h("option", { value: c, selected: c === unit }, c)));
  const dateInput = h("input", { type: "date", id: "dr-date", value: date ?? isoToday, max: isoToday, required: true, "aria-describedby": "dr-date-error" });
  const shiftSelect = h("select", { id: "dr-shift" }, ...SHIFTS.map((s) => h("option", { value: s, selected: s === shift }, `Shift ${s}`)));
  const inputs = {};
  const errors = {};
  const fields = FIELDS.map(([key, label, unitName, help]) => {
    inputs[key] = h("input", { type: "text", inputmode: "decimal", id: `dr-${key}`, autocomplete: "off", "aria-describedby": `dr-${key}-help dr-${key}-error`, size: 8 });
    errors[key] = h("p", { class: "field-error", id: `dr-${key}-error`, role: "alert" });
    return h("div", { class: "field", "data-field": key },
      h("label", { for: `dr-${key}` }, label, " ", h("span", { class: "unit" }, `(${unitName})`)), inputs[key],
      h("p", { class: "hint", id: `dr-${key}-help` }, help), errors[key]);
  });
  errors.date = h("p", { class: "field-error", id: "dr-date-error", role: "alert" });
  const computed = h("dl", { class: "kpis", id: "dr-kpis", "aria-live": "polite" });
  const warning = h("p", { class: "hint warn" });
  const storedTitle = h("h3", {}, "What will be stored");
  const status = h("div", { id: "dr-status" });
  const result = h("p", { class: "result", id: "dr-result", role: "status" });
  const save = h("button", { type: "submit", class: "btn primary", id: "dr-save" }, "Save the day report");
  const form = h("form", { class: "day-form", id: "dr-form", novalidate: true },
    h("div", { class: "row head-fields" },
      h("div", { class: "field" }, h("label", { for: "dr-unit" }, "Unit"), unitSelect),
      h("div", { class: "field" }, h("label", { for: "dr-date" }, "Day"), dateInput, errors.date),
      h("div", { class: "field" }, h("label", { for: "dr-shift" }, "Shift"), shiftSelect)),
    status,
    h("div", { class: "fields-grid" }, fields),
    storedTitle, computed, warning,
    h("div", { class: "row" }, save, h("button", { type: "button", class: "btn ghost", onclick: () => $("detail").close() }, "Cancel")),
    result);

  let readOnly = false;
  let shown = false; // whether sentences are shown yet (after the first Save, or per field once left)
  const touched = new Set();
  const values = () => Object.fromEntries(FIELDS.map(([key]) => [key, inputs[key].value]));

  const update = () => {
    const { values: v, errors: problems } = check(values(), dateInput.value);
    for (const key of [...FIELDS.map((f) => f[0]), "date"]) {
      const text = shown || touched.has(key) ? problems[key] ?? "" : "";
      errors[key].textContent = text;
      const input = key === "date" ? dateInput : inputs[key];
      if (text) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
    }
    const complete = FIELDS.every(([key]) => v[key] !== undefined) && !Object.keys(problems).some((k) => k !== "date");
    const k = complete ? indicators(v) : null;
    const item = (key, label, text) => h("div", {}, h("dt", {}, label), h("dd", { "data-kpi": key }, text));
    computed.replaceChildren(
      item("availability", "Availability", k ? pct(k.availability) : "—"),
      item("performance", "Performance", k ? pct(k.performance) : "—"),
      item("quality", "Quality", k ? pct(k.quality) : "—"),
      item("oee", "OEE", k ? pct(k.oee) : "—"),
      item("mtbf", "MTBF", k ? duration(k.mtbf_s) : "—"),
      item("mttr", "MTTR", k ? (k.mttr_s === null ? "— (no failures)" : duration(k.mttr_s)) : "—"),
      item("production_time", "Production time", k ? duration(k.production_time_s) : "—"));
    // "Nothing was saved" goes once every value is right again.
    if (!Object.keys(problems).length && result.className === "result bad" && result.dataset.from === "check") result.textContent = "";
    warning.textContent = k && k.performance > 1 ? "Performance is above 100 %: faster than the ideal cycle time. Check the counts and the cycle time." : "";
    return { v, problems };
  };

  // Loads what is stored for the unit, day and shift: fills the form and makes it
  // read-only when the day was sent to the chain.
  let loading = 0;
  const load = async () => {
    const mine = ++loading;
    form.dataset.state = "loading";
    // Nothing is typed into the form until it holds what is stored.
    for (const [key] of FIELDS) inputs[key].disabled = true;
    save.disabled = true;
    status.replaceChildren(h("p", { class: "result busy" }, "Loading what is stored…"));
    let report = null;
    try {
      if (/^\d{4}-\d{2}-\d{2}$/.test(dateInput.value)) report = await stored(unitSelect.value, dateInput.value);
    } catch (e) {
      if (mine === loading) {
        // The server still refuses a day already sent: the form stays usable.
        status.replaceChildren(h("p", { class: "result bad" }, `What is stored could not be read: ${e.message}`));
        for (const [key] of FIELDS) inputs[key].disabled = false;
        save.disabled = false;
        form.dataset.state = "error";
      }
      return;
    }
    if (mine !== loading) return;
    const shiftRow = report?.shifts?.find((s) => s.shift === shiftSelect.value);
    const filled = formValues(shiftRow?.inputs);
    for (const [key] of FIELDS) inputs[key].value = filled[key];
    readOnly = Boolean(report?.enqueued);
    for (const [key] of FIELDS) inputs[key].disabled = readOnly;
    save.hidden = readOnly;
    save.disabled = false;
    storedTitle.textContent = readOnly ? "What the chain has" : "What will be stored";
    form.dataset.state = readOnly ? "sent" : "ready";
    status.replaceChildren(readOnly ? sentNotice(report)
      : h("p", { class: "hint" }, shiftRow ? `Shift ${shiftSelect.value} of this day is stored: saving replaces it.` : `Nothing is stored for shift ${shiftSelect.value} of this day yet.`));
    shown = false;
    touched.clear();
    update();
  };

  for (const [key] of FIELDS) {
    inputs[key].addEventListener("input", update);
    inputs[key].addEventListener("blur", () => { if (inputs[key].value.trim()) touched.add(key); update(); });
  }
  for (const el of [unitSelect, dateInput, shiftSelect]) el.addEventListener("change", () => { result.textContent = ""; load(); });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (readOnly) return;
    shown = true;
    const { v, problems } = update();
    const wrong = Object.keys(problems);
    if (wrong.length) {
      result.className = "result bad";
      result.dataset.from = "check";
      result.textContent = wrong.length === 1 ? "One value needs a look: nothing was saved." : `${wrong.length} values need a look: nothing was saved.`;
      (wrong[0] === "date" ? dateInput : inputs[wrong[0]]).focus();
      return;
    }
    const unitCode = unitSelect.value;
    const day = dateInput.value;
    const s = shiftSelect.value;
    save.disabled = true;
    result.className = "result busy";
    result.dataset.from = "server";
    result.textContent = "Saving…";
    try {
      const report = await api("POST", "/api/DayReport", body(unitCode, day, s, v));
      const oee = report.shifts?.find((x) => x.shift === "DAY")?.kpis?.oee;
      result.className = "result ok";
      result.textContent = `Saved: ${unitCode}, ${day}, shift ${s}. The day's OEE is now ${pct(oee)}.`;
      toast(`Day report saved: ${unitCode} ${day} shift ${s}.`);
      onSaved({ unit: unitCode, date: day, shift: s });
    } catch (err) {
      result.className = "result bad";
      result.textContent = err.message;
    } finally {
      save.disabled = false;
    }
  });

  showDialog("Enter a day report", h("p", { class: "hint" }, "One shift at a time. The whole day is computed from the shifts stored."), form);
  load().then(() => { if (!readOnly) inputs.planned.focus(); });
}
