// The tabs: which one is shown (kept in the URL's hash), loading it when it is
// selected, and moving between them with the arrow keys, Home and End.

import { $ } from "./dom.js";
import { loadList } from "./requests.js";
import { loadUnits } from "./units.js";
import { loadOutbox } from "./outbox.js";
import { loadDecisions } from "./decisions.js";
import { loadNotifications } from "./notifications.js";
import { loadPerformance } from "./performance.js";
import { loadProduction } from "./production.js";

export const TABS = ["partners", "orders", "production", "units", "performance", "outbox", "decisions", "notifications"];

let current = "partners";

// The tab shown (or, signed out, the one to show first).
export const currentTab = () => current;

export function selectTab(tab, focus = true) {
  if (!TABS.includes(tab)) tab = "partners";
  current = tab;
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

// Loads `tab` again.
export function refresh(tab) {
  if (tab === "partners" || tab === "orders") return loadList(tab);
  if (tab === "production") return loadProduction();
  if (tab === "units") return loadUnits();
  if (tab === "performance") return loadPerformance();
  if (tab === "outbox") return loadOutbox();
  if (tab === "decisions") return loadDecisions();
  if (tab === "notifications") return loadNotifications();
}

// Clicks and keys on the tab list.
export function wireTabs() {
  const tabs = document.querySelector(".tabs");
  tabs.addEventListener("click", (e) => { const t = e.target.closest("[role=tab]"); if (t) selectTab(t.dataset.tab); });
  tabs.addEventListener("keydown", (e) => {
    const i = TABS.indexOf(current);
    if (e.key === "ArrowRight") selectTab(TABS[(i + 1) % TABS.length]);
    else if (e.key === "ArrowLeft") selectTab(TABS[(i + TABS.length - 1) % TABS.length]);
    else if (e.key === "Home") selectTab(TABS[0]);
    else if (e.key === "End") selectTab(TABS[TABS.length - 1]);
    else return;
    e.preventDefault();
  });
}
