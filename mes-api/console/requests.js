// The partner and order request tabs: the inbox (the server's mirror of the chain)
// filtered and paged, the answer flow (confirm, send, the chain's answer in the row),
// the detail view, and the rows kept current from the event stream's request, status
// and decision events. Ids are kept as the chain spells them, go into URLs only through
// encodeURIComponent (or URLSearchParams), and are shown as text.

import { $, badge, copyText, h, keyCell, sentence, short, timeCell, toast } from "./dom.js";
import { api, canAnswer, session } from "./api.js";

const PAGE_SIZE = 25;

const KINDS = {
  partners: { kind: "partner", idField: "partner_request_id", answer: (id) => `/api/partners/${encodeURIComponent(id)}/answer`, noun: "partner request" },
  orders: { kind: "order", idField: "abs_action_id", answer: (id) => `/api/orders/${encodeURIComponent(id)}/answer`, noun: "order request" },
};
const TAB_OF_KIND = { partner: "partners", order: "orders" };

// Each tab's filter and page, and what it shows.
const lists = {
  partners: { start: 0, status: "OPEN", items: [], total: 0, asOf: null, loaded: false },
  orders: { start: 0, status: "OPEN", items: [], total: 0, asOf: null, loaded: false },
};

// Nothing of the previous operator's view survives a sign-out.
export function resetLists() {
  for (const l of Object.values(lists)) { l.loaded = false; l.items = []; }
}

// Loads the tabs loaded before again; with `unscanned`, only those loaded before the
// server's first complete scan of the chain.
export function reloadLists(unscanned = false) {
  for (const tab of ["partners", "orders"]) if (lists[tab].loaded && (!unscanned || !lists[tab].asOf)) loadList(tab);
}

// The id as the chain spells it: ids are case-sensitive, never folded.
function itemId(tab, item) {
  return String(item?.[KINDS[tab].idField] ?? "");
}

function listPanel(tab) {
  const l = lists[tab];
  const k = KINDS[tab];
  const panel = $(`panel-${tab}`);
  const filter = h("select", { id: `${tab}-status`, onchange: (e) => { l.status = e.target.value; l.start = 0; loadList(tab); } },
    ...[["OPEN", "Needs attention (open)"], ["ACCEPTED", "Accepted"], ["REJECTED", "Rejected"], ["", "All"]].map(([v, t]) => h("option", { value: v, selected: l.status === v }, t)));
  const head = tab === "partners"
    ? ["Request", "Issuing agent", "Status", "Requested", ["Answered", "opt"], ["Transactions", "opt"], "Action"]
    : ["Order", "Issuing agent", "What", "Status", "Ordered", ["Transactions", "opt"], "Action"];
  panel.replaceChildren(
    h("div", { class: "toolbar" },
      h("h2", {}, tab === "partners" ? "Partner requests" : "Order requests"),
      h("label", { for: `${tab}-status` }, "Status"), filter,
      h("button", { type: "button", class: "btn", onclick: () => loadList(tab) }, "Refresh"),
      h("span", { class: "hint", id: `${tab}-asof`, role: "status" })),
    h("p", { class: "notice bad", id: `${tab}-error`, role: "alert", hidden: true }),
    h("div", { class: "table-wrap" },
      h("table", { "aria-label": k.noun + "s" },
        h("thead", {}, h("tr", {}, ...head.map((c) => Array.isArray(c) ? h("th", { class: c[1], scope: "col" }, c[0]) : h("th", { scope: "col" }, c)))),
        h("tbody", { id: `${tab}-rows` }))),
    h("div", { class: "pager" },
      h("span", { id: `${tab}-range` }),
      h("button", { type: "button", class: "btn small", id: `${tab}-prev`, onclick: () => { l.start = Math.max(0, l.start - PAGE_SIZE); loadList(tab); } }, "Previous"),
      h("button", { type: "button", class: "btn small", id: `${tab}-next`, onclick: () => { l.start += PAGE_SIZE; loadList(tab); } }, "Next")));
}

