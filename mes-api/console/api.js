// The API as the console calls it: the operator's session (key and who it is), one
// fetch wrapper that sends the key, and every error turned into a sentence.

import { sentence, toast } from "./dom.js";

const KEY = "mes.operatorKey";

// The key is kept in the tab's sessionStorage only; `me` is `{name, role}` once the
// server accepted it.
export const session = {
  key: sessionStorage.getItem(KEY),
  me: null,
};

// Roles are ordered viewer < operator < admin: operators and admins may answer and edit.
export const canAnswer = () => session.me?.role === "operator" || session.me?.role === "admin";

// What the page does when a call shows that the chain is behind, or that the key is no
// longer accepted. app.js sets them: they belong to modules that call the API
// themselves, and a hook keeps the imports one-way.
const hooks = { behind: () => {}, signOut: () => {} };
export function setHooks(h) {
  Object.assign(hooks, h);
}

// The key is no longer accepted: the page signs out and says `message`.
export function signedOut(message) {
  hooks.signOut(message);
}

export class ApiError extends Error {
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
    case "conflict": return message ? sentence(message) : "This was changed meanwhile: refresh, then try again.";
    case "not_found": return message ? sentence(message) : "Not found.";
    case "missing_parameter":
    case "invalid_parameter":
    case "invalid_body":
    case "bad_request": return `The request was refused: ${sentence(message)}`;
    case "network": return "The server cannot be reached. Check the network connection, then try again.";
    default: return `Something went wrong (HTTP ${status}). ${sentence(message)}`.trim();
  }
}

// Calls the API with the operator's key; answers the JSON body, or throws an ApiError
// whose message is a sentence for the operator.
export async function api(method, path, body) {
  const headers = {};
  if (session.key) headers.Authorization = `Bearer ${session.key}`;
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
    if (code === "chain_behind") hooks.behind(true);
    if (res.status === 401 && path !== "/api/session") signedOut("Your key is no longer accepted. Sign in again.");
    throw err;
  }
  return data;
}

// Downloads a file the API answers (the CSV exports) with the operator's key: fetched,
// then saved under the name the server gives (Content-Disposition). `button`, if
// given, is disabled meanwhile. An error is shown as a toast, as a sentence.
export async function download(path, button) {
  if (button) button.disabled = true;
  try {
    let res;
    try {
      res = await fetch(path, { headers: session.key ? { Authorization: `Bearer ${session.key}` } : {}, credentials: "same-origin" });
    } catch {
      throw new ApiError(0, "network", human(0, "network"));
    }
    if (!res.ok) {
      let data = null;
      try { data = await res.json(); } catch { data = null; }
      const code = data?.error?.code ?? `http_${res.status}`;
      if (res.status === 401) signedOut("Your key is no longer accepted. Sign in again.");
      throw new ApiError(res.status, code, human(res.status, code, data?.error?.message ?? ""));
    }
    const name = /filename="?([^";]+)"?/.exec(res.headers.get("Content-Disposition") ?? "")?.[1] ?? path.split("/").pop().split("?")[0];
    const url = URL.createObjectURL(await res.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    toast(`Downloaded ${name}.`);
  } catch (e) {
    toast(e.message);
  } finally {
    if (button) button.disabled = false;
  }
}

// `POST /api/session` with `key`: the server checks it, answers who it is and sets the
// event stream's cookie. The key is kept (for this tab) once it is accepted.
export async function openSession(key) {
  session.key = key;
  let me;
  try {
    me = await api("POST", "/api/session");
  } catch (e) {
    session.key = null;
    throw e;
  }
  session.me = me;
  sessionStorage.setItem(KEY, key);
  return me;
}

// Re-opens the session with the key in hand (its cookie may have expired).
export const renewSession = () => api("POST", "/api/session");

// Forgets the key, here and on the server (its cookies are removed).
export function closeSession() {
  sessionStorage.removeItem(KEY);
  session.key = null;
  session.me = null;
  fetch("/api/session", { method: "DELETE", credentials: "same-origin" }).catch(() => {});
}

// Forgets a kept key the server no longer accepts.
export function dropKey() {
  sessionStorage.removeItem(KEY);
  session.key = null;
}
