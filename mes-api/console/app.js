// MES Bridge operator console: plain ES module, no dependencies. Everything shown is
// built with DOM calls (never innerHTML with data), so chain text cannot inject markup.

const KEY = "mes.operatorKey";
const PAGE_SIZE = 25;

const state = {
  key: sessionStorage.getItem(KEY),
  me: null,
  tab: "partners",
  lists: {
    partners: { start: 0, status: "OPEN", items: [], loaded: false },
    orders: { start: 0, status: "OPEN", items: [], loaded: false },
  },
  outbox: { status: "", dayOnly: false, rows: [], depth: null },
  units: [],
  unitDelivery: new Map(),
  events: null,
  retry: 1000,
};

const KINDS = {
  partners: { kind: "partner", idField: "partner_request_id", list: "/api/KafkaPartner/LIST", answer: (id) => `/api/partners/${id}/answer`, noun: "partner request" },
  orders: { kind: "order", idField: "abs_action_id", list: "/api/KafkaOrder/LIST", answer: (id) => `/api/orders/${id}/answer`, noun: "order request" },
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
    case "chain_timeout": return "The chain did not answer in time. The answer may still be applied; refresh in a moment to check.";
    case "broker_unavailable": return "The Kafka broker cannot be reached right now. Try again in a moment.";
    case "overloaded": return "The server is busy with other chain requests. Try again in a moment.";
    case "database_unavailable": return "The MES database is not available right now. Try again in a moment.";
    case "shutting_down": return "The server is restarting. Try again in a moment.";
    case "not_found": return "This server does not offer that yet.";
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
  // Nothing of the previous operator's view survives a sign-out.
  for (const t of TABS) $(`panel-${t}`).replaceChildren();
  $("live").textContent = "";
  showSignIn(message);
}

const canAnswer = () => state.me?.role === "operator";

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

function itemId(tab, item) {
  return String(item?.[KINDS[tab].idField] ?? "").toLowerCase();
}

