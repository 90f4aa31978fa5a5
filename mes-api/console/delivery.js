// What the chain knows of a unit's latest change or of a day report: the delivery of
// its newest outbox row, shown by the units tab and the day reports alike, and kept
// current from the event stream's outbox rows.

import { h, sentence } from "./dom.js";

// What the chain knows of a unit's latest change, from `unit.chain` (the newest
// outbox row of the unit): a badge and, when it matters, a sentence.
const DELIVERY = {
  delivered: "DELIVERED",
  pending: "PENDING",
  failed: "FAILED",
  none: "NOT SENT",
};

// `what`: "change" for a unit (its latest change), "report" for a day report.
export function deliveryCell(chain, what = "change") {
  const state = chain?.state ?? "none";
  const parts = [h("span", { class: `badge ${state}`, "data-state": state, "data-outbox-id": chain?.outbox_id ?? "" }, DELIVERY[state] ?? state)];
  if (state === "delivered") {
    parts.push(h("div", { class: "hint" }, what === "report" ? "Published on the chain." : "The chain has the latest change."));
  } else if (state === "pending") {
    parts.push(h("div", { class: "hint" }, chain.error
      ? `Not delivered yet (attempt ${chain.attempts}), retrying: ${sentence(chain.error)}`
      : "On its way to the chain."));
  } else if (state === "failed") {
    parts.push(h("div", { class: "result bad" }, `The chain refused the ${what} and it will not be retried: ${sentence(chain.error || "no reason given")}`));
  } else {
    parts.push(h("div", { class: "hint" }, what === "report" ? "Sent by the daily run once the day is over." : "No change of this unit was sent to the chain."));
  }
  return h("div", {}, ...parts);
}

// The chain state an outbox row gives its unit or day report.
export function chainOf(row) {
  return {
    state: row.status === "done" ? "delivered" : row.status === "failed" ? "failed" : "pending",
    error: row.last_error ?? null,
    attempts: row.attempts,
    outbox_id: row.id,
    updated_at: row.updated_at,
  };
}

// Whether a row from the event stream is news for `chain` (what a unit or report
// shows): a newer message, or a later change of the same one.
export function isNews(row, chain) {
  const id = chain?.outbox_id ?? 0;
  if (row.id !== id) return row.id > id;
  return !chain.updated_at || Date.parse(row.updated_at) >= Date.parse(chain.updated_at);
}

// Rows the event stream brought, by dedup key: applied again after a list loads, in
// case its answer was read just before a change the stream announced meanwhile.
const seen = new Map();
const SEEN_LIMIT = 1000;
export function remember(row) {
  seen.delete(row.dedup_key);
  seen.set(row.dedup_key, row);
  if (seen.size > SEEN_LIMIT) seen.delete(seen.keys().next().value);
}

// The rows remembered, oldest first.
export const seenRows = () => seen.values();

// Nothing of the previous operator's view survives a sign-out.
export function forgetSeen() {
  seen.clear();
}
