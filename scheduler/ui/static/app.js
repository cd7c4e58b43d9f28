// The chutes dashboard: a hand-written single page (no framework, no build step, nothing from a CDN).
// Every piece of data is put on the page as text (textContent / createTextNode / setAttribute), never as
// HTML, so chute names, readmes, events and logs cannot inject markup. The session is an HttpOnly cookie set
// by the scheduler; this script only holds the CSRF token that every write sends as X-Chutes-CSRF.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const SVG_TAGS = new Set(["svg", "g", "rect", "line", "text", "title", "desc"]);
  const S = { me: null, csrf: null, features: {}, flash: null, all: false, everyone: false, days: 30, leave: [] };

  // ---- DOM -------------------------------------------------------------------------------------------------

  const $ = (sel, root = document) => root.querySelector(sel);

  function h(tag, attrs, ...kids) {
    const svg = SVG_TAGS.has(tag);
    const el = svg ? document.createElementNS(SVG, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "value" || k === "checked" || k === "disabled" || k === "selected") el[k] = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    add(el, kids);
    return el;
  }

  function add(el, ...kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  const fill = (el, ...kids) => { el.replaceChildren(); return add(el, kids); };

  function toast(text) {
    const box = $("#toast");
    box.textContent = text;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.textContent = ""; }, 6000);
  }

  function errorBox(err) {
    return h("p", { class: "error", role: "alert" }, err.detail || String(err), err.hint ? h("span", { class: "hint" }, " " + err.hint) : null);
  }

  // ---- formatting -------------------------------------------------------------------------------------------

  const money = (v, digits = 2) => "$" + Number(v || 0).toFixed(digits);
  const short = (id) => String(id || "").slice(0, 8);
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  function ago(t) {
    if (!t) return "—";
    const s = Math.max(0, Date.now() / 1000 - t);
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  }

  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });

  function badge(text, kind) {
    return h("span", { class: `badge ${kind || ""}` }, text);
  }

  const STATUS_KIND = { ready: "ok", running: "ok", passing: "ok", deploying: "busy", pending: "busy", scaling: "busy",
    starting: "busy", queued: "busy", building: "busy", unschedulable: "bad", failed: "bad", lost: "bad", deleting: "busy", stopped: "idle", error: "bad" };
  const statusBadge = (status) => badge(status, STATUS_KIND[status] || "idle");

  // ---- API ----------------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail, hint) { super(detail); this.status = status; this.detail = detail; this.hint = hint; }
  }

  async function toError(resp) {
    let body = {};
    try { body = await resp.json(); } catch (_) { /* not JSON */ }
    return new ApiError(resp.status, body.detail || `the scheduler answered HTTP ${resp.status}`, body.hint);
  }

  async function request(method, path, body, signal) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" && S.csrf) headers["X-Chutes-CSRF"] = S.csrf;
    let payload;
    if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
    try {
      return await fetch(path, { method, headers, body: payload, credentials: "same-origin", cache: "no-store", signal });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "the scheduler did not answer", "check that it is running and retry");
    }
  }

  async function api(method, path, body, signal) {
    const resp = await request(method, path, body, signal);
    if (!resp.ok) {
      const err = await toError(resp);
      if (resp.status === 401 && S.me) sessionLost(err);
      throw err;
    }
    return resp.status === 204 ? null : resp.json();
  }

  function sessionLost(err) {
    S.me = null; S.csrf = null; S.flash = err.detail;
    chrome();
    location.hash = "#/signin";
  }

  // Lines of a streamed answer as they arrive (NDJSON logs, build logs).
  async function streamLines(resp, onLine) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) { onLine(buf.slice(0, i)); buf = buf.slice(i + 1); }
    }
    if (buf) onLine(buf);
  }

  // Server-Sent Events over fetch (EventSource only dispatches the types it is told of, and cannot be aborted
  // as simply): every event type, resumed after the last id when the connection drops.
  function parseSSE(block) {
    const ev = { id: null, type: "message", data: [] };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "data") ev.data.push(value);
      else if (field === "event") ev.type = value;
      else if (field === "id") ev.id = value;
    }
    if (!ev.data.length) return null;
    ev.data = ev.data.join("\n");
    return ev;
  }

  async function readSSE(resp, onEvent) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const ev = parseSSE(buf.slice(0, i));
        buf = buf.slice(i + 2);
        if (ev) onEvent(ev);
      }
    }
  }

  const sleep = (ms, signal) => new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });

  async function followEvents(chuteId, onEvent, onState, signal) {
    let after = 0;
    let ended = false;
    while (!signal.aborted && !ended) {
      try {
        const resp = await request("GET", `/v1/chutes/${encodeURIComponent(chuteId)}/events?follow=true&after=${after}`, undefined, signal);
        if (!resp.ok) throw await toError(resp);
        onState("live");
        await readSSE(resp, (ev) => {
          let data;
          try { data = JSON.parse(ev.data); } catch (_) { return; }
          if (ev.id) after = Number(ev.id) || after;
          onEvent(data);
          if (data.type === "deleted") ended = true;
        });
      } catch (err) {
        if (signal.aborted) return;
        onState(err.detail ? `disconnected: ${err.detail}` : "disconnected");
        if (err.status === 401 || err.status === 403 || err.status === 404) return;
      }
      if (!ended) await sleep(2000, signal);
    }
    if (ended) onState("ended: the chute was deleted");
  }

  // ---- page lifecycle --------------------------------------------------------------------------------------

  function leave() {
    for (const fn of S.leave.splice(0)) { try { fn(); } catch (_) { /* already stopped */ } }
  }

  function pageSignal() {
    const ctl = new AbortController();
    S.leave.push(() => ctl.abort());
    return ctl.signal;
  }

  // Run fn now and then every ms while the page is shown (never two at once).
  function every(ms, fn) {
    let stopped = false;
    let timer = null;
    const tick = async () => {
      try { await fn(); } catch (err) { if (err.name !== "AbortError") console.warn(err); }
      if (!stopped) timer = setTimeout(tick, ms);
    };
    S.leave.push(() => { stopped = true; clearTimeout(timer); });
    tick();
  }

  // Re-render only when the data changed, so that focus and scroll stay where the user left them.
  function changed(el, data) {
    const key = JSON.stringify(data);
    if (el.dataset.key === key) return false;
    el.dataset.key = key;
    return true;
  }

  function heading(text) {
    document.title = `${text} · chutes`;
    return h("h1", { tabindex: "-1" }, text);
  }

  function table(headers, rows, caption) {
    return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": caption || "table" },
      h("table", null,
        caption ? h("caption", { class: "sr-only" }, caption) : null,
        h("thead", null, h("tr", null, headers.map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", null, rows.map((cells) => h("tr", null, cells.map((c) => h("td", null, c)))))));
  }

  // ---- chrome (navigation, who is signed in) --------------------------------------------------------------

  function chrome() {
    const nav = $("#nav");
    const who = $("#who");
    if (!S.me) { fill(nav); fill(who); return; }
    const links = [["#/chutes", "Chutes"], ["#/nodes", "Nodes"], ["#/usage", "Usage"]];
    if (S.features.images) links.push(["#/images", "Images"]);
    if (S.features.secrets) links.push(["#/secrets", "Secrets"]);
    const here = location.hash.split("/")[1] || "chutes";
    fill(nav, h("ul", null, links.map(([href, text]) => h("li", null,
      h("a", { href, "aria-current": href.split("/")[1] === here.replace(/^chute$/, "chutes").replace(/^image$/, "images") ? "page" : null }, text)))));
    fill(who,
      h("span", { class: "user" }, S.me.username, S.me.is_admin ? [" ", badge("admin", "idle")] : null),
      h("button", { type: "button", class: "link", onclick: signOut }, "Sign out"));
  }

  async function signOut() {
    try { await api("DELETE", "/ui/api/session"); } catch (_) { /* the cookie is cleared either way */ }
    S.me = null; S.csrf = null; S.flash = "You are signed out.";
    chrome();
    location.hash = "#/signin";
  }

  // ---- sign in ---------------------------------------------------------------------------------------------

  function pageSignIn(main) {
    const message = h("div", { id: "signin-message" });
    if (S.flash) add(message, h("p", { class: "notice", role: "status" }, S.flash));
    S.flash = null;
    const input = h("input", { id: "api-key", name: "api_key", type: "password", autocomplete: "off", spellcheck: "false",
      required: true, "aria-describedby": "api-key-help" });
    const button = h("button", { type: "submit" }, "Sign in");
    const form = h("form", { class: "card signin", novalidate: true }, h("label", { for: "api-key" }, "API key"), input,
      h("p", { id: "api-key-help", class: "muted" },
        "A key from `chutes keys create` (it starts with cnk_). It is kept in an HttpOnly cookie for this browser session only."),
      button, message);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!input.value.trim()) { fill(message, errorBox({ detail: "Enter your API key." })); input.focus(); return; }
      button.disabled = true;
      try {
        const me = await api("POST", "/ui/api/session", { api_key: input.value.trim() });
        input.value = "";
        signedIn(me);
        location.hash = "#/chutes";
      } catch (err) {
        fill(message, errorBox(err));
        input.focus();
      } finally {
        button.disabled = false;
      }
    });
    add(main, heading("Sign in"), form);
    input.focus();
  }

  function signedIn(me) {
    S.me = me; S.csrf = me.csrf_token; S.features = me.features || {};
    chrome();
  }

  // ---- chutes ------------------------------------------------------------------------------------------------

  function chuteLink(id, name) {
    return h("a", { href: `#/chute/${encodeURIComponent(id)}` }, name);
  }

  function gpuText(c) {
    const running = c.instances && c.instances.gpu_models.length ? c.instances.gpu_models : null;
    return `${c.gpu_count}× ${(running || c.eligible_gpus).join(", ") || "—"}`;
  }

  function pageChutes(main) {
    const signal = pageSignal();
    const body = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
    const toggle = S.me.is_admin ? h("label", { class: "check" },
      h("input", { type: "checkbox", checked: S.all, onchange: (e) => { S.all = e.target.checked; body.dataset.key = ""; refresh(); } }),
      " Every user's chutes") : null;
    add(main, heading("Chutes"), h("p", { class: "muted" }, "Deploy with ", h("code", null, "chutes deploy app.py:chute"),
      "; this list follows the cluster every few seconds."), toggle, body);
    const refresh = async () => {
      let rows;
      try { rows = await api("GET", `/ui/api/chutes${S.all ? "?all=true" : ""}`, undefined, signal); } catch (err) {
        if (err.name !== "AbortError") fill(body, errorBox(err));
        return;
      }
      if (!changed(body, rows)) return;
      if (!rows.length) { fill(body, h("p", { class: "empty" }, "No chutes yet.")); return; }
      fill(body, table(["Chute", "Owner", "Status", "Instances", "GPU", "Price"], rows.map((c) => [
        chuteLink(c.chute_id, c.name), c.username, statusBadge(c.status),
        `${c.instances.ready} ready / ${c.instances.live} live (wanted ${c.desired_instances})`,
        gpuText(c), `${money(c.hourly_price_usd)}/h`]), "Chutes"));
    };
    every(4000, refresh);
  }

  function pageChute(main, ref) {
    const signal = pageSignal();
    const top = h("div", { id: "chute-head" }, h("p", { class: "muted" }, "Loading…"));
    add(main, top);
    let chute = null;
    const sections = {};
    const load = async () => {
      let c;
      try { c = await api("GET", `/ui/api/chute?ref=${encodeURIComponent(ref)}`, undefined, signal); } catch (err) {
        if (err.name === "AbortError") return;
        if (!chute) fill(top, heading("Chute"), errorBox(err));
        return;
      }
      const first = chute === null;
      chute = c;
      if (changed(top, c)) renderHead(top, c);
      if (first) {
        $("h1", top).focus();
        sections.tryForm = trySection(c);
        sections.instances = h("section", { "aria-labelledby": "h-inst" });
        sections.events = eventsSection(c, signal);
        sections.logs = logsSection(c, signal);
        add(main, sections.tryForm, sections.instances, sections.events, sections.logs);
        if (c.owned) add(main, shareSection(c, load), manageSection(c, load));
        if (c.readme) add(main, h("section", { "aria-labelledby": "h-readme" }, h("h2", { id: "h-readme" }, "Readme"), h("div", { class: "readme" }, c.readme)));
        every(3000, () => instances(c, sections.instances, signal));
      } else {
        const scale = $("#scale-n");
        if (scale && document.activeElement !== scale) scale.value = c.desired_instances;
        const shared = $("#shared-list");
        if (shared && changed(shared, c.shared_with)) renderShared(shared, c, load);
      }
    };
    every(4000, load);
  }

  function renderHead(top, c) {
    const dl = h("dl", { class: "meta" });
    const row = (k, v) => add(dl, h("dt", null, k), h("dd", null, v));
    row("Status", [statusBadge(c.status), c.status_detail ? h("span", { class: "muted" }, " " + c.status_detail) : null]);
    row("Owner", c.username);
    row("Instances", `${c.instances.ready} ready, ${c.instances.live} live, ${c.desired_instances} wanted (max ${c.max_instances})`);
    row("GPUs", gpuText(c));
    row("Price", `${money(c.hourly_price_usd)} per instance-hour`);
    row("Concurrency", String(c.concurrency));
    row("Version", h("code", null, short(c.version)));
    if (c.invoke_url) row("Address", h("code", null, c.invoke_url));
    if (c.shared_with.length) row("Shared with", c.shared_with.join(", "));
    fill(top, heading(c.name), c.tagline ? h("p", { class: "tagline" }, c.tagline) : null, dl);
  }

  function trySection(c) {
    const sec = h("section", { "aria-labelledby": "h-try" }, h("h2", { id: "h-try" }, "Try a cord"));
    if (!c.cord_forms.length) return add(sec, h("p", { class: "muted" }, "This chute has no cords."));
    if (!S.features.gateway) {
      return add(sec, h("p", { class: "notice" }, "This scheduler does not know the gateway's address (CHUTES_GATEWAY_URL), so the dashboard cannot call chutes. Call it with the CLI: ",
        h("code", null, `chutes invoke ${c.name} ${c.cord_forms[0].public_api_path}`)));
    }
    const select = h("select", { id: "cord" }, c.cord_forms.map((cord, i) =>
      h("option", { value: String(i) }, `${cord.name} — ${cord.public_api_method} ${cord.public_api_path}${cord.stream ? " (streams)" : ""}`)));
    const input = h("textarea", { id: "cord-input", rows: "4", spellcheck: "false", "aria-describedby": "cord-input-help" });
    const setExample = () => { input.value = JSON.stringify(c.cord_forms[Number(select.value)].example, null, 2); };
    select.addEventListener("change", setExample);
    setExample();
    const call = h("button", { type: "submit" }, "Call");
    const stop = h("button", { type: "button", class: "secondary", disabled: true }, "Stop call");
    const status = h("p", { id: "try-status", role: "status", class: "muted" });
    const output = h("pre", { id: "try-output", class: "output", tabindex: "0", "aria-label": "Answer" });
    let ctl = null;
    stop.addEventListener("click", () => ctl && ctl.abort());
    const form = h("form", { class: "card" },
      h("label", { for: "cord" }, "Cord"), select,
      h("label", { for: "cord-input" }, "Input (JSON)"), input,
      h("p", { id: "cord-input-help", class: "muted" }, "Sent through the gateway with your key: it counts in your usage like any call."),
      h("div", { class: "buttons" }, call, stop), status, output);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      let payload;
      try { payload = input.value.trim() ? JSON.parse(input.value) : {}; } catch (err) {
        fill(status, errorBox({ detail: `The input is not valid JSON: ${err.message}` }));
        return;
      }
      const cord = c.cord_forms[Number(select.value)];
      ctl = new AbortController();
      S.leave.push(() => ctl.abort());
      call.disabled = true; stop.disabled = false;
      fill(output);
      fill(status, "Calling…");
      const started = performance.now();
      try {
        await tryCord(c, cord, payload, ctl.signal, status, output, started);
      } catch (err) {
        fill(status, err.name === "AbortError" ? "Stopped." : errorBox(err));
      } finally {
        call.disabled = false; stop.disabled = true;
      }
    });
    return add(sec, form);
  }

  async function tryCord(c, cord, payload, signal, status, output, started) {
    const resp = await request("POST", "/ui/api/try", { chute: c.chute_id, cord: cord.name, input: payload }, signal);
    const type = resp.headers.get("content-type") || "";
    const invocation = resp.headers.get("x-chutes-invocation-id");
    const head = `HTTP ${resp.status}${invocation ? ` · invocation ${invocation}` : ""}`;
    const secs = () => ((performance.now() - started) / 1000).toFixed(2);
    if (!resp.ok && type.includes("json")) {
      const err = await toError(resp);
      fill(status, `${head} · ${secs()} s`);
      add(output, `${err.detail}${err.hint ? `\n${err.hint}` : ""}`);
      return;
    }
    if (type.startsWith("image/")) {
      const blob = await resp.blob();
      const url = URL.createObjectURL(blob);
      S.leave.push(() => URL.revokeObjectURL(url));
      fill(output, h("img", { src: url, alt: `the image the cord ${cord.name} returned`, class: "result-image" }));
      fill(status, `${head} · ${type} · ${secs()} s`);
      return;
    }
    if (type.startsWith("text/event-stream")) {
      let frames = 0;
      fill(status, `${head} · streaming…`);
      await readSSE(resp, (ev) => {
        frames += 1;
        add(output, `${ev.type === "message" ? "" : ev.type + ": "}${ev.data}\n`);
        output.scrollTop = output.scrollHeight;
        fill(status, `${head} · ${plural(frames, "frame")} · ${secs()} s`);
      });
      fill(status, `${head} · ${plural(frames, "frame")} in ${secs()} s · done`);
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const part = decoder.decode(value, { stream: true });
      text += part;
      add(output, part);
    }
    if (type.includes("json")) {
      try { fill(output, JSON.stringify(JSON.parse(text), null, 2)); } catch (_) { /* leave it as it came */ }
    }
    fill(status, `${head} · ${secs()} s · done`);
  }

  async function instances(c, sec, signal) {
    let rows;
    try { rows = await api("GET", `/v1/chutes/${encodeURIComponent(c.chute_id)}/instances`, undefined, signal); } catch (err) {
      if (err.name !== "AbortError") fill(sec, h("h2", { id: "h-inst" }, "Instances"), errorBox(err));
      return;
    }
    const view = rows.map((i) => [i.instance_id, i.node_id, i.gpu_count, i.gpu_model, i.state, i.healthy, i.created_at]);
    if (!changed(sec, view)) return;
    const logsSelect = $("#logs-instance");
    if (logsSelect) {
      const current = logsSelect.value;
      fill(logsSelect, h("option", { value: "" }, "the newest instance"),
        rows.map((i) => h("option", { value: i.instance_id, selected: i.instance_id === current }, `${short(i.instance_id)} (${i.state})`)));
    }
    const ended = (i) => ["stopped", "failed", "lost"].includes(i.state);
    const health = (i) => ended(i) ? "—" : i.healthy === true ? badge("passing", "ok") : i.healthy === false ? badge("failing", "bad") : badge("unknown", "idle");
    const cells = (i) => [
      h("code", { title: i.instance_id }, short(i.instance_id)), i.node_id || "—",
      i.gpu_count ? `${i.gpu_count}× ${i.gpu_model || "?"}` : "—", statusBadge(i.state), health(i), ago(i.created_at),
      h("button", { type: "button", class: "link", onclick: () => showLogs(i.instance_id) }, `Logs of ${short(i.instance_id)}`)];
    const heads = ["Instance", "Node", "GPUs", "State", "Health", "Age", ""];
    const live = rows.filter((i) => !ended(i));
    const past = rows.filter(ended);
    fill(sec, h("h2", { id: "h-inst" }, "Instances"),
      live.length ? table(heads, live.map(cells), "Instances") : h("p", { class: "empty", id: "no-instances" }, "No running instances (scaled to zero, or not placed yet)."),
      past.length ? h("details", null, h("summary", null, `${plural(past.length, "stopped or failed instance")} (Nomad still keeps them)`),
        table(heads, past.map(cells), "Stopped or failed instances")) : null);
  }

  function eventsSection(c, signal) {
    const state = h("span", { class: "muted", id: "events-state" }, "connecting…");
    const list = h("ol", { id: "events", class: "events", tabindex: "0", "aria-label": "Deploy events, oldest first" });
    const sec = h("section", { "aria-labelledby": "h-events" }, h("h2", { id: "h-events" }, "Deploy events ", state), list);
    const seen = new Set();
    followEvents(c.chute_id, (ev) => {
      if (seen.has(ev.id)) return;
      seen.add(ev.id);
      const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
      add(list, h("li", { "data-type": ev.type }, h("time", null, clock(ev.created_at)), " ", statusBadge(ev.type), " ",
        h("span", null, ev.message), ev.version ? h("code", { class: "muted" }, " " + short(ev.version)) : null));
      while (list.children.length > 500) list.firstChild.remove();
      if (atBottom) list.scrollTop = list.scrollHeight;
    }, (text) => { state.textContent = `(${text})`; }, signal);
    return sec;
  }

  let showLogs = () => {};

  function logsSection(c, signal) {
    const instance = h("select", { id: "logs-instance" }, h("option", { value: "" }, "the newest instance"));
    const stream = h("select", { id: "logs-stream" }, h("option", { value: "stdout" }, "stdout"), h("option", { value: "stderr" }, "stderr"));
    const follow = h("input", { id: "logs-follow", type: "checkbox", checked: true });
    const start = h("button", { type: "submit" }, "Show logs");
    const stop = h("button", { type: "button", class: "secondary", disabled: true }, "Stop logs");
    const status = h("p", { role: "status", class: "muted", id: "logs-status" });
    const out = h("pre", { id: "logs", class: "output logs", tabindex: "0", "aria-label": "Log lines" });
    let ctl = null;
    const halt = () => { if (ctl) ctl.abort(); };
    S.leave.push(halt);
    stop.addEventListener("click", halt);
    const form = h("form", { class: "card inline" },
      h("div", null, h("label", { for: "logs-instance" }, "Instance"), instance),
      h("div", null, h("label", { for: "logs-stream" }, "Stream"), stream),
      h("div", { class: "check" }, follow, h("label", { for: "logs-follow" }, " Follow")),
      h("div", { class: "buttons" }, start, stop));
    const run = async () => {
      halt();
      ctl = new AbortController();
      const mine = ctl;
      fill(out);
      start.disabled = true; stop.disabled = false;
      fill(status, follow.checked ? "Following…" : "Loading…");
      const q = new URLSearchParams({ stream: stream.value, follow: String(follow.checked) });
      if (instance.value) q.set("instance", instance.value);
      let lines = 0;
      try {
        const resp = await request("GET", `/v1/chutes/${encodeURIComponent(c.chute_id)}/logs?${q}`, undefined, mine.signal);
        if (!resp.ok) throw await toError(resp);
        await streamLines(resp, (line) => {
          if (!line) return;
          let item;
          try { item = JSON.parse(line); } catch (_) { return; }
          lines += 1;
          const atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 8;
          add(out, `[${short(item.instance)}] ${item.line}\n`);
          while (out.childNodes.length > 2000) out.firstChild.remove();
          if (atBottom) out.scrollTop = out.scrollHeight;
        });
        fill(status, `${plural(lines, "line")}; the log ended.`);
      } catch (err) {
        fill(status, err.name === "AbortError" ? `Stopped after ${plural(lines, "line")}.` : errorBox(err));
      } finally {
        if (ctl === mine) { start.disabled = false; stop.disabled = true; }
      }
    };
    form.addEventListener("submit", (e) => { e.preventDefault(); run(); });
    showLogs = (id) => { instance.value = id; run(); out.focus(); };
    void signal;
    return h("section", { "aria-labelledby": "h-logs" }, h("h2", { id: "h-logs" }, "Logs"), form, status, out);
  }

  function renderShared(list, c, reload) {
    fill(list, c.shared_with.length ? c.shared_with.map((user) => h("li", null, user, " ",
      h("button", { type: "button", class: "link", onclick: async () => {
        try { await api("DELETE", `/v1/chutes/${encodeURIComponent(c.chute_id)}/share/${encodeURIComponent(user)}`); toast(`No longer shared with ${user}.`); reload(); } catch (err) { toast(err.detail); }
      } }, `Stop sharing with ${user}`))) : h("li", { class: "muted" }, "Not shared with anyone."));
  }

  function shareSection(c, reload) {
    const list = h("ul", { id: "shared-list", class: "plain" });
    renderShared(list, c, reload);
    const user = h("input", { id: "share-user", autocomplete: "off", required: true, spellcheck: "false" });
    const message = h("div");
    const form = h("form", { class: "card inline" }, h("div", null, h("label", { for: "share-user" }, "Share with user"), user),
      h("div", { class: "buttons" }, h("button", { type: "submit" }, "Share")), message);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api("POST", `/v1/chutes/${encodeURIComponent(c.chute_id)}/share`, { username: user.value.trim() });
        toast(`Shared with ${user.value.trim()}.`); user.value = ""; fill(message); reload();
      } catch (err) { fill(message, errorBox(err)); }
    });
    return h("section", { "aria-labelledby": "h-share" }, h("h2", { id: "h-share" }, "Sharing"),
      h("p", { class: "muted" }, "Users you share with can call this chute."), list, form);
  }

  function manageSection(c, reload) {
    const n = h("input", { id: "scale-n", type: "number", min: "0", max: String(c.max_instances), value: String(c.desired_instances), required: true });
    const message = h("div", { id: "scale-message" });
    const scale = h("form", { class: "card inline" },
      h("div", null, h("label", { for: "scale-n" }, `Instances (0–${c.max_instances})`), n),
      h("div", { class: "buttons" }, h("button", { type: "submit" }, "Scale")), message);
    scale.addEventListener("submit", async (e) => {
      e.preventDefault();
      const count = Number(n.value);
      try {
        await api("POST", `/v1/chutes/${encodeURIComponent(c.chute_id)}/scale`, { instances: count });
        fill(message, h("p", { class: "notice", role: "status" }, `Scaled to ${plural(count, "instance")}.`));
        reload();
      } catch (err) { fill(message, errorBox(err)); }
    });
    const del = h("button", { type: "button", class: "danger", onclick: () => confirmDelete(c) }, "Delete chute…");
    return h("section", { "aria-labelledby": "h-manage" }, h("h2", { id: "h-manage" }, "Scale and delete"), scale,
      h("div", { class: "card" }, h("p", null, "Deleting stops every instance and removes the chute and its versions."), del));
  }

  function confirmDelete(c) {
    const typed = h("input", { id: "confirm-name", autocomplete: "off", spellcheck: "false" });
    const yes = h("button", { type: "submit", class: "danger", disabled: true }, "Delete");
    const no = h("button", { type: "button", class: "secondary" }, "Cancel");
    const message = h("div");
    const form = h("form", { method: "dialog" },
      h("h2", { id: "confirm-title" }, `Delete ${c.name}?`),
      h("p", { id: "confirm-desc" }, "This cannot be undone. Type the chute's name to confirm."),
      h("label", { for: "confirm-name" }, "Chute name"), typed, message, h("div", { class: "buttons" }, no, yes));
    const dialog = h("dialog", { "aria-labelledby": "confirm-title", "aria-describedby": "confirm-desc" }, form);
    typed.addEventListener("input", () => { yes.disabled = typed.value !== c.name; });
    no.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => dialog.remove());
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      yes.disabled = true;
      try {
        await api("DELETE", `/v1/chutes/${encodeURIComponent(c.chute_id)}`);
        dialog.close();
        toast(`${c.name} was deleted.`);
        location.hash = "#/chutes";
      } catch (err) { fill(message, errorBox(err)); yes.disabled = false; }
    });
    document.body.append(dialog);
    dialog.showModal();
    typed.focus();
  }

  // ---- nodes ---------------------------------------------------------------------------------------------

  function pageNodes(main) {
    const signal = pageSignal();
    const select = h("select", { id: "explain-chute" }, h("option", { value: "" }, "(no chute)"));
    const summary = h("div", { id: "placement", "aria-live": "polite" });
    const body = h("div", { id: "node-list" }, h("p", { class: "muted" }, "Loading…"));
    add(main, heading("Nodes"),
      h("form", { class: "card inline", onsubmit: (e) => e.preventDefault() },
        h("div", null, h("label", { for: "explain-chute" }, "Explain placement for"), select)),
      summary, body);
    api("GET", `/ui/api/chutes${S.me.is_admin ? "?all=true" : ""}`, undefined, signal).then((rows) => {
      add(select, rows.map((c) => h("option", { value: c.chute_id }, `${c.name} (${c.username})`)));
    }).catch(() => {});
    const refresh = async () => {
      const q = select.value ? `?chute=${encodeURIComponent(select.value)}` : "";
      let data;
      try { data = await api("GET", `/ui/api/nodes${q}`, undefined, signal); } catch (err) {
        if (err.name !== "AbortError") fill(body, errorBox(err));
        return;
      }
      if (changed(summary, [data.chute, data.explanation, data.hint])) {
        fill(summary, data.chute ? h("p", { class: "notice" }, h("strong", null, `${data.chute}: `), data.explanation || "",
          data.hint ? h("span", { class: "hint" }, ` ${data.hint}`) : null) : null);
      }
      if (!changed(body, data.nodes)) return;
      if (!data.nodes.length) { fill(body, h("p", { class: "empty" }, "No GPU node has published an inventory.")); return; }
      fill(body, data.nodes.map(nodeCard));
    };
    select.addEventListener("change", () => { body.dataset.key = ""; refresh(); });
    every(3000, refresh);
  }

  function nodeCard(n) {
    const holder = (g) => {
      if (g.held_by && g.held_by.chute_id) {
        return [chuteLink(g.held_by.chute_id, g.held_by.chute_name || short(g.held_by.chute_id)), " ",
          h("code", { title: g.held_by.instance_id }, short(g.held_by.instance_id))];
      }
      if (g.held_by || g.in_use) return h("span", { class: "muted" }, g.held_by ? "another user's instance" : "in use");
      return badge("free", "ok");
    };
    const v = n.verdict;
    const id = `node-${n.node_id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    return h("section", { class: "card node", "aria-labelledby": id, "data-node": n.node_id },
      h("h2", { id }, n.node_id, n.hostname && n.hostname !== n.node_id ? h("span", { class: "muted" }, ` (${n.hostname})`) : null),
      h("p", null, n.alive ? badge("alive", "ok") : badge("agent down", "bad"), " ",
        n.eligible ? badge("eligible", "ok") : badge("ineligible", "bad"), " ",
        `${n.gpu_count}× ${n.gpu_model || "unknown GPU"} · ${n.gpus_free} of ${n.gpu_count} free · inventory updated ${ago(n.updated_at)} ago`),
      v ? h("p", { class: `verdict ${v.fits ? "fits" : "nofit"}` }, v.fits ? "✓ " : "✗ ", v.label, v.hint ? h("span", { class: "hint" }, ` — ${v.hint}`) : null) : null,
      table(["GPU", "Model", "VRAM", "Health", "Held by", "Use"], n.gpus.map((g) => [
        String(g.index), g.model || g.name, `${(g.memory_total_mib / 1024).toFixed(0)} GiB`,
        g.healthy ? badge("healthy", "ok") : badge("unhealthy", "bad"), holder(g),
        g.utilization_pct === null || g.utilization_pct === undefined ? "—" : `${Math.round(g.utilization_pct)}%`]), `GPUs of ${n.node_id}`));
  }

  // ---- usage ---------------------------------------------------------------------------------------------

  function barChart(title, items, fmt) {
    // Horizontal bars, one per item; the table below the charts carries the same numbers.
    const max = Math.max(...items.map((i) => i.value), 0) || 1;
    const rowH = 26;
    const height = Math.max(1, items.length) * rowH + 8;
    const svg = h("svg", { viewBox: `0 0 360 ${height}`, role: "img", "aria-label": `${title}: ${items.map((i) => `${i.label} ${fmt(i.value)}`).join("; ") || "nothing yet"}`, class: "chart" },
      h("title", null, title));
    items.forEach((item, k) => {
      const y = k * rowH + 4;
      const w = Math.max(1, (item.value / max) * 150);
      add(svg, h("g", null, h("title", null, `${item.label}: ${fmt(item.value)}`),
        h("text", { x: "0", y: String(y + 16), class: "label" }, item.label.length > 15 ? item.label.slice(0, 14) + "…" : item.label),
        h("rect", { x: "130", y: String(y + 3), width: String(w), height: "16", rx: "2", class: "bar" }),
        h("text", { x: String(135 + w), y: String(y + 16), class: "value" }, fmt(item.value))));
    });
    if (!items.length) add(svg, h("text", { x: "0", y: "20", class: "label" }, "nothing in this period"));
    return h("figure", { class: "card" }, h("figcaption", null, title), svg);
  }

  function dayChart(title, days, fmt) {
    const max = Math.max(...days.map((d) => d.value), 0) || 1;
    const width = 360;
    const height = 110;
    const step = width / Math.max(1, days.length);
    const svg = h("svg", { viewBox: `0 0 ${width} ${height + 20}`, role: "img", class: "chart",
      "aria-label": `${title}: ${days.filter((d) => d.value).map((d) => `${d.label} ${fmt(d.value)}`).join("; ") || "nothing yet"}` },
      h("title", null, title), h("line", { x1: "0", y1: String(height), x2: String(width), y2: String(height), class: "axis" }));
    days.forEach((d, k) => {
      const bh = (d.value / max) * (height - 10);
      add(svg, h("g", null, h("title", null, `${d.label}: ${fmt(d.value)}`),
        h("rect", { x: String(k * step + 1), y: String(height - bh), width: String(Math.max(1, step - 2)), height: String(Math.max(0, bh)), class: "bar" })));
    });
    if (days.length) {
      add(svg, h("text", { x: "0", y: String(height + 16), class: "label" }, days[0].label),
        h("text", { x: String(width), y: String(height + 16), class: "label", "text-anchor": "end" }, days[days.length - 1].label));
    }
    return h("figure", { class: "card" }, h("figcaption", null, `${title} (max ${fmt(max)})`), svg);
  }

  function dayList(start, end) {
    const out = [];
    for (let t = Date.parse(`${start}T00:00:00Z`); t <= Date.parse(`${end}T00:00:00Z`); t += 86400000) out.push(new Date(t).toISOString().slice(0, 10));
    return out;
  }

  function pageUsage(main) {
    const signal = pageSignal();
    const range = h("select", { id: "usage-days" }, [7, 30, 90].map((d) => h("option", { value: String(d), selected: d === S.days }, `last ${d} days`)));
    const everyone = S.me.is_admin ? h("div", { class: "check" },
      h("input", { id: "usage-everyone", type: "checkbox", checked: S.everyone }), h("label", { for: "usage-everyone" }, " Every user")) : null;
    const live = h("section", { "aria-labelledby": "h-live" }, h("h2", { id: "h-live" }, "Running now"), h("p", { class: "muted" }, "Loading…"));
    const totals = h("div", { class: "totals", id: "usage-totals" });
    const charts = h("div", { class: "charts" });
    const lines = h("section", { "aria-labelledby": "h-lines" });
    add(main, heading("Usage"), h("form", { class: "card inline", onsubmit: (e) => e.preventDefault() },
      h("div", null, h("label", { for: "usage-days" }, "Period"), range), everyone),
      live, h("section", { "aria-labelledby": "h-period" }, h("h2", { id: "h-period" }, "This period"), totals, charts), lines);
    const q = () => `${S.me.is_admin && S.everyone ? "everyone=true&" : ""}`;
    let running = null;
    let fetchedAt = 0;
    const renderLive = () => {
      if (!running) return;
      const dt = Date.now() / 1000 - fetchedAt;
      const cost = (i) => Number(i.cost_usd) + (Number(i.hourly_usd) * dt) / 3600;
      const total = running.instances.reduce((s, i) => s + cost(i), 0);
      fill(live, h("h2", { id: "h-live" }, "Running now"),
        running.instances.length ? [
          h("p", { class: "big", id: "live-total" }, `${money(total, 4)} so far · ${money(running.hourly_usd)}/h for ${plural(running.instances.length, "instance")}`),
          table(["Chute", "Instance", "Node", "GPUs", "Rate", "Running for", "Cost so far"], running.instances.map((i) => [
            chuteLink(i.chute_id, i.chute_name), h("code", { title: i.instance_id }, short(i.instance_id)), i.node_id || "—",
            `${i.gpu_count}× ${i.gpu_model || "?"}`, `${money(i.hourly_usd)}/h`, ago(i.ready_at), money(cost(i), 4)]), "Running instances"),
        ] : h("p", { class: "empty" }, "No instance is running (or none is billed yet)."));
    };
    const loadLive = async () => {
      try { running = await api("GET", `/ui/api/usage/running?${q()}`, undefined, signal); fetchedAt = Date.now() / 1000; renderLive(); } catch (err) {
        if (err.name !== "AbortError") fill(live, h("h2", { id: "h-live" }, "Running now"), errorBox(err));
      }
    };
    const loadPeriod = async () => {
      const days = S.days;
      const end = new Date().toISOString().slice(0, 10);
      const start = new Date(Date.now() - (days - 1) * 86400000).toISOString().slice(0, 10);
      let usage;
      let models;
      try {
        [usage, models] = await Promise.all([
          api("GET", `/v1/usage?${q()}start=${start}&end=${end}`, undefined, signal),
          api("GET", `/ui/api/usage/models?${q()}days=${days}`, undefined, signal)]);
      } catch (err) {
        if (err.name !== "AbortError") fill(totals, errorBox(err));
        return;
      }
      if (!changed(lines, [usage, models])) return;
      const t = usage.total;
      fill(totals,
        h("div", { class: "total" }, h("span", null, "Cost"), h("strong", { id: "total-cost" }, money(t.cost_usd))),
        h("div", { class: "total" }, h("span", null, "GPU time"), h("strong", { id: "total-gpu" }, `${(Number(t.gpu_seconds) / 3600).toFixed(3)} h`)),
        h("div", { class: "total" }, h("span", null, "Calls"), h("strong", { id: "total-calls" }, String(t.invocations))),
        h("div", { class: "total" }, h("span", null, "Errors"), h("strong", null, String(t.errors))));
      const perDay = new Map(dayList(usage.start, usage.end).map((d) => [d, 0]));
      const perChute = new Map();
      for (const ln of usage.lines) {
        perDay.set(ln.day, (perDay.get(ln.day) || 0) + Number(ln.cost_usd));
        const key = S.everyone ? `${ln.username}/${ln.chute_name}` : ln.chute_name;
        perChute.set(key, (perChute.get(key) || 0) + Number(ln.cost_usd));
      }
      fill(charts,
        dayChart("Cost per day", [...perDay].map(([label, value]) => ({ label, value })), (v) => money(v)),
        barChart("Cost per chute", [...perChute].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([label, value]) => ({ label, value })), (v) => money(v)),
        barChart("GPU time per GPU model", models.models.map((m) => ({ label: m.gpu_model, value: Number(m.gpu_seconds) / 3600 })), (v) => `${v.toFixed(3)} h`));
      fill(lines, h("h2", { id: "h-lines" }, "Per day and chute"),
        usage.lines.length ? table(["Day", "User", "Chute", "Calls", "Errors", "GPU-seconds", "GPU models", "Cost"], usage.lines.slice().reverse().map((ln) => [
          ln.day, ln.username, ln.chute_name, String(ln.invocations), String(ln.errors), Number(ln.gpu_seconds).toFixed(1),
          ln.gpu_models.join(", ") || "—", money(ln.cost_usd)]), "Usage per day and chute") : h("p", { class: "empty" }, "No usage in this period."));
    };
    range.addEventListener("change", () => { S.days = Number(range.value); lines.dataset.key = ""; loadPeriod(); });
    if (everyone) everyone.querySelector("input").addEventListener("change", (e) => { S.everyone = e.target.checked; lines.dataset.key = ""; loadPeriod(); loadLive(); });
    every(10000, loadLive);
    every(10000, loadPeriod);
    const tick = setInterval(renderLive, 1000);
    S.leave.push(() => clearInterval(tick));
  }

  // ---- images and secrets (shown when the scheduler serves their API) ------------------------------------

  function cell(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "object") return h("code", null, JSON.stringify(v));
    return String(v);
  }

  function genericTable(rows, link, caption) {
    const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))].slice(0, 8);
    return table(cols, rows.map((r) => cols.map((c, k) => (k === 0 && link ? h("a", { href: link(r) }, cell(r[c])) : cell(r[c])))), caption);
  }

  async function pageList(main, title, path, link, empty) {
    const signal = pageSignal();
    const body = h("div", null, h("p", { class: "muted" }, "Loading…"));
    add(main, heading(title), body);
    every(5000, async () => {
      let rows;
      try { rows = await api("GET", path, undefined, signal); } catch (err) {
        if (err.name !== "AbortError") fill(body, errorBox(err));
        return;
      }
      if (!changed(body, rows)) return;
      const list = Array.isArray(rows) ? rows : rows.items || rows.images || rows.secrets || [];
      fill(body, list.length ? genericTable(list, link, title) : h("p", { class: "empty" }, empty));
    });
  }

  // Images (GET /v1/images: ImageOut rows, newest first; the header X-Chutes-Builds says whether this scheduler
  // builds at all). An image's page follows its build log: JSON lines {"image_id", "line"}.
  const IMAGE_ACTIVE = new Set(["queued", "building"]);
  const imageHref = (r) => `#/image/${encodeURIComponent(r.image_id)}`;
  // registry/user/name:tag@sha256:<12 hex>…, the whole reference in its tooltip (and on the image's page).
  const shortRef = (ref) => h("code", { title: ref }, ref.replace(/@sha256:([0-9a-f]{12})[0-9a-f]+$/, "@sha256:$1…"));
  const seconds = (v) => (v === null || v === undefined ? "—" : `${Number(v).toFixed(1)} s`);

  function pageImages(main) {
    const signal = pageSignal();
    const note = h("p", { class: "muted", id: "builds-state" });
    const body = h("div", null, h("p", { class: "muted" }, "Loading…"));
    add(main, heading("Images"), note, body);
    every(5000, async () => {
      let resp, rows;
      try {
        resp = await request("GET", "/v1/images", undefined, signal);
        if (!resp.ok) { const err = await toError(resp); if (resp.status === 401 && S.me) sessionLost(err); throw err; }
        rows = await resp.json();
      } catch (err) { if (err.name !== "AbortError") fill(body, errorBox(err)); return; }
      fill(note, resp.headers.get("X-Chutes-Builds") === "off"
        ? "This scheduler does not build images (no registry configured: CHUTES_REGISTRY)."
        : "Images are built on the cluster by `chutes build` and `chutes deploy`.");
      if (!changed(body, rows)) return;
      fill(body, rows.length ? table(["Image", "Status", "Owner", "Kind", "Built in", "Created", "Reference or error"],
        rows.map((r) => [h("a", { href: imageHref(r) }, `${r.name}:${r.tag}`), statusBadge(r.status), r.username, r.kind,
          seconds(r.build_seconds), `${ago(r.created_at)} ago`, r.ref ? shortRef(r.ref) : r.error || "—"]), "Images")
        : h("p", { class: "empty" }, "No images built yet. Build one with `chutes build app.py:chute --wait`."));
    });
  }

  function pageSecrets(main) {
    pageList(main, "Secrets", "/v1/secrets", null, "No secrets. Create one with `chutes secrets create NAME --chute CHUTE`.");
  }

  function imageFacts(dl, image) {
    const row = (k, v) => add(dl, h("dt", null, k), h("dd", null, v));
    fill(dl);
    row("Status", h("span", { id: "image-status" }, statusBadge(image.status)));
    row("Image ID", h("code", null, image.image_id));
    row("Owner", image.username);
    row("Kind", image.kind === "base" ? `runtime layer on ${image.base}` : "built from an Image");
    if (image.ref) row("Reference", h("code", { id: "image-ref" }, image.ref));
    row("Runtime", image.runtime_version);
    row("Build job", image.build_job_id || "—");
    row("Built in", seconds(image.build_seconds));
    row("Created", `${ago(image.created_at)} ago`);
    row("Context", image.context_bytes < 1024 ? `${image.context_bytes} bytes` : `${(image.context_bytes / 1024).toFixed(1)} KiB`);
    if (image.error) row("Error", h("span", { class: "error", id: "image-error" }, image.error));
  }

  function pageImage(main, id) {
    const signal = pageSignal();
    const title = heading("Image");
    const dl = h("dl", { class: "meta" });
    const out = h("pre", { class: "output logs", id: "build-log", tabindex: "0", "aria-label": "Build log" });
    const status = h("p", { role: "status", class: "muted", id: "build-log-status" }, "Loading the build log…");
    add(main, title, dl, h("section", { "aria-labelledby": "h-build" }, h("h2", { id: "h-build" }, "Build log"), status, out));
    let last = null;
    const load = async () => {
      try { last = await api("GET", `/v1/images/${encodeURIComponent(id)}`, undefined, signal); } catch (err) {
        if (err.name !== "AbortError") fill(dl, errorBox(err));
        return null;
      }
      fill(title, `Image ${last.name}:${last.tag}`);
      document.title = `Image ${last.name}:${last.tag} · chutes`;
      imageFacts(dl, last);
      return last;
    };
    // The facts follow the build (queued → building → ready | failed) until it ends; the log streams meanwhile.
    every(3000, async () => { if (!last || IMAGE_ACTIVE.has(last.status)) await load(); });
    (async () => {
      if (!(await load())) { fill(status, ""); return; }
      try {
        const resp = await request("GET", `/v1/images/${encodeURIComponent(id)}/logs?follow=true`, undefined, signal);
        if (!resp.ok) throw await toError(resp);
        fill(status, IMAGE_ACTIVE.has(last.status) ? "Following the build…" : "The build's output:");
        await streamLines(resp, (line) => {
          let text = line;
          try { const item = JSON.parse(line); if (item && typeof item.line === "string") text = item.line; } catch (_) { /* plain text */ }
          add(out, `${text}\n`);
          if (out.scrollHeight - out.scrollTop - out.clientHeight < 80) out.scrollTop = out.scrollHeight;
        });
        const done = await load();
        fill(status, done ? `The build log ended: ${done.status}.` : "The build log ended.");
      } catch (err) { if (err.name !== "AbortError") fill(status, errorBox(err)); }
    })();
  }

  // ---- router ----------------------------------------------------------------------------------------------

  const ROUTES = [
    [/^#\/signin$/, pageSignIn],
    [/^#\/chutes$/, pageChutes],
    [/^#\/chute\/(.+)$/, pageChute],
    [/^#\/nodes$/, pageNodes],
    [/^#\/usage$/, pageUsage],
    [/^#\/images$/, pageImages, "images"],
    [/^#\/image\/(.+)$/, pageImage, "images"],
    [/^#\/secrets$/, pageSecrets, "secrets"],
  ];

  async function route() {
    const hash = location.hash || "#/chutes";
    if (!hash.startsWith("#/")) return; // an anchor inside the page (the skip link)
    leave();
    const main = $("#main");
    if (!S.me && hash !== "#/signin") {
      try { signedIn(await api("GET", "/ui/api/session")); } catch (err) {
        if (err.status === 401 && err.detail && !/missing API key/.test(err.detail)) S.flash = err.detail;
        location.hash = "#/signin";
        return;
      }
    }
    if (S.me && hash === "#/signin") { location.hash = "#/chutes"; return; }
    chrome();
    fill(main);
    for (const [pattern, page, feature] of ROUTES) {
      const m = hash.match(pattern);
      if (!m) continue;
      if (feature && !S.features[feature]) break;
      page(main, ...m.slice(1).map(decodeURIComponent));
      const h1 = main.querySelector("h1");
      if (h1 && document.activeElement === document.body) h1.focus();
      else if (h1 && !main.contains(document.activeElement)) h1.focus();
      return;
    }
    add(main, heading("Not found"), h("p", null, "There is no such page. ", h("a", { href: "#/chutes" }, "Go to the chutes.")));
  }

  window.addEventListener("hashchange", route);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", route);
  else route();
})();