function listPanel(tab) {
  const l = state.lists[tab];
  const k = KINDS[tab];
  const panel = $(`panel-${tab}`);
  const filter = h("select", { id: `${tab}-status`, onchange: (e) => { l.status = e.target.value; l.start = 0; loadList(tab); } },
    ...[["OPEN", "Open"], ["ACCEPTED", "Accepted"], ["REJECTED", "Rejected"], ["", "All"]].map(([v, t]) => h("option", { value: v, selected: l.status === v }, t)));
  const head = tab === "partners"
    ? ["Request", "Issuing agent", "Status", "Requested", ["Answered", "opt"], ["Transactions", "opt"], "Action"]
    : ["Order", "Issuing agent", "What", "Status", "Ordered", ["Transactions", "opt"], "Action"];
  panel.replaceChildren(
    h("div", { class: "toolbar" },
      h("h2", {}, tab === "partners" ? "Partner requests" : "Order requests"),
      h("label", { for: `${tab}-status` }, "Status"), filter,
      h("button", { type: "button", class: "btn", onclick: () => loadList(tab) }, "Refresh")),
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

async function loadList(tab) {
  const l = state.lists[tab];
  if (!$(`${tab}-rows`)) listPanel(tab);
  const params = new URLSearchParams({ start: l.start, limit: PAGE_SIZE });
  if (l.status) params.set("status", l.status);
  const error = $(`${tab}-error`);
  try {
    const items = await api("GET", `${KINDS[tab].list}?${params}`);
    l.items = Array.isArray(items) ? items : [];
    l.loaded = true;
    error.hidden = true;
    renderRows(tab);
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
}

function renderRows(tab) {
  const l = state.lists[tab];
  const body = $(`${tab}-rows`);
  if (!body) return;
  body.replaceChildren(...l.items.map((item) => requestRow(tab, item)));
  if (!l.items.length) {
    body.append(h("tr", {}, h("td", { class: "empty", colspan: 7 }, l.status ? `No ${l.status.toLowerCase()} ${KINDS[tab].noun}s on this page.` : `No ${KINDS[tab].noun}s on this page.`)));
  }
  $(`${tab}-range`).textContent = l.items.length ? `Chain items ${l.start + 1}–${l.start + PAGE_SIZE}` : "";
  $(`${tab}-prev`).disabled = l.start === 0;
  $(`${tab}-next`).disabled = l.status ? l.items.length === 0 : l.items.length < PAGE_SIZE;
  if (tab === "partners" || tab === "orders") {
    const open = l.status === "OPEN" ? l.items.length : l.items.filter((i) => String(i.status).toUpperCase() === "OPEN").length;
    $(`count-${tab}`).textContent = open ? String(open) : "";
  }
}

function txLinks(tab, item) {
  const ids = Array.isArray(item.transaction_ids) ? item.transaction_ids : [];
  if (!ids.length) return h("span", { class: "muted" }, "—");
  return h("span", {}, ...ids.map((tx, n) =>
    h("a", { class: "tx mono", href: `#${tab}/${itemId(tab, item)}/tx${n}`, title: tx, onclick: (e) => { e.preventDefault(); openDetail(tab, item, n); } }, short(tx, 8, 6))));
}

function requestRow(tab, item) {
  const id = itemId(tab, item);
  const status = String(item.status ?? "").toUpperCase();
  const idLink = h("a", { class: "mono", href: `#${tab}/${id}`, title: id, onclick: (e) => { e.preventDefault(); openDetail(tab, item); } }, short(id, 8, 4));
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
  try {
    const res = await api("POST", KINDS[tab].answer(id), { response: answer });
    item.status = answer === "accept" ? "ACCEPTED" : "REJECTED";
    const msg = typeof res?.message === "string" ? res.message : JSON.stringify(res?.message ?? "");
    let text = `The chain answered: ${sentence(msg)}`;
    if (res?.production_order) text += ` Production order ${res.production_order.id} was created.`;
    updateRow(tab, item, h("p", { class: "result ok", role: "status" }, text));
  } catch (e) {
    renderActions(tab, item, cell, h("p", { class: "result bad", role: "alert" }, e.message));
  }
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

const unitKey = (u) => String(u.code ?? u.Code ?? u.id ?? u.Id ?? "");
const unitStatus = (u) => u.status ?? u.Status ?? "";
const unitProcess = (u) => u.process_name ?? u.ProcessName ?? "";

async function loadUnits() {
  const panel = $("panel-units");
  panel.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, "Production units"), h("button", { type: "button", class: "btn", onclick: loadUnits }, "Refresh")),
    h("p", { class: "hint" }, "Each change of status or process name is sent to the chain through the outbox; the last column says whether it arrived."),
    h("p", { class: "notice bad", id: "units-error", role: "alert", hidden: true }),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Production units" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Unit"), h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Process"), h("th", { scope: "col", class: "opt" }, "Changed"), h("th", { scope: "col" }, "Chain delivery"), h("th", { scope: "col" }, "Action"))),
      h("tbody", { id: "units-rows" }))));
  try {
    const data = await api("GET", "/api/ProductionUnit");
    state.units = Array.isArray(data) ? data : (data?.items ?? data?.units ?? []);
  } catch (e) {
    $("units-error").textContent = e.status === 404 ? "This server does not offer production units yet." : e.message;
    $("units-error").hidden = false;
    state.units = [];
  }
  await loadDelivery();
  renderUnits();
}

async function loadDelivery() {
  try {
    const data = await api("GET", "/api/outbox?limit=500");
    const rows = Array.isArray(data) ? data : (data?.rows ?? data?.items ?? []);
    state.unitDelivery = new Map();
    // Newest first: the first row seen per unit is its latest change.
    for (const r of rows) {
      const key = String(r.ordering_key ?? "");
      if (key.startsWith("unit:") && !state.unitDelivery.has(key.slice(5))) state.unitDelivery.set(key.slice(5), r);
    }
  } catch {
    state.unitDelivery = null;
  }
}

