// The production orders tab: the orders accepted from the chain, newest first, with
// what to make (description and the order's metadata as fields), the ERP that issued
// it, who accepted it and when, and a link to the chain request it came from.

import { $, badge, h, isoCell, keyCell, timeCell } from "./dom.js";
import { api, download } from "./api.js";
import { showRequest } from "./requests.js";

const LIMIT = 100;

// A metadata value as text: a list of plain values joined by commas, others as JSON.
function fieldText(v) {
  if (typeof v === "string") return v;
  if (Array.isArray(v) && v.every((x) => typeof x !== "object" || x === null)) return v.join(", ");
  return JSON.stringify(v);
}

// The metadata of an order as a list of fields ("Part: steering wheel").
function metadataFields(metadata) {
  if (!metadata || typeof metadata !== "object" || Array.isArray(metadata)) {
    return metadata === null || metadata === undefined || metadata === "" ? h("span", { class: "muted" }, "—") : h("span", { class: "mono" }, JSON.stringify(metadata));
  }
  const entries = Object.entries(metadata);
  if (!entries.length) return h("span", { class: "muted" }, "—");
  return h("dl", { class: "meta" }, ...entries.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-field": k }, fieldText(v))]));
}

function orderRow(o) {
  const id = String(o.chain_order_id ?? "");
  return h("tr", { "data-order": id },
    h("td", {}, h("div", { class: "order-desc" }, o.description || h("span", { class: "muted" }, "(no description)")), h("div", { class: "hint" }, o.order_type ?? "")),
    h("td", {}, metadataFields(o.metadata)),
    h("td", { class: "issuer" }, keyCell(o.issuing_agent, "issuing ERP")),
    h("td", { class: "accepted" }, o.accepted_by ? h("div", {}, h("div", {}, isoCell(o.accepted_at)), h("div", { class: "hint" }, `by ${o.accepted_by}`)) : h("span", { class: "muted" }, "—")),
    h("td", {}, badge(o.status), h("div", { class: "hint opt" }, "Ordered ", timeCell(o.chain_timestamp))),
    h("td", {}, h("a", {
      class: "chain-link", href: `#orders/${encodeURIComponent(id)}`, title: `Chain request ${id}`,
      onclick: (e) => { e.preventDefault(); showRequest("orders", id); },
    }, "Chain request")));
}

export async function loadProduction() {
  const panel = $("panel-production");
  panel.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, "Production orders"),
      h("button", { type: "button", class: "btn", id: "production-csv", onclick: (e) => download("/api/production-orders.csv", e.currentTarget) }, "Download CSV"),
      h("button", { type: "button", class: "btn", onclick: loadProduction }, "Refresh")),
    h("p", { class: "hint" }, "Orders accepted from the chain become production orders here; the newest first."),
    h("p", { class: "notice bad", id: "production-error", role: "alert", hidden: true }),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Production orders" },
      h("thead", {}, h("tr", {}, ...["Order", "Details", "Issuing ERP", "Accepted", "Status", "From"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", { id: "production-rows" }))));
  try {
    const rows = await api("GET", `/api/production-orders?limit=${LIMIT}`);
    $("production-rows").replaceChildren(...rows.map(orderRow));
    if (!rows.length) $("production-rows").append(h("tr", {}, h("td", { class: "empty", colspan: 6 }, "No production orders yet. Accepting an order request makes one.")));
  } catch (e) {
    $("production-error").textContent = e.message;
    $("production-error").hidden = false;
  }
}
