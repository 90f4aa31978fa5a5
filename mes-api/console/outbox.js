// The day reports & outbox tab: a day's stored reports (and, for operators, running
// the daily report of that day), the outbox's messages to the chain with their
// delivery, and the relay's view of each record topic.

import { $, badge, h, isoCell, sentence } from "./dom.js";
import { api, canAnswer, download } from "./api.js";
import { chainOf, deliveryCell, isNews, seenRows } from "./delivery.js";

const OUTBOX_LIMIT = 200;

// The tab's filters and what it lists; `depth` is the outbox's totals by status, once
// the event stream has sent them.
const outbox = { status: "", dayOnly: false, rows: [], depth: null, date: "", reports: [] };

// When the relay's state was last read for an outbox event.
let relayLoaded = null;

// What a chain message does, from its dedup key (the event stream's rows carry no
// payload) and, when loaded, its payload.
export function describe(r) {
  const key = String(r.dedup_key ?? "");
  let m;
  if ((m = /^unit:([^:]+):record-type$/.exec(key))) return `Record type ProductionUnit (ahead of unit ${m[1]})`;
  if ((m = /^unit:([^:]+):record$/.exec(key))) return `Unit ${m[1]}: its chain record`;
  if ((m = /^unit:([^:]+):reporter:/.exec(key))) return `Unit ${m[1]}: the MES may report on it`;
  if ((m = /^unit:([^:]+):update:/.exec(key))) {
    const props = Array.isArray(r.payload?.properties) ? r.payload.properties : [];
    const value = (name) => props.find((p) => p.name === name)?.value;
    const what = props.length ? `: status ${value("status") ?? "—"}, process ${value("process_name") ?? "none"}` : ": status and process";
    return `Unit ${m[1]}${what}`;
  }
  if ((m = /^day-report:([^:]+):record-type$/.exec(key))) return `Record type DayReport (ahead of ${m[1]}'s reports)`;
  if ((m = /^day-report:([^:]+):(\d{4}-\d{2}-\d{2})$/.exec(key))) return `Day report of ${m[1]} for ${m[2]}`;
  return `${r.topic ?? "Message"} ${key}`;
}

function outboxAnswer(r) {
  if (r.status === "discarded") return h("span", { class: "muted" }, `Discarded by ${r.discarded_by ?? "an operator"}: ${sentence(r.discard_reason || "no reason given")}`);
  if (r.status === "failed") return h("span", { class: "result bad" }, `Refused for good: ${sentence(r.last_error || "no reason given")}`);
  if (r.status === "done") return r.chain_message ? h("span", {}, sentence(r.chain_message)) : h("span", { class: "muted" }, "Delivered.");
  if (r.last_error) {
    const when = r.next_attempt_at ? ` Next try ${new Date(r.next_attempt_at).toLocaleTimeString()}.` : "";
    return h("span", { class: "result" }, `Not delivered yet (attempt ${r.attempts}): ${sentence(r.last_error)}${when}`);
  }
  return h("span", { class: "muted" }, r.status === "in_flight" ? "Being sent…" : "Waiting to be sent.");
}