function deliveryCell(unit) {
  if (state.unitDelivery === null) return h("span", { class: "muted" }, "Unknown (no outbox route)");
  const r = state.unitDelivery.get(unitKey(unit));
  if (!r) return h("span", { class: "muted" }, "Nothing sent yet");
  const parts = [badge(r.status)];
  if (r.status === "failed" || r.last_error) parts.push(h("div", { class: "result bad" }, sentence(r.last_error ?? "failed")));
  else if (r.status !== "done" && r.attempts) parts.push(h("div", { class: "hint" }, `${r.attempts} attempt(s) so far`));
  return h("div", {}, ...parts);
}

function renderUnits() {
  const body = $("units-rows");
  if (!body) return;
  body.replaceChildren(...state.units.map(unitRow));
  if (!state.units.length) body.append(h("tr", {}, h("td", { class: "empty", colspan: 7 }, "No production units.")));
}

function unitRow(unit) {
  const key = unitKey(unit);
  const actions = h("td", { class: "actions" });
  const row = h("tr", { "data-unit": key },
    h("td", { class: "mono" }, key), h("td", {}, unit.name ?? unit.Name ?? ""),
    h("td", {}, unitStatus(unit)), h("td", {}, unitProcess(unit) || h("span", { class: "muted" }, "—")),
    h("td", { class: "opt" }, isoCell(unit.updated_at)), h("td", { class: "delivery" }, deliveryCell(unit)), actions);
  if (canAnswer()) actions.append(h("button", { type: "button", class: "btn small", onclick: () => editUnit(unit, row) }, "Edit"));
  return row;
}

function editUnit(unit, row) {
  const key = unitKey(unit);
  const status = h("input", { "aria-label": `Status of ${key}`, value: unitStatus(unit), size: 12 });
  const process = h("input", { "aria-label": `Process of ${key}`, value: unitProcess(unit), size: 16 });
  const result = h("p", { class: "result", role: "status" });
  const save = async () => {
    result.className = "result busy";
    result.textContent = "Saving…";
    try {
      const updated = await api("PATCH", `/api/ProductionUnit/${encodeURIComponent(key)}`, { Status: status.value.trim(), ProcessName: process.value.trim() });
      const index = state.units.findIndex((u) => unitKey(u) === key);
      if (index >= 0 && updated && typeof updated === "object") state.units[index] = updated;
      await loadDelivery();
      renderUnits();
      toast(`Unit ${key} saved; its change is on its way to the chain.`);
    } catch (e) {
      result.className = "result bad";
      result.textContent = e.message;
    }
  };
  row.children[2].replaceChildren(status);
  row.children[3].replaceChildren(process);
  const cell = row.querySelector("td.actions");
  cell.replaceChildren(h("div", { class: "row" },
    h("button", { type: "button", class: "btn small primary", onclick: save }, "Save"),
    h("button", { type: "button", class: "btn small ghost", onclick: renderUnits }, "Cancel")), result);
  row.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.target.tagName === "INPUT") save(); if (e.key === "Escape") renderUnits(); });
  status.focus();
}

// ---------- day reports and outbox ----------

const TOPIC_NAMES = { BLK_Rty: "record type", BLK_Rec: "record" };