// The tabs read the inbox (the server's mirror of the chain), so a status filter and
// the counts cover every request on the chain, not one chain page.
export async function loadList(tab) {
  const l = lists[tab];
  if (!$(`${tab}-rows`)) listPanel(tab);
  const params = new URLSearchParams({ kind: KINDS[tab].kind, limit: PAGE_SIZE, offset: l.start });
  if (l.status) params.set("status", l.status);
  const error = $(`${tab}-error`);
  try {
    const page = await api("GET", `/api/requests?${params}`);
    l.items = Array.isArray(page?.items) ? page.items.map((r) => r.item) : [];
    l.total = Number(page?.total) || 0;
    l.asOf = page?.as_of ?? null;
    l.loaded = true;
    error.hidden = true;
    renderRows(tab);
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
  loadCounts();
}

// True counts of open requests in the tab badges, from the whole mirror.
async function loadCounts() {
  try {
    const counts = await api("GET", "/api/requests/counts");
    for (const tab of ["partners", "orders"]) {
      const open = Number(counts?.[KINDS[tab].kind]?.by_status?.OPEN) || 0;
      $(`count-${tab}`).textContent = open ? String(open) : "";
      const l = lists[tab];
      if (counts?.[KINDS[tab].kind]?.as_of) l.asOf = counts[KINDS[tab].kind].as_of;
    }
    showFreshness();
  } catch { /* the badges keep their last value */ }
}

// "as of 12 s ago": when the server last read the chain's whole list.
function showFreshness() {
  for (const tab of ["partners", "orders"]) {
    const el = $(`${tab}-asof`);
    if (!el) continue;
    const at = lists[tab].asOf ? Date.parse(lists[tab].asOf) : NaN;
    if (Number.isNaN(at)) { el.textContent = "Reading the chain…"; continue; }
    const s = Math.max(0, Math.round((Date.now() - at) / 1000));
    el.textContent = s < 60 ? `as of ${s} s ago` : s < 3600 ? `as of ${Math.round(s / 60)} min ago` : `as of ${new Date(at).toLocaleString()}`;
    el.title = new Date(at).toISOString();
  }
}
setInterval(showFreshness, 1000);

function renderRows(tab) {
  const l = lists[tab];
  const body = $(`${tab}-rows`);
  if (!body) return;
  body.replaceChildren(...l.items.map((item) => requestRow(tab, item)));
  if (!l.items.length) {
    const what = l.status === "OPEN" ? `No ${KINDS[tab].noun}s need attention.` : l.status ? `No ${l.status.toLowerCase()} ${KINDS[tab].noun}s.` : `No ${KINDS[tab].noun}s.`;
    body.append(h("tr", {}, h("td", { class: "empty", colspan: 7 }, l.asOf ? what : `${what} The server has not read the whole chain yet.`)));
  }
  $(`${tab}-range`).textContent = l.items.length ? `${l.start + 1}–${l.start + l.items.length} of ${l.total}` : "";
  $(`${tab}-prev`).disabled = l.start === 0;
  $(`${tab}-next`).disabled = l.start + PAGE_SIZE >= l.total;
  showFreshness();
}

function txLinks(tab, item) {
  const ids = Array.isArray(item.transaction_ids) ? item.transaction_ids : [];
  if (!ids.length) return h("span", { class: "muted" }, "—");
  return h("span", {}, ...ids.map((tx, n) =>
    h("a", { class: "tx mono", href: `#${tab}/${encodeURIComponent(itemId(tab, item))}/tx${n}`, title: tx, onclick: (e) => { e.preventDefault(); openDetail(tab, item, n); } }, short(tx, 8, 6))));
}

function requestRow(tab, item) {
  const id = itemId(tab, item);
  const status = String(item.status ?? "").toUpperCase();
  const idLink = h("a", { class: "mono", href: `#${tab}/${encodeURIComponent(id)}`, title: id, onclick: (e) => { e.preventDefault(); openDetail(tab, item); } }, short(id, 8, 4));
  const cells = tab === "partners"
    ? [h("td", {}, idLink), h("td", {}, keyCell(item.issuing_agent, "issuing agent")), h("td", { class: "status" }, badge(status)),
      h("td", {}, timeCell(item.timestamp)), h("td", { class: "opt" }, timeCell(item.answer_timestamp)), h("td", { class: "opt" }, txLinks(tab, item))]
    : [h("td", {}, idLink), h("td", {}, keyCell(item.issuing_agent, "issuing agent")),
      h("td", {}, h("div", {}, item.description || h("span", { class: "muted" }, "(no description)")), h("div", { class: "hint" }, item.type ?? "")),
      h("td", { class: "status" }, badge(status)), h("td", {}, timeCell(item.timestamp)), h("td", { class: "opt" }, txLinks(tab, item))];
  const actions = h("td", { class: "actions" });
  const row = h("tr", { "data-id": id, "data-status": status }, ...cells, actions);
  renderActions(tab, item, actions);
  return row;
}

function renderActions(tab, item, cell, result) {
  const status = String(item.status ?? "").toUpperCase();
  const parts = [];
  if (status === "OPEN" && canAnswer()) {
    parts.push(h("div", { class: "row" },
      h("button", { type: "button", class: "btn accept", onclick: () => confirmAnswer(tab, item, cell, "accept") }, "Accept"),
      h("button", { type: "button", class: "btn reject", onclick: () => confirmAnswer(tab, item, cell, "reject") }, "Reject")));
  } else if (status === "OPEN") {
    parts.push(h("span", { class: "muted" }, "Waiting for an operator"));
  }
  if (result) parts.push(result);
  cell.replaceChildren(...parts);
}

function confirmAnswer(tab, item, cell, answer) {
  const noun = KINDS[tab].noun;
  const yes = h("button", { type: "button", class: `btn ${answer} confirm`, onclick: () => sendAnswer(tab, item, cell, answer) }, answer === "accept" ? "Yes, accept" : "Yes, reject");
  const no = h("button", { type: "button", class: "btn ghost", onclick: () => { renderActions(tab, item, cell); cell.querySelector("button")?.focus(); } }, "Cancel");
  cell.replaceChildren(h("div", { class: "row" },
    h("p", { class: "question" }, `${answer === "accept" ? "Accept" : "Reject"} this ${noun}?`), yes, no));
  cell.addEventListener("keydown", (e) => { if (e.key === "Escape") no.click(); }, { once: true });
  yes.focus();
}

async function sendAnswer(tab, item, cell, answer) {
  const id = itemId(tab, item);
  cell.replaceChildren(h("p", { class: "result busy", role: "status" }, "Sending the answer to the chain…"));
  sending.add(`${tab}/${id}`);
  try {
    const res = await api("POST", KINDS[tab].answer(id), { response: answer });
    if (res?.decision?.outcome === "unknown") {
      // 202: sent, not confirmed. The row turns by itself when the server's scan of
      // the chain's list settles the decision (a "decision" event).
      unconfirmed.set(`${tab}/${id}`, answer);
      updateRow(tab, item, h("p", { class: "result busy", role: "status" }, "Sent — waiting for the chain to confirm"));
      return;
    }
    item.status = answer === "accept" ? "ACCEPTED" : "REJECTED";
    const msg = typeof res?.message === "string" ? res.message : JSON.stringify(res?.message ?? "");
    let text = `The chain answered: ${sentence(msg)}`;
    if (res?.production_order) text += ` Production order ${res.production_order.id} was created.`;
    updateRow(tab, item, h("p", { class: "result ok", role: "status" }, text));
  } catch (e) {
    renderActions(tab, item, cell, h("p", { class: "result bad", role: "alert" }, e.message));
  } finally {
    sending.delete(`${tab}/${id}`);
  }
}

// Rows whose answer is in flight: their own call's answer renders them, not the
// decision event that may overtake it.
const sending = new Set();
// Rows answered here but not confirmed by the chain yet (202): the answer sent, by
// "partners/<id>". The first event that shows the chain applied it says so.
const unconfirmed = new Map();

// If `tab`'s request `id` was answered here unconfirmed and the chain now shows
// `status`: the sentence that says the chain confirmed it (and forget the row).
function confirmation(tab, id, status) {
  const key = `${tab}/${id}`;
  const answer = unconfirmed.get(key);
  if (!answer || status !== (answer === "accept" ? "ACCEPTED" : "REJECTED")) return null;
  unconfirmed.delete(key);
  return h("p", { class: "result ok", role: "status" }, `The chain confirmed the ${answer}.`);
}

function updateRow(tab, item, result) {
  const id = itemId(tab, item);
  const l = lists[tab];
  const index = l.items.findIndex((i) => itemId(tab, i) === id);
  if (index >= 0) l.items[index] = item;
  const row = document.querySelector(`#${tab}-rows tr[data-id="${CSS.escape(id)}"]`);
  if (!row) return;
  const status = String(item.status ?? "").toUpperCase();
  row.dataset.status = status;
  row.querySelector("td.status").replaceChildren(badge(status));
  renderActions(tab, item, row.querySelector("td.actions"), result);
}

function openDetail(tab, item, tx) {
  const id = itemId(tab, item);
  const fields = [
    ["Id", h("span", {}, h("span", { class: "mono" }, id), h("button", { type: "button", class: "copy", "aria-label": "Copy the id", onclick: () => copyText(id) }, "Copy"))],
    ["Status", badge(item.status)],
    ["Issuing agent", h("span", {}, h("span", { class: "mono" }, item.issuing_agent ?? "—"), item.issuing_agent ? h("button", { type: "button", class: "copy", "aria-label": "Copy the issuing agent", onclick: () => copyText(item.issuing_agent) }, "Copy") : null)],
    ["Receiving agent", h("span", { class: "mono" }, item.receiving_agent ?? "—")],
    ["Requested", timeCell(item.timestamp)],
    ["Answered", timeCell(item.answer_timestamp)],
  ];
  if (tab === "orders") {
    fields.push(["Type", item.type ?? "—"], ["Description", item.description || "—"]);
    const meta = item.metadata && typeof item.metadata === "object" ? Object.entries(item.metadata) : [];
    fields.push(["Metadata", meta.length ? h("dl", { class: "fields" }, ...meta.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "string" ? v : JSON.stringify(v))])) : "—"]);
    if (Array.isArray(item.files) && item.files.length) fields.push(["Files", `${item.files.length} attached`]);
  }
  const txs = Array.isArray(item.transaction_ids) ? item.transaction_ids : [];
  fields.push(["Transactions", txs.length ? h("div", {}, ...txs.map((t, n) => h("code", { class: `txfull${n === tx ? " focus" : ""}`, id: `tx${n}` }, t))) : "—"]);
  $("detail-title").textContent = `${KINDS[tab].noun[0].toUpperCase()}${KINDS[tab].noun.slice(1)} ${short(id, 8, 4)}`;
  $("detail-body").replaceChildren(h("dl", { class: "fields" }, ...fields.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  $("detail").showModal();
}

// Opens the detail of request `id` (kind of `tab`), looked up in the mirror: the
// production orders tab links each order to the request it came from.
export async function showRequest(tab, id) {
  const params = new URLSearchParams({ kind: KINDS[tab].kind, q: id, limit: 25 });
  try {
    const page = await api("GET", `/api/requests?${params}`);
    const item = (page?.items ?? []).map((r) => r.item).find((i) => itemId(tab, i) === id);
    if (item) openDetail(tab, item);
    else toast(`The chain request ${short(id, 8, 4)} is not in the MES's copy of the chain.`);
  } catch (e) {
    toast(e.message);
  }
}

export function onRequest(data) {
  const tab = TAB_OF_KIND[data.kind];
  if (!tab) return;
  const l = lists[tab];
  const item = data.item;
  toast(`New ${KINDS[tab].noun} from ${short(item?.issuing_agent)}.`);
  loadCounts();
  if (!l.loaded || l.start !== 0 || (l.status && l.status !== "OPEN")) return;
  if (l.items.some((i) => itemId(tab, i) === String(data.id))) return;
  l.total += 1;
  l.items.unshift(item);
  const body = $(`${tab}-rows`);
  if (!body) return;
  if (body.querySelector("td.empty")) body.replaceChildren();
  const row = requestRow(tab, item);
  row.classList.add("fresh");
  body.prepend(row);
  $(`${tab}-range`).textContent = `${l.start + 1}–${l.start + l.items.length} of ${l.total}`;
}

export function onStatus(data) {
  const tab = TAB_OF_KIND[data.kind];
  if (!tab) return;
  loadCounts();
  // Ids are kept as the chain spells them.
  const existing = lists[tab].items.find((i) => itemId(tab, i) === String(data.id));
  if (existing && String(existing.status).toUpperCase() !== data.status) {
    Object.assign(existing, data.item ?? { status: data.status });
    updateRow(tab, existing, confirmation(tab, String(data.id), data.status));
  }
}

// A decision event: the row turns, for everyone. Answers false when the decision is
// left to the call that sent it from here (or of a kind the console does not show).
export function onDecision(data) {
  const tab = TAB_OF_KIND[data.kind];
  if (!tab) return false;
  const id = String(data.request_id ?? "");
  const existing = lists[tab].items.find((i) => itemId(tab, i) === id);
  const mine = data.operator === session.me?.name;
  if (mine && sending.has(`${tab}/${id}`)) return false;
  const applied = data.outcome === "accepted" || data.outcome === "rejected";
  if (existing && applied) {
    const status = data.response === "accept" ? "ACCEPTED" : "REJECTED";
    const confirmed = mine ? confirmation(tab, id, status) : null;
    if (confirmed || String(existing.status).toUpperCase() !== status) {
      existing.status = status;
      updateRow(tab, existing, confirmed ?? (mine ? null : h("p", { class: "result ok", role: "status" }, `${data.response === "accept" ? "Accepted" : "Rejected"} by ${data.operator}.`)));
    }
  } else if (existing && mine && data.outcome === "not_applied") {
    // Still watched: a chain that commits later after all turns it ACCEPTED/REJECTED.
    updateRow(tab, existing, h("p", { class: "result bad", role: "status" }, "The chain did not apply the answer; you may answer again."));
  }
  if (!mine && applied) toast(`${data.operator} ${data.response}ed ${KINDS[tab].noun} ${short(id, 8, 4)}.`);
  return true;
}
