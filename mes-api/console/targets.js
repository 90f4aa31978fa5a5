// A unit's targets, edited in place (the units tab and the performance summary use the
// same editor): the OEE target and optional availability, performance and quality
// targets, entered as percentages and stored as fractions by
// PUT /api/ProductionUnit/<code>/target. Nothing of it goes to the chain.

import { h } from "./dom.js";
import { api } from "./api.js";

const FIELDS = [
  ["oee", "OEE", true],
  ["availability", "Availability", false],
  ["performance", "Performance", false],
  ["quality", "Quality", false],
];

// A percentage input's value for fraction `x` ("" for none).
const asPercent = (x) => (typeof x === "number" ? String(Math.round(x * 1000) / 10) : "");

// The editor of unit `code`'s targets, starting from `target` (or none). `onSaved(unit)`
// gets the unit as stored; `onCancel()` when the operator gives up (Escape too).
export function targetEditor(target, code, onSaved, onCancel) {
  const inputs = Object.fromEntries(FIELDS.map(([key, label, required]) => [key, h("input", {
    type: "number", inputmode: "decimal", min: 0, max: 100, step: "0.1", size: 5, class: "pct", "data-target": key,
    value: asPercent(target?.[key]), required, "aria-label": `${label} target of ${code}, in percent${required ? "" : " (empty for none)"}`,
  })]));
  const result = h("p", { class: "result", role: "status" });
  const save = async () => {
    const body = {};
    for (const [key, label, required] of FIELDS) {
      const text = inputs[key].value.trim();
      inputs[key].removeAttribute("aria-invalid");
      if (!text) {
        if (required) return refuse(key, `Enter the ${label} target, in percent (0 to 100).`);
        body[key] = null;
        continue;
      }
      const v = Number(text);
      if (!Number.isFinite(v) || v < 0 || v > 100) return refuse(key, `The ${label} target is a percentage from 0 to 100.`);
      body[key] = Math.round(v * 10) / 1000;
    }
    result.className = "result busy";
    result.textContent = "Saving…";
    try {
      const unit = await api("PUT", `/api/ProductionUnit/${encodeURIComponent(code)}/target`, body);
      onSaved(unit);
    } catch (e) {
      result.className = "result bad";
      result.textContent = e.message;
    }
  };
  const refuse = (key, text) => {
    inputs[key].setAttribute("aria-invalid", "true");
    inputs[key].focus();
    result.className = "result bad";
    result.textContent = text;
  };
  const form = h("div", { class: "target-edit", "data-unit": code },
    h("div", { class: "row" }, ...FIELDS.map(([key, label]) => h("label", { class: "target-field" }, h("span", {}, label), inputs[key], " %"))),
    h("div", { class: "row" },
      h("button", { type: "button", class: "btn small primary save-target", onclick: save }, "Save targets"),
      h("button", { type: "button", class: "btn small ghost", onclick: onCancel }, "Cancel")),
    result);
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && e.target.tagName === "INPUT") { e.preventDefault(); save(); }
    if (e.key === "Escape") onCancel();
  });
  queueMicrotask(() => inputs.oee.focus());
  return form;
}

// A unit's targets as text: "OEE 65 %", with A, P, Q when set.
export function targetText(target) {
  if (!target || typeof target.oee !== "number") return null;
  const parts = [`OEE ${asPercent(target.oee)} %`];
  for (const [key, label] of FIELDS.slice(1)) if (typeof target[key] === "number") parts.push(`${label[0]} ${asPercent(target[key])} %`);
  return parts.join(" · ");
}