async function loadOutbox() {
  const o = state.outbox;
  const panel = $("panel-outbox");
  const filter = h("select", { id: "outbox-status", onchange: (e) => { o.status = e.target.value; loadOutbox(); } },
    ...[["", "All"], ["pending", "Pending"], ["in_flight", "Sending"], ["done", "Delivered"], ["failed", "Failed"]].map(([v, t]) => h("option", { value: v, selected: o.status === v }, t)));
  const dayOnly = h("input", { type: "checkbox", id: "outbox-day", checked: o.dayOnly, onchange: (e) => { o.dayOnly = e.target.checked; renderOutbox(); } });
  const date = h("input", { type: "date", id: "report-date", "aria-label": "Day of the report" });
  const runResult = h("span", { class: "result", role: "status" });
  panel.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, "Day reports & outbox"),
      h("label", { for: "outbox-status" }, "Status"), filter,
      h("label", {}, dayOnly, " Day reports only"),
      h("button", { type: "button", class: "btn", onclick: loadOutbox }, "Refresh")),
    h("div", { class: "stats", id: "outbox-stats" }),
    canAnswer() ? h("div", { class: "toolbar" }, h("label", { for: "report-date" }, "Send the day report of"), date,
      h("button", { type: "button", class: "btn", onclick: () => runReport(date.value, runResult) }, "Send now"), runResult) : null,
    h("p", { class: "notice bad", id: "outbox-error", role: "alert", hidden: true }),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Outbox" },
      h("thead", {}, h("tr", {}, ...["Row", "Message", "Key", "Status", "Attempts", "Last change", "Chain's answer or error"].map((c, n) => h("th", { scope: "col", class: n === 4 ? "opt" : null }, c)))),
      h("tbody", { id: "outbox-rows" }))));
  const params = new URLSearchParams({ limit: 200 });
  if (o.status) params.set("status", o.status);
  try {
    const data = await api("GET", `/api/outbox?${params}`);
    o.rows = Array.isArray(data) ? data : (data?.rows ?? data?.items ?? []);
    o.depth = Array.isArray(data) ? o.depth : (data?.depth ?? o.depth);
  } catch (e) {
    $("outbox-error").textContent = e.status === 404 ? "This server does not offer the outbox view yet." : e.message;
    $("outbox-error").hidden = false;
    o.rows = [];
  }
  renderOutbox();
}

async function runReport(date, result) {
  result.className = "result busy";
  result.textContent = "Queuing…";
  try {
    const q = date ? `?date=${encodeURIComponent(date)}` : "";
    await api("POST", `/api/reports/daily/run${q}`);
    result.className = "result ok";
    result.textContent = "The day reports are queued for the chain.";
    loadOutbox();
  } catch (e) {
    result.className = "result bad";
    result.textContent = e.message;
  }
}

