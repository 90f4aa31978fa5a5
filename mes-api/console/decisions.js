// The decisions tab: the audit trail of answers sent to the chain, newest first.

import { $, badge, h, isoCell, sentence, short } from "./dom.js";
import { api, download } from "./api.js";

export async function loadDecisions() {
  const panel = $("panel-decisions");
  panel.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, "Decisions"),
      h("button", { type: "button", class: "btn", id: "decisions-csv", onclick: (e) => download("/api/decisions.csv", e.currentTarget) }, "Download CSV"),
      h("button", { type: "button", class: "btn", onclick: loadDecisions }, "Refresh")),
    h("p", { class: "notice bad", id: "decisions-error", role: "alert", hidden: true }),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Decisions" },
      h("thead", {}, h("tr", {}, ...["When", "Operator", "Request", "Answer", "Outcome", "Chain's message or error"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", { id: "decisions-rows" }))));
  try {
    const rows = await api("GET", "/api/decisions?limit=100");
    $("decisions-rows").replaceChildren(...rows.map((d) => h("tr", {},
      h("td", {}, isoCell(d.created_at)), h("td", {}, d.operator),
      h("td", {}, `${d.kind} `, h("span", { class: "mono", title: d.request_id }, short(d.request_id, 8, 4))),
      h("td", {}, d.response), h("td", {}, badge(d.outcome)),
      h("td", {}, d.chain_error ? h("span", { class: "result bad" }, sentence(d.chain_error)) : (d.chain_message ?? "—")))));
    if (!rows.length) $("decisions-rows").append(h("tr", {}, h("td", { class: "empty", colspan: 6 }, "No decisions yet.")));
  } catch (e) {
    $("decisions-error").textContent = e.message;
    $("decisions-error").hidden = false;
  }
}
