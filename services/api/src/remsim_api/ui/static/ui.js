// remsim dashboard: login cookie, actions over the REST API, live patches, filter.
// (The pools view's actions are in pools.js; this file gives it the login, the filter, and
// its say() and call() as window.remsimUi.)
// No framework besides the vendored htmx (which swaps /ui/live into #live on a refresh).
// Live: /ui/events sends patches (remsim_api.ui.diff): <template data-op="insert|replace|
// remove"> steps, each holding the element of one node with its id; applied in order.
"use strict";
(function () {
  const COOKIE = "remsim_token";
  const body = document.body;
  const api = body.dataset.api;
  const ownApi = body.dataset.ownApi;

  // --- the token: a cookie of this site only (see remsim_api.ui) -------------------------
  function setToken(value) {
    const secure = location.protocol === "https:" ? "; Secure" : "";
    const age = value ? "" : "; Max-Age=0";
    document.cookie = `${COOKIE}=${encodeURIComponent(value)}; Path=/; SameSite=Strict${secure}${age}`;
  }
  const login = document.getElementById("login");
  if (login) {
    login.addEventListener("submit", (event) => {
      event.preventDefault();
      setToken(login.elements.token.value.trim());
      location.reload();
    });
    return;  // the login page has nothing else
  }
  const logout = document.getElementById("logout");
  if (logout) logout.addEventListener("click", () => { setToken(""); location.reload(); });

  // --- messages and actions --------------------------------------------------------------
  const message = document.getElementById("message");
  function say(text, error) {
    message.textContent = text;
    message.className = error ? "error" : "";
  }
  async function call(method, path, json, base) {
    const init = { method, credentials: "same-origin", headers: {} };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch((base || api) + path, init);
    } catch (error) {
      say(`${method} ${path}: ${error}`, true);
      return false;
    }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
      say(`${method} ${path} refused (${response.status}): ${detail}`, true);
      return false;
    }
    return true;  // the event stream brings the change to the page
  }
  // For pools.js, on the pools view: the same messages and requests.
  window.remsimUi = { say, call };

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("#map-form");
    if (!form) return;
    event.preventDefault();
    if (!form.elements.slot.value || !form.elements.client.value) return;
    const [clientId, slotNr] = form.elements.client.value.split(":").map(Number);
    const client = { clientId, slotNr };
    const [kind, ...picked] = form.elements.slot.value.split(":");
    if (kind === "card") {  // by card: the map follows the card (POST /api/v1/slotmaps)
      const iccid = picked[0];
      if (await call("POST", "/slotmaps", { card: { iccid }, client }, ownApi)) {
        say(`Mapped the card ICCID ${iccid} to C${clientId}:${slotNr}.`);
      }
      return;
    }
    const [bankId, bankSlot] = picked.map(Number);
    const body = { bank: { bankId, slotNr: bankSlot }, client };
    if (await call("POST", "/slotmaps", body)) {
      say(`Mapped B${bankId}:${bankSlot} to C${clientId}:${slotNr}.`);
    }
  });
  document.addEventListener("click", async (event) => {
    const pick = event.target.closest("[data-pick]");
    if (pick) {  // a free slot's "Map…": choose it in the map form, then the client
      const slot = document.getElementById("map-slot");
      if (!slot) return;
      slot.value = pick.dataset.pick;
      document.getElementById("map-client").focus();
      return;
    }
    const unmap = event.target.closest("[data-unmap]");
    if (unmap) {
      const id = Number(unmap.dataset.unmap);
      if (await call("DELETE", `/slotmaps/${id}`)) say(`Unmapped B${id >> 16}:${id & 0xffff}.`);
      return;
    }
    if (event.target.closest("#global-reset")) {
      if (window.confirm("Global reset: delete every slotmap? Every client loses its card.")) {
        if (await call("POST", "/global-reset")) say("Global reset: every slotmap is being deleted.");
      }
    }
  });

  // --- filter: rows of every table whose text contains the words typed --------------------
  const filter = document.getElementById("filter");
  function filterRows(rows) {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const row of rows) {
      const text = row.textContent.toLowerCase();
      row.hidden = !words.every((word) => text.includes(word));
    }
  }
  function applyFilter() { filterRows(document.querySelectorAll("table.filterable tbody tr")); }
  filter.addEventListener("input", applyFilter);

  // --- live: keep focus, choices and folds across a patch or a refresh ----------------------
  function keep() {
    const active = document.activeElement;
    return {
      focus: active && active.closest("#live") ? focusKey(active) : null,
      choices: Array.from(document.querySelectorAll("#live select[id]"), (s) => [s.id, s.value]),
      folds: Array.from(document.querySelectorAll("#live details[data-bank]"), (d) => [d.dataset.bank, d.open]),
    };
  }
  function restore(kept, folds) {
    for (const [id, value] of kept.choices) {
      const select = document.getElementById(id);
      if (select && Array.from(select.options).some((o) => o.value === value)) select.value = value;
    }
    if (folds) {
      for (const [bank, open] of kept.folds) {
        const details = document.querySelector(`#live details[data-bank="${bank}"]`);
        if (details) details.open = open;
      }
    }
    if (kept.focus && (!document.activeElement || document.activeElement === document.body)) {
      const again = document.querySelector(kept.focus);
      if (again) again.focus();
    }
  }
  function focusKey(element) {
    if (element.id) return `#${CSS.escape(element.id)}`;
    const label = element.getAttribute("aria-label");
    return label ? `[aria-label="${CSS.escape(label)}"]` : null;
  }

  // --- live: patches from the event stream; the whole part again on a refresh ---------------
  function patch(html) {
    const kept = keep();
    const box = document.createElement("template");
    box.innerHTML = html;
    const rows = [];
    for (const step of Array.from(box.content.children)) {
      const op = step.dataset.op;
      if (op === "remove") {
        const gone = document.getElementById(step.dataset.id);
        if (gone) gone.remove();
        continue;
      }
      const element = step.content.firstElementChild;
      if (!element) continue;
      const old = document.getElementById(element.id);
      if (old) {
        old.replaceWith(element);  // an insert seen twice (a replayed patch) is a replace
      } else if (op === "insert") {
        const list = document.getElementById(step.dataset.list);
        if (!list) continue;  // a part this page does not show
        const after = step.dataset.after && document.getElementById(step.dataset.after);
        if (after) after.after(element);
        else if (step.dataset.after) list.append(element);
        else list.prepend(element);
      } else {
        continue;
      }
      if (element.tagName === "TR") rows.push(element);
      for (const row of element.querySelectorAll("tr")) rows.push(row);
    }
    filterRows(rows);
    restore(kept, false);
  }

  const live = document.getElementById("live");
  if (!live) return;  // a page without the live part (the pools view: static/pools.js)
  const status = document.getElementById("live-status");
  let events = null;
  let keptForSwap = null;
  function version() {
    const marker = document.getElementById("live-version");
    return marker ? marker.dataset.version : "";
  }
  function connect() {
    if (events) events.close();
    events = new EventSource(`/ui/events?since=${encodeURIComponent(version())}`);
    events.addEventListener("open", () => { status.textContent = "live"; status.className = "live on"; });
    events.addEventListener("patch", (event) => {
      patch(event.data);
      const marker = document.getElementById("live-version");
      if (marker && event.lastEventId) marker.dataset.version = event.lastEventId;  // where the page is
    });
    events.addEventListener("refresh", () => {  // the page is too far behind: draw it again
      events.close();
      events = null;
      htmx.trigger(live, "refresh");
    });
    events.addEventListener("error", () => { status.textContent = "reconnecting…"; status.className = "live off"; });
  }
  document.body.addEventListener("htmx:beforeSwap", () => { keptForSwap = keep(); });
  document.body.addEventListener("htmx:afterSwap", () => {
    applyFilter();
    if (keptForSwap) restore(keptForSwap, true);
    keptForSwap = null;
    connect();  // from the version just drawn
  });
  for (const failed of ["htmx:responseError", "htmx:sendError"]) {  // try the refresh again
    document.body.addEventListener(failed, () => { setTimeout(() => htmx.trigger(live, "refresh"), 1000); });
  }
  connect();
})();