function yesterday() {
  const d = new Date();
  d.setDate(d.getDate() - 1);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

export function loadOutbox() {
  const o = outbox;
  if (!o.date) o.date = yesterday();
  const panel = $("panel-outbox");
  const filter = h("select", { id: "outbox-status", onchange: (e) => { o.status = e.target.value; loadOutboxRows(); } },
    ...[["", "All"], ["pending", "Pending"], ["in_flight", "Sending"], ["done", "Delivered"], ["failed", "Failed"], ["discarded", "Discarded"]].map(([v, t]) => h("option", { value: v, selected: o.status === v }, t)));
  const dayOnly = h("input", { type: "checkbox", id: "outbox-day", checked: o.dayOnly, onchange: (e) => { o.dayOnly = e.target.checked; renderOutbox(); } });
  const date = h("input", { type: "date", id: "report-date", value: o.date, required: true, onchange: (e) => { o.date = e.target.value; loadDayReports(); } });
  panel.replaceChildren(
    h("section", { "aria-labelledby": "reports-title" },
      h("div", { class: "toolbar" }, h("h2", { id: "reports-title" }, "Day reports"),
        h("label", { for: "report-date" }, "Day"), date,
        canAnswer() ? h("button", { type: "button", class: "btn primary", id: "report-run", onclick: runReport }, "Run the daily report for this day") : null,
        h("button", { type: "button", class: "btn", id: "reports-csv", onclick: (e) => { if (o.date) download(`/api/DayReport.csv?${new URLSearchParams({ from: o.date, to: o.date })}`, e.currentTarget); } }, "Download CSV"),
        h("button", { type: "button", class: "btn", onclick: loadDayReports }, "Refresh")),
      h("p", { class: "result", id: "report-result", role: "status" }),
      h("p", { class: "notice bad", id: "reports-error", role: "alert", hidden: true }),
      h("div", { class: "table-wrap" }, h("table", { "aria-label": "Day reports of the day" },
        h("thead", {}, h("tr", {}, ...["Unit", "Shifts", "OEE (day)", ["Flow id", "opt"], "Chain delivery"].map((c) => Array.isArray(c) ? h("th", { scope: "col", class: c[1] }, c[0]) : h("th", { scope: "col" }, c)))),
        h("tbody", { id: "reports-rows" })))),
    h("section", { "aria-labelledby": "outbox-title", class: "spaced" },
      h("div", { class: "toolbar" }, h("h2", { id: "outbox-title" }, "Outbox: messages to the chain"),
        h("label", { for: "outbox-status" }, "Status"), filter,
        h("label", {}, dayOnly, " Day reports only"),
        h("button", { type: "button", class: "btn", id: "outbox-csv", onclick: (e) => download("/api/outbox.csv", e.currentTarget) }, "Download CSV"),
        h("button", { type: "button", class: "btn", onclick: loadOutboxRows }, "Refresh")),
      h("div", { class: "stats", id: "outbox-stats" }),
      h("div", { id: "outbox-relay", role: "status" }),
      h("p", { class: "notice bad", id: "outbox-error", role: "alert", hidden: true }),
      h("div", { class: "table-wrap" }, h("table", { "aria-label": "Outbox" },
        h("thead", {}, h("tr", {}, ...[["Row", "opt"], "Message", "Status", ["Attempts", "opt"], "Last change", "Chain's answer or error", ...(canAnswer() ? ["Action"] : [])].map((c) => Array.isArray(c) ? h("th", { scope: "col", class: c[1] }, c[0]) : h("th", { scope: "col" }, c)))),
        h("tbody", { id: "outbox-rows" })))));
  return Promise.all([loadDayReports(), loadOutboxRows()]);
}

async function loadOutboxRows() {
  const o = outbox;
  const params = new URLSearchParams({ limit: OUTBOX_LIMIT });
  if (o.status) params.set("status", o.status);
  const error = $("outbox-error");
  try {
    o.rows = await api("GET", `/api/outbox?${params}`);
    if (error) error.hidden = true;
  } catch (e) {
    if (error) { error.textContent = e.message; error.hidden = false; }
    o.rows = [];
  }
  renderOutbox();
  loadRelay();
}

// The relay's view of each record topic: a topic the chain does not answer is on hold
// and probed now and then; say so, with when it will be tried again.
async function loadRelay() {
  const box = $("outbox-relay");
  if (!box) return;
  let relay;
  try {
    relay = await api("GET", "/api/outbox/relay");
  } catch {
    box.replaceChildren();
    return;
  }
  const time = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "—");
  const lines = (relay.topics ?? []).filter((t) => t.state !== "closed").map((t) => h("p", { class: "notice bad", "data-topic": t.topic, "data-state": t.state },
    t.state === "half_open"
      ? `The chain has not answered ${t.topic} since ${time(t.since)}; trying one message now. Its other messages wait.`
      : `The chain has not answered ${t.topic} since ${time(t.since)}; next try ${time(t.next_try)}. Its messages wait and are sent once it answers.`));
  if (relay.record_replies === "none") lines.push(h("p", { class: "notice" }, "Record messages are delivered when the broker has them; the chain's answer is not awaited (MES_RECORD_REPLIES=none)."));
  box.replaceChildren(...lines);
}

