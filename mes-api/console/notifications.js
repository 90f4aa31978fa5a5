// The notifications tab: the webhook notifications (MES_WEBHOOKS), newest first:
// waiting to be sent (and why the last attempt did not deliver them), delivered, or
// failed for good with the reason. A webhook is shown by scheme, host and port only:
// the server never sends its URL (it may hold a bot token).

import { $, badge, h, isoCell, sentence } from "./dom.js";
import { api } from "./api.js";

const NOTIFICATIONS_LIMIT = 200;

const state = { status: "" };

// What the notification says: the sentence it POSTs, else its event id.
function what(n) {
  const text = n.payload && typeof n.payload === "object" ? n.payload.text : null;
  return typeof text === "string" && text ? text : n.event_id;
}

function outcome(n) {
  if (n.status === "failed") return h("span", { class: "result bad" }, `Failed for good: ${sentence(n.last_error || "no reason given")}`);
  if (n.status === "delivered") return h("span", { class: "muted" }, "Delivered ", isoCell(n.delivered_at), ".");
  if (n.last_error) {
    const when = n.next_attempt_at ? ` Next try ${new Date(n.next_attempt_at).toLocaleTimeString()}.` : "";
    return h("span", { class: "result" }, `Not delivered yet (attempt ${n.attempts}): ${sentence(n.last_error)}${when}`);
  }
  return h("span", { class: "muted" }, "Waiting to be sent.");
}

export async function loadNotifications() {
  const panel = $("panel-notifications");
  const filter = h("select", { id: "notifications-status", onchange: (e) => { state.status = e.target.value; loadNotifications(); } },
    ...[["", "All"], ["pending", "Pending"], ["delivered", "Delivered"], ["failed", "Failed"]].map(([v, t]) => h("option", { value: v, selected: state.status === v }, t)));
  panel.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, "Webhook notifications"),
      h("label", { for: "notifications-status" }, "Status"), filter,
      h("button", { type: "button", class: "btn", onclick: loadNotifications }, "Refresh")),
    h("p", { class: "notice bad", id: "notifications-error", role: "alert", hidden: true }),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Notifications" },
      h("thead", {}, h("tr", {}, ...["When", "Webhook", "Notification", "Status", ["Attempts", "opt"], "Delivery or error"].map((c) => Array.isArray(c) ? h("th", { scope: "col", class: c[1] }, c[0]) : h("th", { scope: "col" }, c)))),
      h("tbody", { id: "notifications-rows" }))));
  const params = new URLSearchParams({ limit: NOTIFICATIONS_LIMIT });
  if (state.status) params.set("status", state.status);
  try {
    const rows = await api("GET", `/api/notifications?${params}`);
    $("notifications-rows").replaceChildren(...rows.map((n) => h("tr", { "data-notification": n.id, "data-status": n.status },
      h("td", {}, isoCell(n.created_at)),
      h("td", { class: "mono" }, n.webhook),
      h("td", { class: "notification" }, h("div", {}, what(n)), h("div", { class: "hint mono" }, n.event_id)),
      h("td", {}, badge(n.status)),
      h("td", { class: "opt" }, String(n.attempts ?? "")),
      h("td", {}, outcome(n)))));
    if (!rows.length) $("notifications-rows").append(h("tr", {}, h("td", { class: "empty", colspan: 6 }, state.status ? "No notification with this filter." : "No webhook notification yet (MES_WEBHOOKS).")));
  } catch (e) {
    $("notifications-error").textContent = e.message;
    $("notifications-error").hidden = false;
  }
}
