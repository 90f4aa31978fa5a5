// MES Bridge operator console: plain ES module, no dependencies. Everything shown is
// built with DOM calls (never innerHTML with data), so chain text cannot inject markup,
// and every value put into a URL goes through encodeURIComponent (or URLSearchParams),
// so a chain id cannot change which URL a click calls.

const KEY = "mes.operatorKey";
const PAGE_SIZE = 25;

const state = {
  key: sessionStorage.getItem(KEY),
  me: null,
  tab: "partners",
  lists: {
    partners: { start: 0, status: "OPEN", items: [], total: 0, asOf: null, loaded: false },
    orders: { start: 0, status: "OPEN", items: [], total: 0, asOf: null, loaded: false },
  },
  outbox: { status: "", dayOnly: false, rows: [], depth: null, date: "", reports: [] },
  units: [],
  seen: new Map(),
  events: null,
  retry: 1000,
};

const KINDS = {
  partners: { kind: "partner", idField: "partner_request_id", answer: (id) => `/api/partners/${encodeURIComponent(id)}/answer`, noun: "partner request" },
  orders: { kind: "order", idField: "abs_action_id", answer: (id) => `/api/orders/${encodeURIComponent(id)}/answer`, noun: "order request" },
};
const TAB_OF_KIND = { partner: "partners", order: "orders" };

// ---------- small DOM helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (id) => document.getElementById(id);

function sentence(text) {
  const t = String(text ?? "").trim();
  if (!t) return "";
  const s = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : s + ".";
}