function renderOutbox() {
  const o = outbox;
  const stats = $("outbox-stats");
  if (stats) {
    // Totals come with the event stream's outbox events; until the first one, the
    // counts are those of the rows listed.
    const d = o.depth ?? o.rows.reduce((acc, r) => { acc[r.status] = (acc[r.status] ?? 0) + 1; return acc; }, {});
    stats.replaceChildren(
      ...[["pending", "Pending"], ["in_flight", "Sending"], ["done", "Delivered"], ["failed", "Failed for good"]].map(([k, l]) =>
        h("div", { class: `stat ${k}` }, h("div", { class: "n" }, String(d[k] ?? 0)), h("div", { class: "l" }, l))),
      ...(o.depth ? [] : [h("p", { class: "hint stats-note" }, o.status ? "Counts of the rows listed." : `Counts of the ${OUTBOX_LIMIT} newest messages.`)]));
  }
  if (o.depth) $("count-outbox").textContent = o.depth.failed ? String(o.depth.failed) : "";
  const body = $("outbox-rows");
  if (!body) return;
  const rows = o.rows.filter((r) => !o.dayOnly || String(r.ordering_key ?? "").startsWith("day-report:"));
  // A row's actions stay as they are (the button under the pointer, a question being
  // answered, a reason being typed, with its focus) while events redraw the list and
  // the row's status does not change.
  const focused = document.activeElement;
  const kept = new Map([...body.querySelectorAll("td.actions[data-for]")].map((c) => [Number(c.closest("tr").dataset.row), c]));
  const actions = (r) => { const c = kept.get(r.id); return c && c.dataset.for === r.status ? c : actionCell(r); };
  body.replaceChildren(...rows.map((r) => h("tr", { "data-row": r.id, "data-status": r.status },
    h("td", { class: "mono opt" }, String(r.id)),
    h("td", {}, h("div", {}, describe(r)), h("div", { class: "hint mono", title: r.dedup_key }, r.topic)),
    h("td", {}, badge(r.status)),
    h("td", { class: "opt" }, String(r.attempts ?? "")),
    h("td", {}, isoCell(r.updated_at)),
    h("td", {}, outboxAnswer(r)),
    canAnswer() ? actions(r) : null)));
  if (focused && !document.activeElement?.closest?.("td.actions") && [...kept.values()].some((c) => c.contains(focused))) focused.focus();
  if (!rows.length) body.append(h("tr", {}, h("td", { class: "empty", colspan: canAnswer() ? 7 : 6 }, o.status || o.dayOnly ? "No message with this filter." : "Nothing was sent to the chain yet.")));
}

// Rows whose retry or discard is being sent, by id, and the last action's result to
// show in the row (kept across the re-renders that events cause).
const acting = new Set();
const results = new Map();

// The action cell of row `r`: for a failed row, Retry and Discard (each confirmed
// first); the result of the last action taken here, if any.
function actionCell(r) {
  const cell = h("td", { class: "actions" });
  renderRowActions(r, cell);
  return cell;
}

function renderRowActions(r, cell) {
  cell.dataset.for = r.status;
  const parts = [];
  if (acting.has(r.id)) parts.push(h("p", { class: "result busy", role: "status" }, "Sending…"));
  else if (r.status === "failed") {
    parts.push(h("div", { class: "row" },
      h("button", { type: "button", class: "btn accept", "data-action": "retry", onclick: () => confirmRetry(r, cell) }, "Retry"),
      h("button", { type: "button", class: "btn reject", "data-action": "discard", onclick: () => confirmDiscard(r, cell) }, "Discard")));
  }
  const result = results.get(r.id);
  if (result) parts.push(h("p", { class: `result ${result.ok ? "ok" : "bad"}`, role: result.ok ? "status" : "alert" }, result.text));
  cell.replaceChildren(...parts);
}

// A question with its Yes and Cancel in `cell`; Escape cancels.
function ask(r, cell, question, yesLabel, yesClass, onYes, ...fields) {
  const no = h("button", { type: "button", class: "btn ghost", onclick: () => { renderRowActions(r, cell); cell.querySelector("button")?.focus(); } }, "Cancel");
  const yes = h("button", { type: "button", class: `btn ${yesClass} confirm`, onclick: onYes }, yesLabel);
  cell.replaceChildren(h("div", { class: "row" }, h("p", { class: "question" }, question), ...fields, yes, no));
  cell.addEventListener("keydown", (e) => { if (e.key === "Escape") no.click(); }, { once: true });
  return yes;
}

function confirmRetry(r, cell) {
  results.delete(r.id);
  ask(r, cell, `Send outbox row ${r.id} again?`, "Yes, retry", "accept", () => act(r, cell, "retry")).focus();
}

function confirmDiscard(r, cell) {
  results.delete(r.id);
  const reason = h("input", { type: "text", class: "reason", maxlength: 1000, required: true, placeholder: "Why it is given up on", "aria-label": `Reason to discard outbox row ${r.id}` });
  ask(r, cell, `Discard outbox row ${r.id}? It is never sent.`, "Yes, discard", "reject", () => {
    const text = reason.value.trim();
    if (!text) { reason.setAttribute("aria-invalid", "true"); reason.placeholder = "Say why it is given up on"; reason.focus(); return; }
    act(r, cell, "discard", { reason: text });
  }, reason);
  reason.focus();
}

// Retries or discards row `r`; its row shows the answer: the row as it now is, or the
// API's error as a sentence.
async function act(r, cell, action, body) {
  acting.add(r.id);
  renderRowActions(r, cell);
  try {
    const row = await api("POST", `/api/outbox/${encodeURIComponent(r.id)}/${action}`, body);
    const i = outbox.rows.findIndex((x) => x.id === row.id);
    if (i >= 0) outbox.rows[i] = { ...outbox.rows[i], ...row };
    if (outbox.status && outbox.status !== row.status) outbox.rows = outbox.rows.filter((x) => x.id !== row.id);
    results.set(r.id, { ok: true, text: action === "retry" ? "Queued again: it is sent shortly." : "Discarded: it will not be sent." });
  } catch (e) {
    results.set(r.id, { ok: false, text: e.message });
  } finally {
    acting.delete(r.id);
  }
  // Drawn anew with the row's answer (an event may have drawn the row meanwhile).
  for (const c of [cell, ...document.querySelectorAll(`#outbox-rows tr[data-row="${Number(r.id)}"] td.actions`)]) delete c.dataset.for;
  renderOutbox();
}

