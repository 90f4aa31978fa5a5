// The production units tab: each unit's status and process name, editable in place
// (PATCH answers the unit, whose row replaces the old one), and the delivery of its
// latest change to the chain, moved on by the event stream's outbox rows; and its OEE
// target (local, never sent to the chain), edited in place too.

import { $, h, isoCell } from "./dom.js";
import { api, canAnswer } from "./api.js";
import { chainOf, deliveryCell, isNews, seenRows } from "./delivery.js";
import { targetEditor, targetText } from "./targets.js";

// The units as last loaded (and patched since).
let units = [];

// Nothing of the previous operator's view survives a sign-out.
export function resetUnits() {
  units = [];
}

export async function loadUnits() {
  const panel = $("panel-units");
  panel.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, "Production units"), h("button", { type: "button", class: "btn", onclick: loadUnits }, "Refresh")),
    h("p", { class: "hint" }, "Each change of status or process name is sent to the chain through the outbox; “Chain delivery” says whether the latest one arrived."),
    h("p", { class: "notice bad", id: "units-error", role: "alert", hidden: true }),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Production units" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Unit"), h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Process"), h("th", { scope: "col" }, "Target"), h("th", { scope: "col", class: "opt" }, "Changed"), h("th", { scope: "col" }, "Chain delivery"), h("th", { scope: "col" }, "Action"))),
      h("tbody", { id: "units-rows" }))));
  try {
    units = await api("GET", "/api/ProductionUnit");
  } catch (e) {
    $("units-error").textContent = e.message;
    $("units-error").hidden = false;
    units = [];
  }
  renderUnits();
  for (const row of seenRows()) onUnitOutboxRow(row);
}

function renderUnits() {
  const body = $("units-rows");
  if (!body) return;
  body.replaceChildren(...units.map(unitRow));
  if (!units.length) body.append(h("tr", {}, h("td", { class: "empty", colspan: 8 }, "No production units yet. They are created through the API (POST /api/ProductionUnit).")));
}

function unitRow(unit) {
  const actions = h("td", { class: "actions" });
  const row = h("tr", { "data-unit": unit.code },
    h("td", { class: "mono" }, unit.code), h("td", {}, unit.name),
    h("td", { class: "unit-status" }, unit.Status), h("td", { class: "unit-process" }, unit.ProcessName ?? h("span", { class: "muted" }, "—")),
    targetCell(unit),
    h("td", { class: "opt" }, isoCell(unit.updated_at)), h("td", { class: "delivery" }, deliveryCell(unit.chain)), actions);
  if (canAnswer()) actions.append(h("button", { type: "button", class: "btn small", "aria-label": `Edit unit ${unit.code}`, onclick: () => editUnit(unit.code) }, "Edit"));
  return row;
}

// The unit's targets; operators change them in place.
function targetCell(unit) {
  const cell = h("td", { class: "unit-target", "data-oee": unit.target?.oee ?? "" }, targetText(unit.target) ?? h("span", { class: "muted" }, "none"));
  if (!canAnswer()) return cell;
  const edit = h("button", { type: "button", class: "btn small edit-target", "aria-label": `Change the targets of ${unit.code}` }, "Change");
  edit.addEventListener("click", () => {
    cell.replaceChildren(targetEditor(unit.target, unit.code, (saved) => {
      unit.target = saved.target;
      cell.replaceWith(targetCell(unit));
    }, () => { const fresh = targetCell(unit); cell.replaceWith(fresh); fresh.querySelector("button")?.focus(); }));
  });
  cell.append(" ", edit);
  return cell;
}

function unitRowElement(code) {
  return document.querySelector(`#units-rows tr[data-unit="${CSS.escape(code)}"]`);
}

// Replaces one unit (state and row) in place, keeping the rest of the table as it is.
function replaceUnit(unit, result) {
  const index = units.findIndex((u) => u.code === unit.code);
  if (index >= 0) units[index] = unit;
  const old = unitRowElement(unit.code);
  if (!old) return;
  const row = unitRow(unit);
  if (result) row.querySelector("td.actions").append(result);
  old.replaceWith(row);
}

function editUnit(code) {
  const unit = units.find((u) => u.code === code);
  const row = unitRowElement(code);
  if (!unit || !row) return;
  const status = h("input", { "aria-label": `Status of ${code}`, value: unit.Status, size: 12, maxlength: 128, required: true });
  const process = h("input", { "aria-label": `Process of ${code} (empty for none)`, value: unit.ProcessName ?? "", size: 16, maxlength: 128 });
  const result = h("p", { class: "result", role: "status" });
  const cancel = () => { replaceUnit(unit); unitRowElement(code)?.querySelector("td.actions button")?.focus(); };
  const save = async () => {
    const newStatus = status.value.trim();
    if (!newStatus) {
      result.className = "result bad";
      result.textContent = "A unit needs a status.";
      status.focus();
      return;
    }
    const body = {};
    if (newStatus !== unit.Status) body.Status = newStatus;
    const newProcess = process.value.trim() || null;
    if (newProcess !== (unit.ProcessName ?? null)) body.ProcessName = newProcess;
    if (!Object.keys(body).length) { cancel(); return; }
    result.className = "result busy";
    result.textContent = "Saving…";
    try {
      const updated = await api("PATCH", `/api/ProductionUnit/${encodeURIComponent(code)}`, body);
      replaceUnit(updated, h("p", { class: "result ok", role: "status" }, "Saved; the change is on its way to the chain."));
      // The stream may have announced the delivery before this answer arrived.
      for (const row of seenRows()) onUnitOutboxRow(row);
    } catch (e) {
      result.className = "result bad";
      result.textContent = e.message;
    }
  };
  row.querySelector("td.unit-status").replaceChildren(status);
  row.querySelector("td.unit-process").replaceChildren(process);
  row.querySelector("td.actions").replaceChildren(h("div", { class: "row" },
    h("button", { type: "button", class: "btn small primary save", onclick: save }, "Save"),
    h("button", { type: "button", class: "btn small ghost", onclick: cancel }, "Cancel")), result);
  row.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && e.target.tagName === "INPUT") save();
    if (e.key === "Escape") cancel();
  });
  status.focus();
}

// A unit's targets changed (the event stream's `target`): its target cell shows them,
// unless an editor is open there (the operator's own Save shows what was stored).
export function onUnitTarget(code, target) {
  const unit = units.find((u) => u.code === code);
  if (!unit) return;
  unit.target = target ?? null;
  const cell = unitRowElement(code)?.querySelector("td.unit-target");
  if (cell && !cell.querySelector(".target-edit")) cell.replaceWith(targetCell(unit));
}

// A row of `unit:CODE` is the unit's state when it is news for it.
export function onUnitOutboxRow(row) {
  const m = /^unit:(.+)$/.exec(String(row.ordering_key ?? ""));
  if (!m) return;
  const unit = units.find((u) => u.code === m[1]);
  if (!unit || !isNews(row, unit.chain)) return;
  unit.chain = chainOf(row);
  const cell = unitRowElement(unit.code)?.querySelector("td.delivery");
  // A row being edited keeps its inputs; only the delivery cell changes.
  if (cell) cell.replaceChildren(deliveryCell(unit.chain));
}
