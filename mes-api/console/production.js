// The production orders tab: the orders accepted from the chain, newest first, 50 a
// page, with what to make (description and the order's metadata as fields), the ERP
// that issued it, who accepted it and when, and a link to the chain request it came
// from.

import { $, badge, h, isoCell, keyCell, timeCell } from "./dom.js";
import { api, download } from "./api.js";
import { showRequest } from "./requests.js";

const PAGE = 50;

// The page shown: its first row's offset, newest first.
let offset = 0;

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
  const page = (by) => () => { offset = Math.max(0, offset + by); loadProduction(); };
  panel.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, "Production orders"),
      h("button", { type: "button", class: "btn", id: "production-csv", onclick: (e) => download("/api/production-orders.csv", e.currentTarget) }, "Download CSV"),
      h("button", { type: "button", class: "btn", onclick: loadProduction }, "Refresh")),
    h("p", { class: "hint" }, "Orders accepted from the chain become production orders here; the newest first."),
    h("p", { class: "notice bad", id: "production-error", role: "alert", hidden: true }),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Production orders" },
      h("thead", {}, h("tr", {}, ...["Order", "Details", "Issuing ERP", "Accepted", "Status", "From"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", { id: "production-rows" }))),
    h("div", { class: "pager" },
      h("span", { id: "production-range" }),
      h("button", { type: "button", class: "btn small", id: "production-prev", disabled: true, onclick: page(-PAGE) }, "Previous"),
      h("button", { type: "button", class: "btn small", id: "production-next", disabled: true, onclick: page(PAGE) }, "Next")));
  try {
    // One row more than a page says whether there is a next one.
    const rows = await api("GET", `/api/production-orders?${new URLSearchParams({ limit: PAGE + 1, offset })}`);
    const shown = rows.slice(0, PAGE);
    $("production-rows").replaceChildren(...shown.map(orderRow));
    if (!shown.length) $("production-rows").append(h("tr", {}, h("td", { class: "empty", colspan: 6 }, offset ? "No more production orders." : "No production orders yet. Accepting an order request makes one.")));
    $("production-range").textContent = shown.length ? `${offset + 1}–${offset + shown.length}` : "";
    $("production-prev").disabled = offset === 0;
    $("production-next").disabled = rows.length <= PAGE;
  } catch (e) {
    $("production-error").textContent = e.message;
    $("production-error").hidden = false;
  }
}