function short(hex, head = 6, tail = 6) {
  const s = String(hex ?? "");
  return s.length > head + tail + 1 ? `${s.slice(0, head)}…${s.slice(-tail)}` : s;
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Plain http on a plant network is not a secure context: fall back.
    const area = h("textarea", { "aria-hidden": "true", style: "position:fixed;left:-9999px" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast("Copied to the clipboard.");
}

function keyCell(key, label) {
  if (!key) return h("span", { class: "muted" }, "—");
  return h("span", {},
    h("span", { class: "mono", title: key }, short(key)),
    h("button", { type: "button", class: "copy", "aria-label": `Copy ${label} ${key}`, title: "Copy the full key", onclick: () => copyText(key) }, "Copy"));
}

function timeCell(seconds) {
  if (!seconds) return h("span", { class: "muted" }, "—");
  const d = new Date(Number(seconds) * 1000);
  if (Number.isNaN(d.getTime())) return String(seconds);
  return h("time", { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
}

function isoCell(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return h("time", { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
}

function badge(status) {
  const s = String(status ?? "").toLowerCase();
  const label = s === "done" ? "delivered" : s === "in_flight" ? "sending" : s;
  return h("span", { class: `badge ${s}` }, label.toUpperCase());
}

function toast(text) {
  const t = h("div", { class: "toast", role: "status" }, text);
  $("toasts").append(t);
  setTimeout(() => t.remove(), 5000);
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function human(status, code, message) {
  switch (code) {
    case "unauthenticated": return "Your key was not accepted. Sign in again with a valid operator key.";
    case "forbidden": return "Your role may only look: ask an operator to do this.";
    case "no_master_token": return "The MES has no master token for the chain yet. An administrator sets it with “mes-api token put --instance-type Master --token …”.";
    case "chain_error": return `The chain refused: ${sentence(message)}`;
    case "unexpected_reply": return "The chain answered something the MES does not understand. The answer was not applied.";
    case "chain_behind": return "Chain is behind — waiting for an earlier answer. Nothing was sent; try again shortly.";
    case "chain_timeout": return "The chain did not answer in time. The answer may still be applied; refresh in a moment to check.";
    case "broker_unavailable": return "The Kafka broker cannot be reached right now. Try again in a moment.";
    case "overloaded": return "The server is busy with other chain requests. Try again in a moment.";
    case "database_unavailable": return "The MES database is not available right now. Try again in a moment.";
    case "shutting_down": return "The server is restarting. Try again in a moment.";
    case "not_found": return message ? sentence(message) : "Not found.";
    case "missing_parameter":
    case "invalid_parameter":
    case "invalid_body":
    case "bad_request": return `The request was refused: ${sentence(message)}`;
    case "network": return "The server cannot be reached. Check the network connection, then try again.";
    default: return `Something went wrong (HTTP ${status}). ${sentence(message)}`.trim();
  }
}

async function api(method, path, body) {
  const headers = {};
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  } catch {
    throw new ApiError(0, "network", human(0, "network"));
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    const code = data?.error?.code ?? (res.status === 404 ? "not_found" : `http_${res.status}`);
    const err = new ApiError(res.status, code, human(res.status, code, data?.error?.message ?? ""));
    if (code === "chain_behind") setBehind(true);
    if (res.status === 401 && path !== "/api/session") signOut("Your key is no longer accepted. Sign in again.");
    throw err;
  }
  return data;
}

// ---------- sign-in ----------

function showSignIn(message = "") {
  $("app").hidden = true;
  $("user").hidden = true;
  $("live").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("key").value = "";
  $("key").focus();
}

async function signIn(key) {
  state.key = key;
  const me = await api("POST", "/api/session");
  state.me = me;
  sessionStorage.setItem(KEY, key);
  $("signin").hidden = true;
  $("user-name").textContent = me.name;
  $("user-role").textContent = me.role;
  $("user").hidden = false;
  $("app").hidden = false;
  document.body.dataset.role = me.role;
  connect();
  selectTab(location.hash.slice(1).split("/")[0] || state.tab, false);
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY);
  state.key = null;
  state.me = null;
  if (state.events) { state.events.close(); state.events = null; }
  fetch("/api/session", { method: "DELETE", credentials: "same-origin" }).catch(() => {});
  for (const l of Object.values(state.lists)) { l.loaded = false; l.items = []; }
  state.units = [];
  state.seen.clear();
  // Nothing of the previous operator's view survives a sign-out.
  for (const t of TABS) $(`panel-${t}`).replaceChildren();
  $("live").textContent = "";
  showSignIn(message);
}

// Roles are ordered viewer < operator < admin: operators and admins may answer and edit.
const canAnswer = () => state.me?.role === "operator" || state.me?.role === "admin";

// ---------- tabs ----------

const TABS = ["partners", "orders", "units", "outbox", "decisions"];

function selectTab(tab, focus = true) {
  if (!TABS.includes(tab)) tab = "partners";
  state.tab = tab;
  for (const t of TABS) {
    const button = $(`tab-${t}`);
    const selected = t === tab;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`panel-${t}`).hidden = !selected;
  }
  if (focus) $(`tab-${tab}`).focus();
  if (!location.hash.startsWith(`#${tab}`)) history.replaceState(null, "", `#${tab}`);
  refresh(tab);
}

function refresh(tab) {
  if (tab === "partners" || tab === "orders") return loadList(tab);
  if (tab === "units") return loadUnits();
  if (tab === "outbox") return loadOutbox();
  if (tab === "decisions") return loadDecisions();
}

// ---------- partner and order requests ----------

// The id as the chain spells it: ids are case-sensitive, never folded.
function itemId(tab, item) {
  return String(item?.[KINDS[tab].idField] ?? "");
}

function listPanel(tab) {
  const l = state.lists[tab];
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
async function loadList(tab) {
  const l = state.lists[tab];
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
      const l = state.lists[tab];
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
    const at = state.lists[tab].asOf ? Date.parse(state.lists[tab].asOf) : NaN;
    if (Number.isNaN(at)) { el.textContent = "Reading the chain…"; continue; }
    const s = Math.max(0, Math.round((Date.now() - at) / 1000));
    el.textContent = s < 60 ? `as of ${s} s ago` : s < 3600 ? `as of ${Math.round(s / 60)} min ago` : `as of ${new Date(at).toLocaleString()}`;
    el.title = new Date(at).toISOString();
  }
}
setInterval(showFreshness, 1000);

function renderRows(tab) {
  const l = state.lists[tab];
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
  const l = state.lists[tab];
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

// ---------- production units ----------

// What the chain knows of a unit's latest change, from `unit.chain` (the newest
// outbox row of the unit): a badge and, when it matters, a sentence.
const DELIVERY = {
  delivered: "DELIVERED",
  pending: "PENDING",
  failed: "FAILED",
  none: "NOT SENT",
};

// `what`: "change" for a unit (its latest change), "report" for a day report.
function deliveryCell(chain, what = "change") {
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

async function loadUnits() {
  const panel = $("panel-units");
  panel.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, "Production units"), h("button", { type: "button", class: "btn", onclick: loadUnits }, "Refresh")),
    h("p", { class: "hint" }, "Each change of status or process name is sent to the chain through the outbox; “Chain delivery” says whether the latest one arrived."),
    h("p", { class: "notice bad", id: "units-error", role: "alert", hidden: true }),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Production units" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Unit"), h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Process"), h("th", { scope: "col", class: "opt" }, "Changed"), h("th", { scope: "col" }, "Chain delivery"), h("th", { scope: "col" }, "Action"))),
      h("tbody", { id: "units-rows" }))));
  try {
    state.units = await api("GET", "/api/ProductionUnit");
  } catch (e) {
    $("units-error").textContent = e.message;
    $("units-error").hidden = false;
    state.units = [];
  }
  renderUnits();
  for (const row of state.seen.values()) onUnitOutboxRow(row);
}