function renderOutbox() {
  const o = state.outbox;
  const stats = $("outbox-stats");
  if (stats) {
    const d = o.depth ?? o.rows.reduce((acc, r) => { acc[r.status] = (acc[r.status] ?? 0) + 1; return acc; }, {});
    stats.replaceChildren(...[["pending", "Pending"], ["in_flight", "Sending"], ["done", "Delivered"], ["failed", "Failed for good"]].map(([k, l]) =>
      h("div", { class: `stat ${k}` }, h("div", { class: "n" }, String(d[k] ?? 0)), h("div", { class: "l" }, l))));
    $("count-outbox").textContent = d.failed ? String(d.failed) : "";
  }
  const body = $("outbox-rows");
  if (!body) return;
  const rows = o.rows.filter((r) => !o.dayOnly || String(r.ordering_key ?? "").startsWith("day-report:"));
  body.replaceChildren(...rows.map((r) => h("tr", { "data-row": r.id },
    h("td", { class: "mono" }, String(r.id)),
    h("td", {}, TOPIC_NAMES[r.topic] ? `${TOPIC_NAMES[r.topic]} (${r.topic})` : r.topic ?? ""),
    h("td", { class: "mono" }, r.ordering_key ?? ""),
    h("td", {}, badge(r.status)),
    h("td", { class: "opt" }, String(r.attempts ?? "")),
    h("td", {}, isoCell(r.updated_at)),
    h("td", {}, r.last_error ? h("span", { class: "result bad" }, sentence(r.last_error)) : (r.chain_message ?? h("span", { class: "muted" }, "—"))))));
  if (!rows.length) body.append(h("tr", {}, h("td", { class: "empty", colspan: 7 }, "Nothing in the outbox with this filter.")));
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

function connect() {
  if (state.events) state.events.close();
  const source = new EventSource("/api/events");
  state.events = source;
  // "Live" only once the server's poller has its baseline: from then on, every new
  // request shows up here.
  source.addEventListener("hello", (e) => {
    state.retry = 1000;
    if (JSON.parse(e.data).watching) setLive("Live", "on");
    else setLive("Starting live updates…", "on");
  });
  source.addEventListener("watching", () => setLive("Live", "on"));
  source.addEventListener("request", (e) => onRequest(JSON.parse(e.data)));
  source.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
  source.addEventListener("decision", (e) => onDecision(JSON.parse(e.data)));
  source.addEventListener("outbox", (e) => onOutbox(JSON.parse(e.data)));
  source.addEventListener("poll_error", () => setLive("Live (the chain is not answering)", "on"));
  source.addEventListener("lagged", () => { for (const tab of ["partners", "orders"]) if (state.lists[tab].loaded) loadList(tab); });
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
  if (!l.loaded || l.start !== 0 || (l.status && l.status !== "OPEN")) return;
  if (l.items.some((i) => itemId(tab, i) === data.id)) return;
  l.items.unshift(item);
  const body = $(`${tab}-rows`);
  if (!body) return;
  if (body.querySelector("td.empty")) body.replaceChildren();
  const row = requestRow(tab, item);
  row.classList.add("fresh");
  body.prepend(row);
  const count = $(`count-${tab}`);
  count.textContent = String((Number(count.textContent) || 0) + 1);
}

function onStatus(data) {
  const tab = TAB_OF_KIND[data.kind];
  if (!tab) return;
  const existing = state.lists[tab].items.find((i) => itemId(tab, i) === data.id);
  if (existing && String(existing.status).toUpperCase() !== data.status) {
    Object.assign(existing, data.item ?? { status: data.status });
    updateRow(tab, existing);
  }
}

function onDecision(data) {
  const tab = TAB_OF_KIND[data.kind];
  if (!tab) return;
  const id = String(data.request_id).toLowerCase();
  const existing = state.lists[tab].items.find((i) => itemId(tab, i) === id);
  const mine = data.operator === state.me?.name;
  if (existing && data.outcome === "ok") {
    const status = data.response === "accept" ? "ACCEPTED" : "REJECTED";
    if (String(existing.status).toUpperCase() !== status) {
      existing.status = status;
      updateRow(tab, existing, mine ? null : h("p", { class: "result ok", role: "status" }, `${data.response === "accept" ? "Accepted" : "Rejected"} by ${data.operator}.`));
    }
  }
  if (!mine && data.outcome === "ok") toast(`${data.operator} ${data.response}ed ${KINDS[tab].noun} ${short(id, 8, 4)}.`);
  if (state.tab === "decisions") loadDecisions();
}

function onOutbox(data) {
  const o = state.outbox;
  if (data.depth) o.depth = data.depth;
  for (const row of data.rows ?? []) {
    const i = o.rows.findIndex((r) => r.id === row.id);
    if (i >= 0) o.rows[i] = row;
    else if (!o.status || o.status === row.status) o.rows.unshift(row);
    const key = String(row.ordering_key ?? "");
    if (key.startsWith("unit:") && state.unitDelivery) state.unitDelivery.set(key.slice(5), row);
    if (row.status === "failed") toast(`A chain message for ${row.ordering_key} failed: ${sentence(row.last_error)}`);
  }
  if (state.tab === "outbox") renderOutbox();
  else if (data.depth) $("count-outbox").textContent = data.depth.failed ? String(data.depth.failed) : "";
  if (state.tab === "units") renderUnits();
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
  if (state.key) {
    signIn(state.key).catch((e) => { sessionStorage.removeItem(KEY); state.key = null; showSignIn(e.message); });
  } else {
    showSignIn();
  }
}

start();
