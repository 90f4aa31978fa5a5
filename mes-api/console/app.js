// MES Bridge operator console: plain ES modules, no dependencies, no bundler. This is
// the entry: it signs in and out and wires the modules together. Start reading here,
// then:
//   api.js        the fetch wrapper, errors as sentences, the session (key, role)
//   dom.js        element helpers (text and attributes only, never HTML)
//   tabs.js       which tab is shown, keyboard moves between tabs
//   requests.js   partner and order requests: inbox, answer flow, detail view
//   production.js the production orders taken over from accepted order requests
//   units.js      production units, edited in place (and their targets)
//   performance.js  per unit: OEE summary and chart against the target
//   chart.js      the inline-SVG line chart the performance tab draws
//   dayreport.js  a day report: the stored shifts, the form that enters one by hand
//   targets.js    the editor of a unit's OEE (and A, P, Q) targets
//   outbox.js     day reports, the outbox and the relay's state
//   decisions.js  the audit trail
//   notifications.js  the webhook notifications: pending, delivered, failed and why
//   delivery.js   a unit's or report's delivery to the chain (shared by the two above)
//   live.js       the event stream, the live badge and the banners
// Everything shown is built with DOM calls (never innerHTML with data), so chain text
// cannot inject markup, and every value put into a URL goes through
// encodeURIComponent (or URLSearchParams), so a chain id cannot change which URL a
// click calls.

import { $ } from "./dom.js";
import { closeSession, dropKey, openSession, session, setHooks } from "./api.js";
import { forgetSeen } from "./delivery.js";
import { checkVerification, connect, disconnect, setBehind } from "./live.js";
import { resetLists, showRequest } from "./requests.js";
import { TABS, currentTab, selectTab, wireTabs } from "./tabs.js";
import { resetUnits } from "./units.js";

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
  const me = await openSession(key);
  $("signin").hidden = true;
  $("user-name").textContent = me.name;
  $("user-role").textContent = me.role;
  $("user").hidden = false;
  $("app").hidden = false;
  document.body.dataset.role = me.role;
  connect();
  const [tab, id] = location.hash.slice(1).split("/");
  selectTab(tab || currentTab(), false);
  // A link to one request (#orders/<id>, as the production orders tab makes) opens it.
  if ((tab === "orders" || tab === "partners") && id) showRequest(tab, decodeURIComponent(id));
}

function signOut(message = "") {
  disconnect();
  closeSession();
  resetLists();
  resetUnits();
  forgetSeen();
  // Nothing of the previous operator's view survives a sign-out.
  for (const t of TABS) $(`panel-${t}`).replaceChildren();
  showSignIn(message);
}

function start() {
  setHooks({ behind: setBehind, signOut });
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = $("key").value.trim();
    if (!key) { $("signin-error").textContent = "Enter your operator key."; return; }
    $("signin-button").disabled = true;
    $("signin-error").textContent = "";
    try {
      await signIn(key);
    } catch (err) {
      $("signin-error").textContent = err.code === "unauthenticated" ? "This key is not known to the server. Check it and try again." : err.message;
    } finally {
      $("signin-button").disabled = false;
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("detail-close").addEventListener("click", () => $("detail").close());
  wireTabs();
  checkVerification();
  if (session.key) {
    signIn(session.key).catch((e) => { dropKey(); showSignIn(e.message); });
  } else {
    showSignIn();
  }
}

start();
