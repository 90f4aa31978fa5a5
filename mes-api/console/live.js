// Live updates: the event stream (`GET /api/events`, opened with the session cookie)
// and what each event changes, the "Live" badge, the "Chain is behind" header and the
// banner that says replies from the chain are not verified.

import { $, sentence, toast } from "./dom.js";
import { api, renewSession, session, signedOut } from "./api.js";
import { remember } from "./delivery.js";
import { loadDecisions } from "./decisions.js";
import { describe, onOutboxRows, showOutbox } from "./outbox.js";
import { onUnitChanged } from "./performance.js";
import { onDecision, onRequest, onStatus, reloadLists } from "./requests.js";
import { currentTab, refresh } from "./tabs.js";
import { onUnitOutboxRow, onUnitTarget } from "./units.js";

// The open stream, and how long to wait before opening a new one after the browser
// gave up on it.
let events = null;
let retry = 1000;

function setLive(text, kind) {
  const live = $("live");
  live.hidden = false;
  live.textContent = text;
  live.className = `live ${kind}`;
}

// "Chain is behind": behind a gateway that echoes only the token, an earlier request's
// reply is outstanding and requests of its kind wait (docs/protocol.md §9).
export function setBehind(behind) {
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

export async function checkVerification() {
  try {
    const r = await fetch("/health/ready", { headers: { Accept: "application/json" } });
    if (r.ok) setUnverified((await r.json()).reply_verification);
  } catch { /* shown at the next check */ }
}

export function connect() {
  if (events) events.close();
  const source = new EventSource("/api/events");
  events = source;
  // "Live" only once the server's poller has its baseline: from then on, every new
  // request shows up here.
  source.addEventListener("hello", (e) => {
    retry = 1000;
    checkBehind();
    if (JSON.parse(e.data).watching) setLive("Live", "on");
    else setLive("Starting live updates…", "on");
  });
  source.addEventListener("watching", () => {
    setLive("Live", "on");
    reloadLists(true);
  });
  source.addEventListener("request", (e) => onRequest(JSON.parse(e.data)));
  source.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
  source.addEventListener("decision", (e) => {
    if (onDecision(JSON.parse(e.data)) && currentTab() === "decisions") loadDecisions();
  });
  source.addEventListener("outbox", (e) => onOutbox(JSON.parse(e.data)));
  // A day report stored or a unit's targets changed (through this server).
  source.addEventListener("day_report", (e) => onUnitChanged(JSON.parse(e.data).unit));
  source.addEventListener("target", (e) => {
    const { unit, target } = JSON.parse(e.data);
    onUnitChanged(unit);
    onUnitTarget(unit, target);
  });
  source.addEventListener("chain", (e) => setBehind(JSON.parse(e.data).fences.length > 0));
  source.addEventListener("poll_error", () => setLive("Live (the chain is not answering)", "on"));
  // The key was removed or rotated, or the session ended: a new session with the key
  // in hand either works (the session had merely expired) or signs out.
  source.addEventListener("signed_out", async () => {
    source.close();
    if (source !== events) return;
    try {
      await renewSession();
      if (session.key && source === events) connect();
    } catch (e) {
      if (e.status === 401) signedOut("Your key was removed or replaced. Sign in again with a valid key.");
      else source.onerror();
    }
  });
  source.addEventListener("lagged", () => {
    reloadLists();
    if (["units", "outbox", "performance"].includes(currentTab())) refresh(currentTab());
  });
  source.onerror = () => {
    if (source !== events) return;
    setLive("Connection lost, retrying…", "lost");
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. the server answered an error): retry ourselves,
      // re-establishing the session cookie first.
      const wait = retry;
      retry = Math.min(retry * 2, 30000);
      setTimeout(async () => {
        if (!session.key || source !== events) return;
        try { await renewSession(); } catch { /* shown by the badge */ }
        if (session.key) connect();
      }, wait);
    }
  };
}

// Closes the stream and clears the badge (signing out).
export function disconnect() {
  if (events) { events.close(); events = null; }
  $("live").textContent = "";
}

function onOutbox(data) {
  for (const row of data.rows ?? []) remember(row);
  onOutboxRows(data);
  for (const row of data.rows ?? []) {
    onUnitOutboxRow(row);
    if (row.status === "failed") toast(`A chain message failed for good (${describe(row)}): ${sentence(row.last_error)}`);
  }
  showOutbox(data, currentTab() === "outbox");
}