function renderUnits() {
  const body = $("units-rows");
  if (!body) return;
  body.replaceChildren(...state.units.map(unitRow));
  if (!state.units.length) body.append(h("tr", {}, h("td", { class: "empty", colspan: 7 }, "No production units yet. They are created through the API (POST /api/ProductionUnit).")));
}

function unitRow(unit) {
  const actions = h("td", { class: "actions" });
  const row = h("tr", { "data-unit": unit.code },
    h("td", { class: "mono" }, unit.code), h("td", {}, unit.name),
    h("td", { class: "unit-status" }, unit.Status), h("td", { class: "unit-process" }, unit.ProcessName ?? h("span", { class: "muted" }, "—")),
    h("td", { class: "opt" }, isoCell(unit.updated_at)), h("td", { class: "delivery" }, deliveryCell(unit.chain)), actions);
  if (canAnswer()) actions.append(h("button", { type: "button", class: "btn small", "aria-label": `Edit unit ${unit.code}`, onclick: () => editUnit(unit.code) }, "Edit"));
  return row;
}

function unitRowElement(code) {
  return document.querySelector(`#units-rows tr[data-unit="${CSS.escape(code)}"]`);
}

// Replaces one unit (state and row) in place, keeping the rest of the table as it is.
function replaceUnit(unit, result) {
  const index = state.units.findIndex((u) => u.code === unit.code);
  if (index >= 0) state.units[index] = unit;
  const old = unitRowElement(unit.code);
  if (!old) return;
  const row = unitRow(unit);
  if (result) row.querySelector("td.actions").append(result);
  old.replaceWith(row);
}

