// remsim dashboard, the pools view (/ui/pools): an operator's changes to pools, groups,
// rules, card states and leases, each one request of the REST API (remsim_api.pools) with
// a JSON body; a refused one shows its problem's `detail`. After each change the page's
// [data-refresh] parts are drawn again from /ui/pools (no live stream on this view).
// The login cookie, the filter, say() and call() are ui.js's.
"use strict";
(function () {
  const ownApi = document.body.dataset.ownApi;
  const message = document.getElementById("message");
  if (!ownApi || !message) return;

  // ui.js's (loaded first): a message on the page, and one request (true if done, else the
  // refusal is on the page), here to remsim's own API.
  const { say } = window.remsimUi;
  const call = (method, path, json) => window.remsimUi.call(method, path, json, ownApi);

  // Draw the page's [data-refresh] parts again, keeping the focus where it was if it can.
  async function refresh() {
    const active = document.activeElement;
    const label = active && active.getAttribute("aria-label");
    const activeId = active && active.id;
    let html;
    try {
      const response = await fetch(location.pathname, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      html = await response.text();
    } catch (error) {
      say(`Could not reload the page: ${error}`, true);
      return;
    }
    const fresh = new DOMParser().parseFromString(html, "text/html");
    for (const part of fresh.querySelectorAll("[data-refresh][id]")) {
      const old = document.getElementById(part.id);
      if (old) old.replaceWith(document.adoptNode(part));
    }
    const filter = document.getElementById("filter");
    if (filter) filter.dispatchEvent(new Event("input"));
    if (document.activeElement === document.body || !document.activeElement) {
      const again = (activeId && document.getElementById(activeId))
        || (label && document.querySelector(`[aria-label="${CSS.escape(label)}"]`));
      if (again) again.focus();
    }
  }

  let busy = false;
  async function act(run) {
    if (busy) return;
    busy = true;
    try {
      const done = await run();
      if (done) await refresh();
    } finally {
      busy = false;
    }
  }

  const words = (text) => text.split(/[\s,;]+/).filter(Boolean);

  // "B1:0" names a bank slot, anything else an ICCID (the API checks it).
  function card(word) {
    const slot = /^B(\d+):(\d+)$/i.exec(word);
    if (slot) return { bank: { bankId: Number(slot[1]), slotNr: Number(slot[2]) } };
    return { iccid: word };
  }
  // "C23:0" (or "23:0") names a client slot; null: not one.
  function client(word) {
    const slot = /^C?(\d+):(\d+)$/i.exec(word);
    return slot ? { clientId: Number(slot[1]), slotNr: Number(slot[2]) } : null;
  }

  const forms = {
    "pool-form": async (f) => {
      const name = f.elements.name.value.trim();
      const body = {
        cards: words(f.elements.cards.value).map(card),
        description: f.elements.description.value.trim(),
      };
      if (!(await call("PUT", `/pools/${encodeURIComponent(name)}`, body))) return false;
      say(`Saved pool ${name} (${body.cards.length} card${body.cards.length === 1 ? "" : "s"}).`);
      return true;
    },
    "group-form": async (f) => {
      const name = f.elements.name.value.trim();
      const named = words(f.elements.clients.value);
      const clients = named.map(client);
      const wrong = named.filter((_, i) => clients[i] === null);
      if (wrong.length) {
        say(`Not a client slot (as C23:0): ${wrong.join(", ")}`, true);
        return false;
      }
      const body = { clients, description: f.elements.description.value.trim() };
      if (!(await call("PUT", `/groups/${encodeURIComponent(name)}`, body))) return false;
      say(`Saved group ${name} (${clients.length} client${clients.length === 1 ? "" : "s"}).`);
      return true;
    },
    "rule-form": async (f) => {
      const e = f.elements;
      const name = e.name.value.trim();
      const body = {
        group: e.group.value.trim(),
        pools: words(e.pools.value),
        priority: Number(e.priority.value || 0),
        method: e.method.value,
        enabled: e.enabled.checked,
      };
      if (e.start.value || e.end.value) {
        if (!e.start.value || !e.end.value) {
          say("A daily window needs both its start and its end.", true);
          return false;
        }
        const days = [...f.querySelectorAll('input[name="day"]:checked')].map((d) => Number(d.value));
        if (!days.length) {
          say("A daily window needs at least one day.", true);
          return false;
        }
        body.daily = { start: e.start.value, end: e.end.value, days, tz: e.tz.value.trim() || "UTC" };
      }
      // datetime-local is the browser's local time: sent as an ISO time with its offset (UTC)
      if (e.notBefore.value) body.notBefore = new Date(e.notBefore.value).toISOString();
      if (e.notAfter.value) body.notAfter = new Date(e.notAfter.value).toISOString();
      if (e.lease.value) body.leaseSeconds = Number(e.lease.value) * 60;
      if (!(await call("PUT", `/rules/${encodeURIComponent(name)}`, body))) return false;
      say(`Saved rule ${name}: ${body.group} → ${body.pools.join(", ")}.`);
      return true;
    },
  };

  document.addEventListener("submit", (event) => {
    const form = event.target;
    const send = forms[form.id];
    if (!send) return;
    event.preventDefault();
    act(async () => {
      const done = await send(form);
      if (done) {
        for (const field of form.querySelectorAll("input:not([type=checkbox]), textarea")) {
          field.value = field.defaultValue;
        }
        form.elements.name.focus();
      }
      return done;
    });
  });

  document.addEventListener("click", (event) => {
    const del = event.target.closest("[data-delete]");
    if (del) {
      const what = del.dataset.what;
      if (!window.confirm(`Delete ${what}?`)) return;
      act(async () => {
        const done = await call("DELETE", `/${del.dataset.delete}`);
        if (done) say(`Deleted ${what}.`);
        return done;
      });
      return;
    }
    const state = event.target.closest("[data-card-state]");
    if (state) {
      const key = state.dataset.card;
      const wanted = state.dataset.cardState;
      act(async () => {
        const done = await call("PUT", `/card-states/${key}`, { state: wanted });
        if (done) say(`Card ${key} is ${wanted} now.`);
        return done;
      });
      return;
    }
    const extend = event.target.closest("[data-extend]");
    if (extend) {
      const id = Number(extend.dataset.extend);
      const by = Number(document.getElementById("extend-by").value) * 1000;
      const now = Date.now();
      const from = extend.dataset.expires ? Math.max(Date.parse(extend.dataset.expires), now) : now;
      const expiresAt = new Date(from + by).toISOString().replace(/\.\d+Z$/, "Z");
      act(async () => {
        const done = await call("PUT", `/slotmaps/${id}/lease`, { expiresAt });
        if (done) say(`The map of B${id >> 16}:${id & 0xffff} now expires at ${expiresAt}.`);
        return done;
      });
      return;
    }
    const release = event.target.closest("[data-release]");
    if (release) {
      const id = Number(release.dataset.release);
      act(async () => {
        const done = await call("POST", `/slotmaps/${id}/release`);
        if (done) say(`Released B${id >> 16}:${id & 0xffff}; a rule may assign its client the next card.`);
        return done;
      });
    }
  });
})();