function percent(x) {
  return typeof x === "number" ? `${(x * 100).toFixed(1)} %` : "—";
}

async function loadDayReports() {
  const o = outbox;
  const body = $("reports-rows");
  const error = $("reports-error");
  if (!body) return;
  if (!o.date) {
    body.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: 5 }, "Pick a day.")));
    return;
  }
  try {
    o.reports = await api("GET", `/api/DayReport?date=${encodeURIComponent(o.date)}`);
    error.hidden = true;
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
    o.reports = [];
  }
  for (const row of seenRows()) applyToReport(row);
  renderDayReports();
}

function applyToReport(row) {
  const report = outbox.reports.find((r) => `day-report:${r.unit}:${r.date}` === row.dedup_key);
  if (report && isNews(row, report.chain)) report.chain = chainOf(row);
}

function renderDayReports() {
  const o = outbox;
  const body = $("reports-rows");
  if (!body) return;
  body.replaceChildren(...o.reports.map((r) => {
    const day = r.shifts.find((s) => s.shift === "DAY");
    return h("tr", { "data-report": `${r.unit}:${r.date}` },
      h("td", { class: "mono" }, r.unit),
      h("td", {}, r.shifts.map((s) => s.shift).join(", ") || "—"),
      h("td", {}, percent(day?.kpis?.oee)),
      h("td", { class: "mono opt" }, r.report_id),
      h("td", { class: "delivery" }, deliveryCell(r.chain, "report")));
  }));
  if (!o.reports.length) body.append(h("tr", {}, h("td", { class: "empty", colspan: 5 }, `No day report is stored for ${o.date}.`)));
}

function list(codes) {
  return codes.length ? codes.join(", ") : "";
}

async function runReport() {
  const o = outbox;
  const result = $("report-result");
  const button = $("report-run");
  if (!o.date) { result.className = "result bad"; result.textContent = "Pick a day first."; return; }
  result.className = "result busy";
  result.textContent = `Running the daily report of ${o.date}…`;
  button.disabled = true;
  try {
    const run = await api("POST", `/api/reports/daily/run?date=${encodeURIComponent(o.date)}`);
    const parts = [];
    if (run.enqueued.length) parts.push(`Queued for the chain: ${list(run.enqueued)}.`);
    if (run.already_enqueued.length) parts.push(`Already sent before: ${list(run.already_enqueued)}.`);
    if (run.no_report.length) parts.push(`No report stored: ${list(run.no_report)}.`);
    if (run.invalid_code.length) parts.push(`Skipped (code unusable on the chain): ${list(run.invalid_code)}.`);
    result.className = run.enqueued.length || run.already_enqueued.length ? "result ok" : "result";
    result.textContent = `Day ${run.date}: ${parts.join(" ") || "there are no production units."}`;
    await Promise.all([loadDayReports(), loadOutboxRows()]);
  } catch (e) {
    result.className = "result bad";
    result.textContent = e.message;
  } finally {
    button.disabled = false;
  }
}

// Keeps the outbox list, the counts and the day reports current from an event.
export function onOutboxRows(data) {
  const o = outbox;
  if (data.depth) o.depth = data.depth;
  for (const row of data.rows ?? []) {
    const i = o.rows.findIndex((r) => r.id === row.id);
    // The stream's rows have no payload: keep the one loaded.
    if (i >= 0) o.rows[i] = { ...o.rows[i], ...row };
    else if (!o.status || o.status === row.status) o.rows.unshift(row);
    if (o.status) o.rows = o.rows.filter((r) => r.status === o.status);
    applyToReport(row);
  }
  o.rows.sort((a, b) => b.id - a.id);
  if (o.rows.length > OUTBOX_LIMIT) o.rows.length = OUTBOX_LIMIT;
}

// After an outbox event: the tab when it is `shown` (and the relay's topic state, which
// changes with deliveries: looked at again at most every 5 s), else its badge only.
export function showOutbox(data, shown) {
  if (shown) {
    renderOutbox(); renderDayReports();
    if (!relayLoaded || Date.now() - relayLoaded > 5000) { relayLoaded = Date.now(); loadRelay(); }
  }
  else if (data.depth) $("count-outbox").textContent = data.depth.failed ? String(data.depth.failed) : "";
}