function editUnit(code) {
  const unit = state.units.find((u) => u.code === code);
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
      for (const row of state.seen.values()) onUnitOutboxRow(row);
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

// The chain state an outbox row gives its unit or day report.
function chainOf(row) {
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
function isNews(row, chain) {
  const id = chain?.outbox_id ?? 0;
  if (row.id !== id) return row.id > id;
  return !chain.updated_at || Date.parse(row.updated_at) >= Date.parse(chain.updated_at);
}

// Rows the event stream brought, by dedup key: applied again after a list loads, in
// case its answer was read just before a change the stream announced meanwhile.
const SEEN_LIMIT = 1000;
function remember(row) {
  state.seen.delete(row.dedup_key);
  state.seen.set(row.dedup_key, row);
  if (state.seen.size > SEEN_LIMIT) state.seen.delete(state.seen.keys().next().value);
}

// A row of `unit:CODE` is the unit's state when it is news for it.
function onUnitOutboxRow(row) {
  const m = /^unit:(.+)$/.exec(String(row.ordering_key ?? ""));
  if (!m) return;
  const unit = state.units.find((u) => u.code === m[1]);
  if (!unit || !isNews(row, unit.chain)) return;
  unit.chain = chainOf(row);
  const cell = unitRowElement(unit.code)?.querySelector("td.delivery");
  // A row being edited keeps its inputs; only the delivery cell changes.
  if (cell) cell.replaceChildren(deliveryCell(unit.chain));
}

// ---------- day reports and outbox ----------

// What a chain message does, from its dedup key (the event stream's rows carry no
// payload) and, when loaded, its payload.
function describe(r) {
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

const OUTBOX_LIMIT = 200;

function loadOutbox() {
  const o = state.outbox;
  if (!o.date) o.date = yesterday();
  const panel = $("panel-outbox");
  const filter = h("select", { id: "outbox-status", onchange: (e) => { o.status = e.target.value; loadOutboxRows(); } },
    ...[["", "All"], ["pending", "Pending"], ["in_flight", "Sending"], ["done", "Delivered"], ["failed", "Failed"]].map(([v, t]) => h("option", { value: v, selected: o.status === v }, t)));
  const dayOnly = h("input", { type: "checkbox", id: "outbox-day", checked: o.dayOnly, onchange: (e) => { o.dayOnly = e.target.checked; renderOutbox(); } });
  const date = h("input", { type: "date", id: "report-date", value: o.date, required: true, onchange: (e) => { o.date = e.target.value; loadDayReports(); } });
  panel.replaceChildren(
    h("section", { "aria-labelledby": "reports-title" },
      h("div", { class: "toolbar" }, h("h2", { id: "reports-title" }, "Day reports"),
        h("label", { for: "report-date" }, "Day"), date,
        canAnswer() ? h("button", { type: "button", class: "btn primary", id: "report-run", onclick: runReport }, "Run the daily report for this day") : null,
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
        h("button", { type: "button", class: "btn", onclick: loadOutboxRows }, "Refresh")),
      h("div", { class: "stats", id: "outbox-stats" }),
      h("div", { id: "outbox-relay", role: "status" }),
      h("p", { class: "notice bad", id: "outbox-error", role: "alert", hidden: true }),
      h("div", { class: "table-wrap" }, h("table", { "aria-label": "Outbox" },
        h("thead", {}, h("tr", {}, ...[["Row", "opt"], "Message", "Status", ["Attempts", "opt"], "Last change", "Chain's answer or error"].map((c) => Array.isArray(c) ? h("th", { scope: "col", class: c[1] }, c[0]) : h("th", { scope: "col" }, c)))),
        h("tbody", { id: "outbox-rows" })))));
  return Promise.all([loadDayReports(), loadOutboxRows()]);
}

async function loadOutboxRows() {
  const o = state.outbox;
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
  const o = state.outbox;
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
  body.replaceChildren(...rows.map((r) => h("tr", { "data-row": r.id, "data-status": r.status },
    h("td", { class: "mono opt" }, String(r.id)),
    h("td", {}, h("div", {}, describe(r)), h("div", { class: "hint mono", title: r.dedup_key }, r.topic)),
    h("td", {}, badge(r.status)),
    h("td", { class: "opt" }, String(r.attempts ?? "")),
    h("td", {}, isoCell(r.updated_at)),
    h("td", {}, outboxAnswer(r)))));
  if (!rows.length) body.append(h("tr", {}, h("td", { class: "empty", colspan: 6 }, o.status || o.dayOnly ? "No message with this filter." : "Nothing was sent to the chain yet.")));
}

function percent(x) {
  return typeof x === "number" ? `${(x * 100).toFixed(1)} %` : "—";
}

async function loadDayReports() {
  const o = state.outbox;
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
  for (const row of state.seen.values()) applyToReport(row);
  renderDayReports();
}

function applyToReport(row) {
  const report = state.outbox.reports.find((r) => `day-report:${r.unit}:${r.date}` === row.dedup_key);
  if (report && isNews(row, report.chain)) report.chain = chainOf(row);
}

function renderDayReports() {
  const o = state.outbox;
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
  const o = state.outbox;
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
function onOutboxRows(data) {
  const o = state.outbox;
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

// ---------- decisions ----------

async function loadDecisions() {
  const panel = $("panel-decisions");
  panel.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, "Decisions"), h("button", { type: "button", class: "btn", onclick: loadDecisions }, "Refresh")),
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

// ---------- live updates ----------

function setLive(text, kind) {
  const live = $("live");
  live.hidden = false;
  live.textContent = text;
  live.className = `live ${kind}`;
}

// "Chain is behind": behind a gateway that echoes only the token, an earlier request's
// reply is outstanding and requests of its kind wait (docs/protocol.md §9).
function setBehind(behind) {
  $("behind").hidden = !behind;
}

async function checkBehind() {
  try {
    const health = await api("GET", "/health/ready");
    setBehind((health?.chain?.fences ?? []).length > 0);
    setUnverified(health?.reply_verification);
  } catch { /* the live badge says when the server is away */ }
}

// "Replies from the chain are not verified": the operator chose MES_REPLY_TRUST=unsigned
// (docs/security.md). Shown to everyone, signed in or not: /health/ready needs no key.
function setUnverified(verification) {
  $("unverified").hidden = verification !== "off";
}

async function checkVerification() {
  try {
    const r = await fetch("/health/ready", { headers: { Accept: "application/json" } });
    if (r.ok) setUnverified((await r.json()).reply_verification);
  } catch { /* shown at the next check */ }
}

function connect() {
  if (state.events) state.events.close();
  const source = new EventSource("/api/events");
  state.events = source;
  // "Live" only once the server's poller has its baseline: from then on, every new
  // request shows up here.
  source.addEventListener("hello", (e) => {
    state.retry = 1000;
    checkBehind();
    if (JSON.parse(e.data).watching) setLive("Live", "on");
    else setLive("Starting live updates…", "on");
  });
  source.addEventListener("watching", () => {
    setLive("Live", "on");
    for (const tab of ["partners", "orders"]) if (state.lists[tab].loaded && !state.lists[tab].asOf) loadList(tab);
  });
  source.addEventListener("request", (e) => onRequest(JSON.parse(e.data)));
  source.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
  source.addEventListener("decision", (e) => onDecision(JSON.parse(e.data)));
  source.addEventListener("outbox", (e) => onOutbox(JSON.parse(e.data)));
  source.addEventListener("chain", (e) => setBehind(JSON.parse(e.data).fences.length > 0));
  source.addEventListener("poll_error", () => setLive("Live (the chain is not answering)", "on"));
  // The key was removed or rotated, or the session ended: a new session with the key
  // in hand either works (the session had merely expired) or signs out.
  source.addEventListener("signed_out", async () => {
    source.close();
    if (source !== state.events) return;
    try {
      await api("POST", "/api/session");
      if (state.key && source === state.events) connect();
    } catch (e) {
      if (e.status === 401) signOut("Your key was removed or replaced. Sign in again with a valid key.");
      else source.onerror();
    }
  });
  source.addEventListener("lagged", () => {
    for (const tab of ["partners", "orders"]) if (state.lists[tab].loaded) loadList(tab);
    if (state.tab === "units" || state.tab === "outbox") refresh(state.tab);
  });
  source.onerror = () => {
    if (source !== state.events) return;
    setLive("Connection lost, retrying…", "lost");
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. the server answered an error): retry ourselves,
      // re-establishing the session cookie first.
      const wait = state.retry;
      state.retry = Math.min(state.retry * 2, 30000);
      setTimeout(async () => {
        if (!state.key || source !== state.events) return;
        try { await api("POST", "/api/session"); } catch { /* shown by the badge */ }
        if (state.key) connect();
      }, wait);
    }
  };
}

function onRequest(data) {
  const tab = TAB_OF_KIND[data.kind];
  if (!tab) return;
  const l = state.lists[tab];
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

function onStatus(data) {
  const tab = TAB_OF_KIND[data.kind];
  if (!tab) return;
  loadCounts();
  // Ids are kept as the chain spells them.
  const existing = state.lists[tab].items.find((i) => itemId(tab, i) === String(data.id));
  if (existing && String(existing.status).toUpperCase() !== data.status) {
    Object.assign(existing, data.item ?? { status: data.status });
    updateRow(tab, existing, confirmation(tab, String(data.id), data.status));
  }
}

function onDecision(data) {
  const tab = TAB_OF_KIND[data.kind];
  if (!tab) return;
  const id = String(data.request_id ?? "");
  const existing = state.lists[tab].items.find((i) => itemId(tab, i) === id);
  const mine = data.operator === state.me?.name;
  if (mine && sending.has(`${tab}/${id}`)) return;
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
  if (state.tab === "decisions") loadDecisions();
}

function onOutbox(data) {
  for (const row of data.rows ?? []) remember(row);
  onOutboxRows(data);
  for (const row of data.rows ?? []) {
    onUnitOutboxRow(row);
    if (row.status === "failed") toast(`A chain message failed for good (${describe(row)}): ${sentence(row.last_error)}`);
  }
  if (state.tab === "outbox") {
    renderOutbox(); renderDayReports();
    // The relay's topic state changes with deliveries; look again at most every 5 s.
    if (!state.relayLoaded || Date.now() - state.relayLoaded > 5000) { state.relayLoaded = Date.now(); loadRelay(); }
  }
  else if (data.depth) $("count-outbox").textContent = data.depth.failed ? String(data.depth.failed) : "";
}

// ---------- start ----------

function start() {
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = $("key").value.trim();
    if (!key) { $("signin-error").textContent = "Enter your operator key."; return; }
    $("signin-button").disabled = true;
    $("signin-error").textContent = "";
    try {
      await signIn(key);
    } catch (err) {
      state.key = null;
      $("signin-error").textContent = err.code === "unauthenticated" ? "This key is not known to the server. Check it and try again." : err.message;
    } finally {
      $("signin-button").disabled = false;
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("detail-close").addEventListener("click", () => $("detail").close());
  const tabs = document.querySelector(".tabs");
  tabs.addEventListener("click", (e) => { const t = e.target.closest("[role=tab]"); if (t) selectTab(t.dataset.tab); });
  tabs.addEventListener("keydown", (e) => {
    const i = TABS.indexOf(state.tab);
    if (e.key === "ArrowRight") selectTab(TABS[(i + 1) % TABS.length]);
    else if (e.key === "ArrowLeft") selectTab(TABS[(i + TABS.length - 1) % TABS.length]);
    else if (e.key === "Home") selectTab(TABS[0]);
    else if (e.key === "End") selectTab(TABS[TABS.length - 1]);
    else return;
    e.preventDefault();
  });
  checkVerification();
  if (state.key) {
    signIn(state.key).catch((e) => { sessionStorage.removeItem(KEY); state.key = null; showSignIn(e.message); });
  } else {
    showSignIn();
  }
}

start();
