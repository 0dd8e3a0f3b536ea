// The fleet status page: read-only, for any role. Summary counts, offline and faulted chargers, open
// maintenance tickets, supply warnings in force and every site's chargers, from the operator API under the
// token's role and region. Plain DOM, no framework or build step; every value from the API goes in through
// textContent, never HTML.
"use strict";

(() => {
  const TOKEN_KEY = "chargeops.status.token"; // its own key: signing out here leaves the crew page signed in
  const REFRESH_MS = 30000;
  const PAGE = 1000; // the API's largest charger page
  const MAX_PAGES = 20; // a status page, not an export: beyond 20,000 chargers it says it shows the first
  const NONE = "(none)"; // the fleet summary's key for "no site" / "no status yet"
  const LEVEL_RANK = { critical: 0, warning: 1, watch: 2 };

  const $ = (id) => document.getElementById(id);
  let me = null;
  let timer = null;
  let busy = false;

  const { say, el, span, when } = window.chargeopsUI;
  const api = (path) =>
    window.chargeopsUI.request(
      TOKEN_KEY, "Cannot reach the server; showing the last figures, retrying shortly.", "GET", path,
    );

  async function allChargers() {
    const items = [];
    let cursor = null;
    for (let n = 0; n < MAX_PAGES; n++) {
      const query = new URLSearchParams({ limit: String(PAGE) });
      if (cursor) query.set("cursor", cursor);
      const page = await api(`/api/chargers?${query}`);
      items.push(...(page.items || []));
      cursor = page.next;
      if (!cursor) return { items, cut: false };
    }
    return { items, cut: true };
  }

  function ago(iso) {
    return iso ? `${span(Date.now() - new Date(iso).getTime())} ago` : "never";
  }

  const slug = (text) => String(text || "none").toLowerCase().replace(/[^a-z0-9]+/g, "-");
  const statusText = (status) => (!status || status === NONE ? "no status yet" : status);
  const siteText = (site) => (!site || site === NONE ? "no site" : site);

  // The error code a faulted charger reported with its worst connector, if any.
  function faultCode(c) {
    const faulted = (c.connectors || []).find((k) => k.status === "Faulted" && k.error_code);
    return faulted && faulted.error_code !== "NoError" ? faulted.error_code : null;
  }

  function count(id, n) {
    $(id).textContent = `(${n})`;
  }

  function tile(id, n, bad) {
    $(`n-${id}`).textContent = String(n);
    const box = $(`tile-${id}`);
    if (box) box.classList.toggle("bad", Boolean(bad) && n > 0);
  }

  function renderSummary(summary) {
    const chargers = summary.chargers;
    const tickets = summary.maintenance_tickets;
    tile("total", chargers.total);
    tile("connected", chargers.by_connection.connected);
    tile("offline", chargers.by_connection.offline, true);
    tile("tickets", tickets.open, true);
    tile("past-sla", tickets.past_sla, true);
    tile("warnings", summary.supply_warnings.in_force, true);
    $("by-status").replaceChildren(
      ...Object.entries(chargers.by_status).map(([status, n]) =>
        el(
          "li",
          { class: `chip status-${slug(status)}`, "data-status": status },
          el("span", {}, statusText(status)),
          el("strong", {}, String(n)),
        ),
      ),
    );
  }

  function chargerRow(c, detail) {
    return el(
      "li",
      { class: "row", "data-charger": c.id },
      el("strong", { class: "id" }, c.id),
      el("span", { class: "where" }, siteText(c.site)),
      el("span", { class: "detail" }, detail),
    );
  }

  function renderAttention(chargers) {
    const offline = chargers.filter((c) => !c.connected);
    const faulted = chargers.filter((c) => c.status === "Faulted");
    $("offline").replaceChildren(...offline.map((c) => chargerRow(c, `last seen ${ago(c.last_seen)}`)));
    $("faulted").replaceChildren(
      ...faulted.map((c) => {
        const code = faultCode(c);
        return chargerRow(c, `Faulted${code ? ` · ${code}` : ""}${c.connected ? "" : " · offline"}`);
      }),
    );
    count("offline-count", offline.length);
    count("faulted-count", faulted.length);
    $("offline-empty").hidden = offline.length > 0;
    $("faulted-empty").hidden = faulted.length > 0;
  }

  function ticketRow(t) {
    const fault = t.fault || {};
    const dueMs = t.sla_due_at ? new Date(t.sla_due_at).getTime() - Date.now() : null;
    const overdue = dueMs !== null && dueMs < 0;
    const prio = (t.priority || "").toLowerCase();
    return el(
      "li",
      { class: `row ticket prio-${prio}${overdue ? " overdue" : ""}`, "data-ticket": t.id },
      el("span", { class: "badge", title: `priority ${t.priority}` }, t.priority),
      el("strong", { class: "id" }, t.charger_id || "?"),
      el("span", { class: "where" }, siteText(t.site)),
      el(
        "span",
        { class: "detail fault" },
        el("strong", {}, fault.code || "fault"),
        fault.component ? ` — ${fault.component}` : "",
      ),
      el(
        "span",
        { class: "detail" },
        `#${t.id} · ${t.status.replace("_", " ")}${t.assignee ? ` · ${t.assignee}` : " · unassigned"}`,
      ),
      t.sla_due_at
        ? el(
            "span",
            { class: overdue ? "detail due overdue-text" : "detail due" },
            `SLA ${when(t.sla_due_at)} (${overdue ? "overdue by " : "in "}${span(dueMs)})`,
          )
        : null,
    );
  }

  function warningRow(w) {
    const reason = (w.reasons || [])[0];
    return el(
      "li",
      { class: `row warning level-${w.level}`, "data-depot": w.depot, "data-sku": w.sku },
      el("span", { class: "badge" }, w.level),
      el("strong", { class: "id" }, w.sku),
      el("span", { class: "where" }, `depot ${w.depot}`),
      el("span", { class: "detail probability" }, `${Math.round((w.probability || 0) * 100)} % stock-out risk`),
      reason ? el("span", { class: "detail reason" }, reason.text || reason.code) : null,
    );
  }

  function siteTable(site, chargers) {
    const offline = chargers.filter((c) => !c.connected).length;
    const faulted = chargers.filter((c) => c.status === "Faulted").length;
    const head = [`${chargers.length} charger${chargers.length === 1 ? "" : "s"}`];
    if (offline) head.push(`${offline} offline`);
    if (faulted) head.push(`${faulted} faulted`);
    const titleId = `site-${slug(site)}`;
    return el(
      "section",
      { class: "site", "data-site": site || NONE, "aria-labelledby": titleId },
      el("h3", { id: titleId }, siteText(site), " ", el("span", { class: "count" }, head.join(" · "))),
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          {},
          el(
            "thead",
            {},
            el("tr", {}, el("th", { scope: "col" }, "Charger"), el("th", { scope: "col" }, "Status"),
              el("th", { scope: "col" }, "Link"), el("th", { scope: "col" }, "Last seen")),
          ),
          el(
            "tbody",
            {},
            chargers.map((c) =>
              el(
                "tr",
                { "data-charger": c.id, class: `status-${slug(c.status)}${c.connected ? "" : " offline"}` },
                el("th", { scope: "row" }, c.id, c.kind === "swap_station" ? el("small", {}, " swap") : null),
                el("td", { class: "state" }, statusText(c.status)),
                el("td", { class: "link" }, c.connected ? "online" : "offline"),
                el("td", { class: "seen" }, c.connected ? "now" : ago(c.last_seen)),
              ),
            ),
          ),
        ),
      ),
    );
  }

  function renderSites(chargers, cut) {
    const bySite = new Map();
    for (const c of chargers) {
      const key = c.site || "";
      if (!bySite.has(key)) bySite.set(key, []);
      bySite.get(key).push(c);
    }
    // By site id, chargers at no site last.
    const sites = [...bySite.keys()].sort((a, b) => (!a) - (!b) || a.localeCompare(b));
    $("sites").replaceChildren(...sites.map((s) => siteTable(s, bySite.get(s))));
    count("sites-count", sites.filter(Boolean).length);
    $("sites-empty").hidden = chargers.length > 0;
    $("sites-cut").hidden = !cut;
    $("sites-cut").textContent = cut ? `Showing the first ${chargers.length} chargers.` : "";
  }

  function render(summary, chargers, tickets, warnings) {
    renderSummary(summary);
    renderAttention(chargers.items);
    $("tickets").replaceChildren(...tickets.map(ticketRow));
    count("tickets-count", tickets.length);
    $("tickets-empty").hidden = tickets.length > 0;
    const inForce = warnings
      .filter((w) => w.level in LEVEL_RANK)
      .sort((a, b) => LEVEL_RANK[a.level] - LEVEL_RANK[b.level] || b.probability - a.probability);
    $("warnings").replaceChildren(...inForce.map(warningRow));
    count("warnings-count", inForce.length);
    $("warnings-empty").hidden = inForce.length > 0;
    renderSites(chargers.items, chargers.cut);
    const now = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    $("updated").textContent = `Updated ${now} · every 30 s`;
  }

  async function refresh() {
    if (!localStorage.getItem(TOKEN_KEY) || busy) return;
    busy = true;
    try {
      const [summary, chargers, tickets, warnings] = await Promise.all([
        api("/api/fleet/summary"),
        allChargers(),
        api("/api/tickets?kind=maintenance&open=true"),
        api("/api/supply-risk"),
      ]);
      if (!me) return; // signed out meanwhile
      render(summary, chargers, tickets.items || [], warnings.items || []);
      if ($("message").classList.contains("error")) say(""); // the connection is back
    } catch (err) {
      failed(err);
    } finally {
      busy = false;
    }
  }

  function failed(err) {
    if (err.status === 401) signOut(`Sign-in failed: ${err.message}`);
    else say(err.message, err.status === 0 ? "error network" : "error");
  }

  function signOut(message) {
    localStorage.removeItem(TOKEN_KEY);
    me = null;
    clearInterval(timer);
    timer = null;
    $("who").hidden = true;
    $("board").hidden = true;
    for (const id of ["by-status", "offline", "faulted", "tickets", "warnings", "sites"]) {
      $(id).replaceChildren();
    }
    $("signin").hidden = false;
    say(message || "", message ? "error" : "info");
    $("token").value = "";
    $("token").focus();
  }

  async function start() {
    try {
      me = await api("/api/me");
    } catch (err) {
      if (err.status === 401) return signOut(`Sign-in failed: ${err.message}`);
      say(err.message, "error");
      setTimeout(start, 5000);
      return;
    }
    $("signin").hidden = true;
    $("who-name").textContent = `${me.name} · ${me.role} · ${me.region || "whole fleet"}`;
    $("who").hidden = false;
    $("board").hidden = false;
    say("");
    await refresh();
    if (!me) return; // the token was refused meanwhile
    clearInterval(timer);
    timer = setInterval(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("signin").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (!token) return;
      localStorage.setItem(TOKEN_KEY, token);
      start();
    });
    $("signout").addEventListener("click", (event) => {
      event.preventDefault();
      signOut();
    });
    $("refresh").addEventListener("click", refresh);
    // A phone wakes with stale figures: refresh as soon as the page is visible again.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && me) refresh();
    });
    if (localStorage.getItem(TOKEN_KEY)) start();
    else signOut();
  });
})();
