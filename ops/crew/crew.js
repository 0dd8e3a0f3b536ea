// The crew page: open maintenance tickets, most urgent first, and the three steps a crew takes on them.
// Plain DOM, no framework or build step; every value from the API goes in through textContent, never HTML.
"use strict";

(() => {
  const TOKEN_KEY = "chargeops.crew.token";
  const REFRESH_MS = 30000;
  // The steps a crew member takes from each status; the API decides what is legal (409 otherwise).
  const NEXT = {
    open: { to: "assigned", label: "Acknowledge" },
    assigned: { to: "in_progress", label: "Start" },
    in_progress: { to: "resolved", label: "Resolve" },
  };
  const STATUS_TEXT = { open: "Open", assigned: "Acknowledged", in_progress: "In progress" };

  const $ = (id) => document.getElementById(id);
  let me = null;
  let timer = null;
  let shown = new Map(); // ticket id → the ticket as last listed (the resolve dialog needs its parts)

  const { say, el, span, when } = window.chargeopsUI;
  const api = (method, path, body) =>
    window.chargeopsUI.request(
      TOKEN_KEY, "Cannot reach the server. Check your connection; retrying shortly.", method, path, body,
    );

  function field(term, ...value) {
    return [el("dt", {}, term), el("dd", {}, ...value)];
  }

  function card(t) {
    const fault = t.fault || {};
    const dueMs = t.sla_due_at ? new Date(t.sla_due_at).getTime() - Date.now() : null;
    const overdue = dueMs !== null && dueMs < 0;
    const parts = (t.parts || []).length
      ? el("ul", { class: "parts" }, t.parts.map((p) => el("li", {}, el("strong", {}, p.sku), ` × ${p.qty}`)))
      : "none reserved";
    const step = me && me.role !== "viewer" ? NEXT[t.status] : null;
    const titleId = `t${t.id}-title`;
    return el(
      "li",
      { class: `card prio-${(t.priority || "").toLowerCase()}${overdue ? " overdue" : ""}`, "data-ticket": t.id },
      el(
        "article",
        { "aria-labelledby": titleId },
        el(
          "div",
          { class: "card-head" },
          el("span", { class: "badge", title: `priority ${t.priority}` }, t.priority),
          el("h3", { id: titleId }, t.site || "unknown site"),
          el("span", { class: `status status-${t.status}` }, STATUS_TEXT[t.status] || t.status),
        ),
        el(
          "p",
          { class: "fault" },
          el("strong", {}, fault.code || "fault"),
          fault.component ? ` — ${fault.component}` : "",
        ),
        fault.description ? el("p", { class: "description" }, fault.description) : null,
        el(
          "dl",
          {},
          field("Charger", t.charger_id || "?"),
          t.diagnosis ? field("Diagnosis", t.diagnosis) : [],
          field("Parts to bring", parts),
          t.depot ? field("From depot", t.depot) : [],
          field("Seen", `${t.occurrences}×`),
          t.sla_due_at
            ? field(
                "SLA due",
                el(
                  "span",
                  { class: overdue ? "due overdue-text" : "due" },
                  `${when(t.sla_due_at)} (${overdue ? "overdue by " : "in "}${span(dueMs)})`,
                ),
              )
            : [],
          t.assignee ? field("Assigned to", t.assignee) : [],
          field("Ticket", `#${t.id}`),
        ),
        t.cleared_at
          ? el("p", { class: "cleared" }, `Fault cleared by the charger at ${when(t.cleared_at)}. Check it before resolving.`)
          : null,
        step
          ? el(
              "button",
              {
                type: "button",
                class: `primary action action-${step.to}`,
                "data-id": t.id,
                "data-to": step.to,
                "data-from": t.status,
                "aria-label": `${step.label} ticket ${t.id} at ${t.site || t.charger_id}`,
              },
              step.label,
            )
          : null,
      ),
    );
  }

  function render(items) {
    const list = $("tickets");
    shown = new Map(items.map((t) => [t.id, t]));
    list.replaceChildren(...items.map(card));
    $("count").textContent = `(${items.length})`;
    $("empty").hidden = items.length > 0;
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
  }

  function failed(err) {
    if (err.status === 401) {
      signOut(`Sign-in failed: ${err.message}`);
    } else {
      say(err.message, err.status === 0 ? "error network" : "error");
    }
  }

  async function refresh() {
    if (!localStorage.getItem(TOKEN_KEY)) return;
    try {
      const data = await api("GET", "/api/tickets?kind=maintenance&open=true");
      render(data.items || []);
      if ($("message").classList.contains("network")) say(""); // the connection is back
    } catch (err) {
      failed(err);
    }
  }

  async function act(button) {
    const id = Number(button.dataset.id);
    const to = button.dataset.to;
    // The lifecycle has back-steps (in_progress → assigned, resolved → in_progress), so a tap on a stale
    // card could undo a colleague's step: the API refuses the step unless the ticket is where the card says.
    const body = { to, from: button.dataset.from };
    if (to === "assigned") body.assignee = me.name;
    if (to === "resolved") {
      const answer = await askResolve(id, (shown.get(id) || {}).parts || []);
      if (answer === null) return;
      if (answer.note) body.note = answer.note;
      body.parts_used = answer.partsUsed; // [] = nothing fitted: every reserved part goes back
    }
    button.disabled = true; // one tap, one request: a double tap would be an illegal second step
    try {
      const t = await api("POST", `/api/tickets/${id}/transition`, body);
      say(`Ticket #${t.id} is now ${(STATUS_TEXT[t.status] || t.status).toLowerCase()}.`, "ok");
    } catch (err) {
      if (err.code === "stale_ticket") {
        say(`Ticket #${id} changed meanwhile: ${err.message} The list has been refreshed.`, "error");
      } else if (err.status === 409) say(`${err.message} The list has been refreshed.`, "error");
      else failed(err);
    } finally {
      await refresh();
    }
  }

  function clamp(input, value) {
    const max = Number(input.max);
    const n = Math.round(Number(value));
    input.value = String(Number.isFinite(n) ? Math.min(Math.max(n, 0), max) : 0);
  }

  // One row per reserved part: − / number / + (0 … reserved, default 0), thumb-sized.
  function usedRow(part, i) {
    const id = `used-${i}`;
    const input = el("input", {
      id,
      type: "number",
      inputmode: "numeric",
      class: "used-qty",
      min: 0,
      max: part.qty,
      step: 1,
      value: 0,
      "data-sku": part.sku,
    });
    const stepper = (delta, sign, label) =>
      el("button", { type: "button", class: "step secondary", "data-delta": delta, "aria-label": label }, sign);
    return el(
      "li",
      { class: "used-row" },
      el("label", { for: id }, el("strong", {}, part.sku), ` used (of ${part.qty} reserved)`),
      el(
        "div",
        { class: "stepper" },
        stepper(-1, "−", `One less ${part.sku}`),
        input,
        stepper(1, "+", `One more ${part.sku}`),
      ),
    );
  }

  function askResolve(id, parts) {
    const dialog = $("resolve-dialog");
    $("resolve-title").textContent = `Resolve ticket #${id}`;
    $("resolve-note").value = "";
    $("resolve-parts-list").replaceChildren(...parts.map(usedRow));
    $("resolve-parts").hidden = parts.length === 0;
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => {
          if (dialog.returnValue !== "resolve") return resolve(null);
          const partsUsed = [...dialog.querySelectorAll("input.used-qty")]
            .map((input) => ({ sku: input.dataset.sku, qty: Number(input.value) || 0 }))
            .filter((p) => p.qty > 0);
          resolve({ note: $("resolve-note").value.trim(), partsUsed });
        },
        { once: true },
      );
      dialog.returnValue = "";
      dialog.showModal();
      (dialog.querySelector("button.step") || $("resolve-note")).focus(); // a button: no keyboard pops up
    });
  }

  function signOut(message) {
    localStorage.removeItem(TOKEN_KEY);
    me = null;
    clearInterval(timer);
    timer = null;
    $("who").hidden = true;
    $("board").hidden = true;
    $("tickets").replaceChildren();
    $("signin").hidden = false;
    say(message || "", message ? "error" : "info");
    $("token").value = "";
    $("token").focus();
  }

  async function start() {
    try {
      me = await api("GET", "/api/me");
    } catch (err) {
      if (err.status === 401) return signOut(`Sign-in failed: ${err.message}`);
      say(err.message, "error");
      setTimeout(start, 5000);
      return;
    }
    $("signin").hidden = true;
    $("who-name").textContent = `${me.name} · ${me.role}${me.region ? ` · ${me.region}` : ""}`;
    $("who").hidden = false;
    $("board").hidden = false;
    say("");
    await refresh();
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
    $("resolve-parts-list").addEventListener("click", (event) => {
      const button = event.target.closest("button.step");
      if (!button) return;
      const input = button.parentElement.querySelector("input.used-qty");
      clamp(input, Number(input.value) + Number(button.dataset.delta));
    });
    $("resolve-parts-list").addEventListener("change", (event) => {
      if (event.target.matches("input.used-qty")) clamp(event.target, event.target.value);
    });
    $("tickets").addEventListener("click", (event) => {
      const button = event.target.closest("button.action");
      if (button && !button.disabled) act(button);
    });
    // A phone wakes with a stale list: refresh as soon as the page is visible again.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && me) refresh();
    });
    if (localStorage.getItem(TOKEN_KEY)) start();
    else signOut();
  });
})();
