// remsim dashboard: login cookie, actions over the REST API, live refresh, filter.
// No framework besides the vendored htmx (which swaps /ui/live into #live).
"use strict";
(function () {
  const COOKIE = "remsim_token";
  const body = document.body;
  const api = body.dataset.api;

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
  function refresh() { htmx.trigger("#live", "refresh"); }

  async function call(method, path, json) {
    const init = { method, credentials: "same-origin", headers: {} };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(api + path, init);
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
    refresh();
    return true;
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("#map-form");
    if (!form) return;
    event.preventDefault();
    const [bankId, bankSlot] = form.elements.slot.value.split(":").map(Number);
    const [clientId, slotNr] = form.elements.client.value.split(":").map(Number);
    const body = { bank: { bankId, slotNr: bankSlot }, client: { clientId, slotNr } };
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
  function applyFilter() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const row of document.querySelectorAll("table.filterable tbody tr")) {
      const text = row.textContent.toLowerCase();
      row.hidden = !words.every((word) => text.includes(word));
    }
  }
  filter.addEventListener("input", applyFilter);

  // --- live: keep focus and choices across a swap -----------------------------------------
  let kept = null;
  document.body.addEventListener("htmx:beforeSwap", () => {
    const active = document.activeElement;
    kept = {
      focus: active && active.closest("#live") ? focusKey(active) : null,
      choices: Array.from(document.querySelectorAll("#live select[id]"), (s) => [s.id, s.value]),
      folds: Array.from(document.querySelectorAll("#live details[data-bank]"), (d) => [d.dataset.bank, d.open]),
    };
  });
  document.body.addEventListener("htmx:afterSwap", () => {
    applyFilter();
    if (!kept) return;
    for (const [id, value] of kept.choices) {
      const select = document.getElementById(id);
      if (select && Array.from(select.options).some((o) => o.value === value)) select.value = value;
    }
    for (const [bank, open] of kept.folds) {
      const details = document.querySelector(`#live details[data-bank="${bank}"]`);
      if (details) details.open = open;
    }
    if (kept.focus) {
      const again = document.querySelector(kept.focus);
      if (again) again.focus();
    }
    kept = null;
  });
  function focusKey(element) {
    if (element.id) return `#${CSS.escape(element.id)}`;
    const label = element.getAttribute("aria-label");
    return label ? `[aria-label="${CSS.escape(label)}"]` : null;
  }

  // --- live: the server says "change"; fetch the live part again ---------------------------
  const status = document.getElementById("live-status");
  function connect() {
    const events = new EventSource("/ui/events");
    events.addEventListener("open", () => { status.textContent = "live"; status.className = "live on"; });
    events.addEventListener("change", refresh);
    events.addEventListener("error", () => { status.textContent = "reconnecting…"; status.className = "live off"; });
  }
  connect();
})();
