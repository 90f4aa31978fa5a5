// Element helpers. Everything the console shows is built with these DOM calls (never
// innerHTML with data): a value becomes a text node or an attribute, so text from the
// chain cannot inject markup.

// `h("td", { class: "x", onclick: f, text: "…" }, child, …)`: an element; strings and
// numbers become text nodes, null/undefined/false attributes and children are left out.
export function h(tag, attrs = {}, ...children) {
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
export const $ = (id) => document.getElementById(id);

// A message from the chain or the server as a sentence: capitalised, with a full stop.
export function sentence(text) {
  const t = String(text ?? "").trim();
  if (!t) return "";
  const s = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : s + ".";
}

// A long key or id shortened to its head and tail.
export function short(hex, head = 6, tail = 6) {
  const s = String(hex ?? "");
  return s.length > head + tail + 1 ? `${s.slice(0, head)}…${s.slice(-tail)}` : s;
}

export async function copyText(text) {
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

export function keyCell(key, label) {
  if (!key) return h("span", { class: "muted" }, "—");
  return h("span", {},
    h("span", { class: "mono", title: key }, short(key)),
    h("button", { type: "button", class: "copy", "aria-label": `Copy ${label} ${key}`, title: "Copy the full key", onclick: () => copyText(key) }, "Copy"));
}

export function timeCell(seconds) {
  if (!seconds) return h("span", { class: "muted" }, "—");
  const d = new Date(Number(seconds) * 1000);
  if (Number.isNaN(d.getTime())) return String(seconds);
  return h("time", { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
}

export function isoCell(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return h("time", { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
}

export function badge(status) {
  const s = String(status ?? "").toLowerCase();
  const label = s === "done" ? "delivered" : s === "in_flight" ? "sending" : s;
  return h("span", { class: `badge ${s}` }, label.toUpperCase());
}

export function toast(text) {
  const t = h("div", { class: "toast", role: "status" }, text);
  $("toasts").append(t);
  setTimeout(() => t.remove(), 5000);
}
