// The Flotilla dashboard: one page, hash routes, no framework and no build step.
//
// Everything it shows comes from the coordinator's API (docs/api.md) with the admin token the
// user pastes in (kept in sessionStorage: this tab only). Live updates come over the event
// WebSocket, which authenticates with the subprotocols `flotilla, bearer.<token>` because a
// browser cannot set headers on a WebSocket.
//
// Views are built once when shown and then updated in place: tiles, rows and cards are keyed by
// id and only what changed is touched, so periodic and live refreshes never replace an input
// the user is typing in. Strings from the API are only ever set as text (never as HTML).

import { PERIODS, formatValue, metricCharts, timeRange, timeline, totals } from "./charts.js";

const TOKEN_KEY = "flotilla.token";
const SWARM_KEY = "flotilla.swarm";
const MAX_EVENTS = 500;
const UNFINISHED = new Set(["blocked", "queued", "assigned", "running"]);
const RETRYABLE = new Set(["failed", "dead", "cancelled"]);
const TASK_STATUSES = ["blocked", "queued", "assigned", "running", "completed", "failed", "cancelled", "dead"];

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

// ----- DOM helpers -----

/** An element: `h("a", {href, class, text, onclick, dataset: {...}}, ...children)`. */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function setText(node, text) {
  const t = String(text ?? "");
  if (node.textContent !== t) node.textContent = t;
}

function setClass(node, cls) {
  if (node.className !== cls) node.className = cls;
}

function badge(text, kind = text) {
  return h("span", { class: `badge ${kind ?? ""}`, text });
}

function short(id) {
  return id ? String(id).slice(0, 8) : "–";
}

function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function pct(x) {
  return typeof x === "number" ? `${Math.round(x * 100)}%` : "–";
}

function json(v) {
  return v === undefined ? "" : JSON.stringify(v, null, 2);
}

/** Whether the user is typing or choosing in a field inside `root`. */
function editing(root) {
  const a = document.activeElement;
  return !!a && root.contains(a) && a.matches("input, select, textarea");
}

/**
 * Runs `fn` at most once per `ms`, the last call winning: bursts of events become one
 * refresh. The returned function takes no arguments; `.cancel()` drops a pending run.
 */
function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  const run = () => {
    timer = null;
    last = performance.now();
    fn();
  };
  const call = () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - performance.now());
    timer = setTimeout(run, wait);
  };
  call.cancel = () => {
    clearTimeout(timer);
    timer = null;
  };
  return call;
}

// ----- the API -----

/** An error answer of the API (`{"error": {"code", "message"}}`) or a failed request. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the API with the admin token; JSON in and out. Throws {@link ApiError}. */
async function api(path, { method = "GET", body, text = false, token = app.token } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "network", `cannot reach the coordinator (${e.message})`);
  }
  if (!res.ok) {
    let code = "http_error";
    let message = `${res.status} ${res.statusText}`;
    try {
      const err = (await res.json()).error;
      if (err) {
        code = err.code ?? code;
        message = err.message ?? message;
      }
    } catch {
      // Not a JSON error body: the status says it.
    }
    const error = new ApiError(res.status, code, message);
    if (res.status === 401 && token === app.token && app.token) {
      logout(`The coordinator refused the token (${message}). Sign in again.`);
    }
    throw error;
  }
  if (res.status === 204) return null;
  return text ? res.text() : res.json();
}

/** Every page of a list endpoint. */
async function listAll(path) {
  const items = [];
  let cursor = null;
  const sep = path.includes("?") ? "&" : "?";
  do {
    const page = await api(`${path}${sep}limit=1000${cursor ? `&cursor=${enc(cursor)}` : ""}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

// ----- banners and the confirmation dialog -----

/** Shows an error in the banner at the top until dismissed or replaced. */
function showError(err) {
  // Signed out (the token was refused): the sign-in box says why.
  if (!app.token) return;
  const text = err instanceof ApiError && err.status
    ? `${err.message} (${err.status} ${err.code})`
    : String(err?.message ?? err);
  setText($("banner-text"), text);
  $("banner").hidden = false;
}

function hideError() {
  $("banner").hidden = true;
}

let noticeTimer = null;
/** A short confirmation that something was done. */
function notify(text) {
  setText($("notice"), text);
  $("notice").hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => ($("notice").hidden = true), 4000);
}

/** Asks before a destructive action; resolves to whether the user confirmed. */
function confirmAction(text, ok = "Confirm") {
  const dialog = $("confirm");
  setText($("confirm-text"), text);
  setText($("confirm-ok"), ok);
  return new Promise((resolve) => {
    const done = (answer) => {
      $("confirm-ok").onclick = null;
      $("confirm-cancel").onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    $("confirm-ok").onclick = () => done(true);
    $("confirm-cancel").onclick = () => done(false);
    dialog.onclose = () => done(false);
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

/** Runs a control's request: errors go to the banner, success to a notice. */
async function act(what, request) {
  try {
    const answer = await request();
    hideError();
    notify(what);
    return answer;
  } catch (e) {
    showError(e);
    return undefined;
  }
}

// ----- the session -----

const app = {
  token: null,
  swarm: sessionStorage.getItem(SWARM_KEY) || "default",
  swarms: [],
  swarmNames: new Map(),
  names: new Map(),
  namesFetched: new Map(),
  current: null,
  ws: null,
  wsBackoff: 1000,
  wsRetry: null,
  lastSeq: 0,
  events: [],
  receiving: Promise.resolve(),
  timers: [],
};

/** Name of an agent if known, else the start of its id. */
function agentName(id) {
  return id ? app.names.get(id) ?? short(id) : "–";
}

function swarmName(id) {
  return app.swarmNames.get(id) ?? short(id);
}

function rememberAgents(agents) {
  for (const a of agents) app.names.set(a.id, a.name);
}

/** Loads the names of agents not yet known, a swarm's list at a time (at most every 5 s). */
async function learnNames(events) {
  const swarms = new Set();
  for (const e of events) {
    if (e.agent_id && !app.names.has(e.agent_id)) swarms.add(e.swarm_id);
  }
  const now = Date.now();
  await Promise.all([...swarms].map(async (s) => {
    if (now - (app.namesFetched.get(s) ?? 0) < 5000) return;
    app.namesFetched.set(s, now);
    try {
      rememberAgents(await listAll(`/swarms/${enc(s)}/agents`));
    } catch {
      // A deleted swarm: its agents keep their short ids.
    }
  }));
}

async function login(token) {
  // The admin-only coordinator status tells a good token from an agent's or a wrong one.
  const info = await api("/orchestrator", { token });
  app.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  return info;
}

function logout(message) {
  app.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (app.ws) {
    const ws = app.ws;
    app.ws = null;
    ws.close();
  }
  clearTimeout(app.wsRetry);
  app.timers.forEach(clearInterval);
  app.timers = [];
  app.current?.view.destroy?.();
  app.current = null;
  app.events = [];
  app.lastSeq = 0;
  $("view").replaceChildren();
  $("view").hidden = true;
  $("nav").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  const err = $("login-error");
  err.hidden = !message;
  setText(err, message ?? "");
  hideError();
  $("token").value = "";
  $("token").focus();
}

async function started(info) {
  $("login").hidden = true;
  $("view").hidden = false;
  $("nav").hidden = false;
  $("session").hidden = false;
  showCoordinator(info);
  await loadSwarms();
  await loadRecentEvents();
  connectLive();
  app.timers.push(setInterval(loadSwarms, 10_000));
  app.timers.push(setInterval(async () => {
    try {
      showCoordinator(await api("/orchestrator"));
    } catch {
      // Shown by the next action that fails.
    }
  }, 30_000));
  route();
}

function showCoordinator(info) {
  setText($("coordinator"), `v${info.version} · up ${fmtDuration(info.uptime_ms)} · ${info.agents.total} agents`);
}

/** The swarms, for the selector in the header (left alone while it is being used). */
async function loadSwarms() {
  try {
    app.swarms = await listAll("/swarms");
  } catch (e) {
    if (app.token) showError(e);
    return;
  }
  for (const s of app.swarms) app.swarmNames.set(s.id, s.name);
  const select = $("swarm-select");
  if (!app.swarms.some((s) => s.name === app.swarm) && app.swarms.length) {
    app.swarm = app.swarms.some((s) => s.name === "default") ? "default" : app.swarms[0].name;
  }
  if (document.activeElement === select) return;
  const names = app.swarms.map((s) => s.name);
  const have = [...select.options].map((o) => o.value);
  if (names.join("\n") !== have.join("\n")) {
    select.replaceChildren(...names.map((n) => h("option", { value: n, text: n })));
  }
  select.value = app.swarm;
}

async function loadRecentEvents() {
  try {
    const page = await api("/events?latest=true&limit=100");
    await learnNames(page.items);
    app.events = page.items.slice().reverse();
    app.lastSeq = page.items.reduce((m, e) => Math.max(m, e.seq), app.lastSeq);
  } catch (e) {
    showError(e);
  }
}

// ----- live events -----

function setLive(state, title) {
  const el = $("live");
  setClass(el, `live ${state}`);
  setText(el, state === "on" ? "live" : state === "connecting" ? "connecting…" : "offline");
  el.title = title ?? "Live events";
}

function connectLive() {
  clearTimeout(app.wsRetry);
  if (!app.token) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/api/v1/events/ws?after=${app.lastSeq}`;
  let ws;
  try {
    ws = new WebSocket(url, ["flotilla", `bearer.${app.token}`]);
  } catch (e) {
    setLive("off", `cannot open the event socket: ${e.message}`);
    return;
  }
  app.ws = ws;
  setLive("connecting");
  ws.onopen = () => {
    app.wsBackoff = 1000;
    setLive("on");
  };
  ws.onmessage = (m) => {
    let frame;
    try {
      frame = JSON.parse(m.data);
    } catch {
      return;
    }
    if (frame.type === "events") receive(frame.events);
    else if (frame.type === "error") showError(`live events: ${frame.message}`);
  };
  ws.onclose = () => {
    if (app.ws !== ws) return;
    app.ws = null;
    setLive("off", "reconnecting");
    app.wsRetry = setTimeout(connectLive, app.wsBackoff);
    app.wsBackoff = Math.min(app.wsBackoff * 2, 15_000);
  };
}

/** Takes a frame of events: one at a time, in order (learning names may wait on the API). */
function receive(events) {
  app.receiving = app.receiving.then(() => take(events)).catch(() => {});
}

async function take(events) {
  const fresh = events.filter((e) => e.seq > app.lastSeq);
  if (!fresh.length) return;
  app.lastSeq = fresh[fresh.length - 1].seq;
  await learnNames(fresh);
  app.events.unshift(...fresh.slice().reverse());
  if (app.events.length > MAX_EVENTS) app.events.length = MAX_EVENTS;
  if (fresh.some((e) => e.type.startsWith("swarm_"))) loadSwarms();
  app.current?.view.onEvents?.(fresh);
}

// ----- the router -----

const SWARM_SCOPED = new Set(["agents", "charts", "topology"]);

const VIEWS = {
  swarms: swarmsView,
  agents: agentsView,
  tasks: tasksView,
  task: taskView,
  charts: chartsView,
  alerts: alertsView,
  topology: topologyView,
  events: eventsView,
  hosts: hostsView,
};

/** A URI component decoded, or as it is when it is not valid percent-encoding. */
function safeDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const [name, arg] = path.split("/");
  return {
    name: VIEWS[name] ? name : "swarms",
    arg: arg ? safeDecode(arg) : null,
    params: new URLSearchParams(query),
  };
}

function route() {
  if (!app.token) return;
  const r = parseHash();
  if (SWARM_SCOPED.has(r.name) && r.params.get("swarm")) {
    app.swarm = r.params.get("swarm");
    sessionStorage.setItem(SWARM_KEY, app.swarm);
    $("swarm-select").value = app.swarm;
  }
  // A view is built again when its route changes (a link, the swarm selector); its own
  // filters change the address with replaceQuery, which does not come here.
  const key = `${location.hash}@${SWARM_SCOPED.has(r.name) ? app.swarm : ""}`;
  for (const a of $("nav").querySelectorAll("a")) {
    a.classList.toggle("active", a.dataset.view === r.name || (r.name === "task" && a.dataset.view === "tasks"));
  }
  if (app.current?.key === key) return;
  app.current?.view.destroy?.();
  const view = VIEWS[r.name](r);
  app.current = { key, view, name: r.name };
  $("view").replaceChildren(view.el);
}

/** Changes the query of the current route without building the view again. */
function replaceQuery(params) {
  const r = parseHash();
  const q = params.toString();
  const hash = `#/${r.name}${r.arg ? `/${enc(r.arg)}` : ""}${q ? `?${q}` : ""}`;
  history.replaceState(null, "", hash);
  if (app.current) app.current.key = `${location.hash}@${SWARM_SCOPED.has(r.name) ? app.swarm : ""}`;
}

/** A view's periodic refresh, stopped when the view goes. */
function every(ms, fn) {
  const id = setInterval(fn, ms);
  return () => clearInterval(id);
}

// ----- swarms overview -----

function swarmsView() {
  const cards = new Map();
  const box = h("div", { class: "cards", id: "swarm-cards" });
  const el = h("div", {}, h("h1", { text: "Swarms" }), box);

  function statCell(label) {
    const b = h("b", { text: "–" });
    return { el: h("div", { class: "stat" }, b, h("span", { text: label })), b };
  }

  function card(s) {
    const title = h("a", { href: `#/agents?swarm=${enc(s.name)}`, text: s.name });
    const status = badge(s.status);
    const stats = {};
    const statsBox = h("div", { class: "stats" });
    for (const [key, label] of [
      ["topology", "topology"], ["agents", "agents"], ["queue", "queue depth"], ["blocked", "blocked"],
      ["queued", "queued"], ["delayed", "delayed"], ["assigned", "assigned"], ["running", "running"], ["oldest", "oldest queued"],
    ]) {
      stats[key] = statCell(label);
      statsBox.append(stats[key].el);
    }
    const tbody = h("tbody");
    const links = h("div", { class: "controls" },
      h("a", { href: `#/agents?swarm=${enc(s.name)}`, text: "agents" }),
      h("a", { href: `#/tasks?swarm=${enc(s.name)}`, text: "tasks" }),
      h("a", { href: `#/charts?swarm=${enc(s.name)}`, text: "charts" }),
      h("a", { href: `#/topology?swarm=${enc(s.name)}`, text: "topology" }));
    const section = h("section", { class: "panel", dataset: { swarm: s.name } },
      h("h2", {}, title, " ", status),
      statsBox,
      h("table", { class: "pools" },
        h("thead", {}, h("tr", {},
          ...["pool", "size", "agents by status", "utilisation", "ready", "error rate", "wait p95", "scale"].map((t) => h("th", { text: t })))),
        tbody),
      links);
    return { el: section, status, stats, tbody, pools: new Map(), empty: null };
  }

  function poolRow(swarm, p) {
    const cells = {
      name: h("td"), size: h("td", { class: "num" }), by: h("td"), util: h("td", { class: "num" }),
      ready: h("td", { class: "num" }), err: h("td", { class: "num" }), wait: h("td", { class: "num" }),
    };
    const scale = h("td");
    let input = null;
    if (p.managed) {
      input = h("input", { type: "number", min: "0", step: "1", "aria-label": `new size of pool ${p.name}`, class: "scale-input" });
      const button = h("button", { type: "button", class: "small", text: "Scale" });
      const go = () => scalePool(swarm, p.name, input);
      button.addEventListener("click", go);
      input.addEventListener("keydown", (e) => {
        if (e.key === "Enter") go();
      });
      scale.append(input, " ", button);
    } else {
      scale.append(h("span", { class: "muted", text: "connected agents" }));
    }
    const tr = h("tr", { dataset: { pool: p.name } }, cells.name, cells.size, cells.by, cells.util, cells.ready, cells.err, cells.wait, scale);
    return { el: tr, cells, input, pool: p };
  }

  async function scalePool(swarm, pool, input) {
    const row = cards.get(swarm)?.pools.get(pool);
    const raw = input.value.trim();
    const n = Number(raw);
    if (raw === "" || !Number.isInteger(n) || n < 0) {
      showError(`Type the number of agents pool ${pool} should have (a whole number).`);
      return;
    }
    const desired = row?.pool.size.desired ?? 0;
    if (n < desired) {
      const ok = await confirmAction(`Scale pool ${pool} down from ${desired} to ${n} agents? ${desired - n} agent(s) will finish their tasks and stop.`, "Scale down");
      if (!ok) return;
    }
    const answer = await act(`Pool ${pool}: ${desired} → ${n} agents`, () =>
      api(`/swarms/${enc(swarm)}/scale`, { method: "POST", body: { pool, agents: n } }));
    if (answer !== undefined) {
      input.value = "";
      refresh();
    }
  }

  function update(c, s, health) {
    setText(c.status, s.status);
    setClass(c.status, `badge ${s.status}`);
    const t = health?.tasks ?? {};
    const values = {
      topology: s.topology, agents: s.agent_count, queue: s.queue_depth, blocked: t.blocked ?? "–",
      queued: t.queued ?? "–", delayed: t.delayed ?? "–", assigned: t.assigned ?? "–", running: t.running ?? "–",
      oldest: health?.oldest_queued_age_ms == null ? "–" : fmtDuration(health.oldest_queued_age_ms),
    };
    for (const [k, v] of Object.entries(values)) setText(c.stats[k].b, v);
    const seen = new Set();
    for (const p of s.pools ?? []) {
      seen.add(p.name);
      let row = c.pools.get(p.name);
      if (!row) {
        row = poolRow(s.name, p);
        c.pools.set(p.name, row);
        c.tbody.append(row.el);
      }
      row.pool = p;
      setText(row.cells.name, `${p.name}${p.managed ? "" : " (connected)"}`);
      setText(row.cells.size, `${p.size.current} / ${p.size.desired} (${p.size.min}–${p.size.max})${p.size.draining ? `, ${p.size.draining} draining` : ""}`);
      setText(row.cells.by, Object.entries(p.size.by_status ?? {}).map(([k, v]) => `${k} ${v}`).join(", ") || "–");
      setText(row.cells.util, pct(p.utilization));
      setText(row.cells.ready, p.queue.ready);
      setText(row.cells.err, p.recent_outcomes ? pct(p.error_rate) : "–");
      setText(row.cells.wait, p.wait_p95_ms == null ? "–" : formatValue(p.wait_p95_ms, "ms"));
      if (row.input && !row.input.placeholder.endsWith(` ${p.size.desired}`)) row.input.placeholder = `now ${p.size.desired}`;
    }
    for (const [name, row] of c.pools) {
      if (!seen.has(name)) {
        row.el.remove();
        c.pools.delete(name);
      }
    }
    if (!c.pools.size && !c.empty) {
      c.empty = h("tr", {}, h("td", { colspan: "8", class: "empty", text: "No pools: agents registered without a pool, or none yet." }));
      c.tbody.append(c.empty);
    } else if (c.pools.size && c.empty) {
      c.empty.remove();
      c.empty = null;
    }
  }

  async function refresh() {
    let swarms;
    let healths;
    try {
      swarms = await listAll("/swarms");
      healths = await Promise.all(swarms.map((s) => api(`/swarms/${enc(s.id)}/health`).catch(() => null)));
    } catch (e) {
      showError(e);
      return;
    }
    const seen = new Set();
    swarms.forEach((s, i) => {
      seen.add(s.name);
      let c = cards.get(s.name);
      if (!c) {
        c = card(s);
        cards.set(s.name, c);
        box.append(c.el);
      }
      update(c, s, healths[i]);
    });
    for (const [name, c] of cards) {
      if (!seen.has(name)) {
        c.el.remove();
        cards.delete(name);
      }
    }
  }

  const soon = throttle(refresh, 1000);
  const stop = every(3000, refresh);
  refresh();
  return {
    el,
    onEvents(events) {
      if (events.some((e) => /^(swarm_|pool_|agent_|task_)/.test(e.type))) soon();
    },
    destroy() {
      stop();
      soon.cancel();
    },
  };
}

// ----- agent grid -----

const OPS = ["start", "stop", "pause", "resume", "restart"];

function agentsView() {
  const swarm = app.swarm;
  const mountedAt = performance.now();
  const tiles = new Map();
  let swarmId = app.swarms.find((x) => x.name === swarm)?.id ?? null;
  let selected = null;
  let filter = "";
  let firstRender = true;
  const queue = [];
  let frame = 0;
  let dirty = new Set();
  let logText = null;

  const summary = h("div", { class: "stats", id: "agent-summary" });
  const search = h("input", { type: "search", placeholder: "filter: name, status, type", "aria-label": "filter agents", id: "agent-filter" });
  const grid = h("div", { id: "agent-grid", dataset: { count: "0" } });
  const side = h("aside", { class: "panel side", id: "agent-panel" }, h("p", { class: "muted", text: "Select an agent to see it and control it." }));
  const el = h("div", {},
    h("h1", { text: `Agents in ${swarm}` }),
    summary,
    h("div", { class: "toolbar" }, search),
    h("div", { class: "grid-layout" }, grid, side));

  search.addEventListener("input", () => {
    filter = search.value.trim().toLowerCase();
    for (const t of tiles.values()) t.el.hidden = !matches(t.agent);
  });
  grid.addEventListener("click", (e) => {
    const tile = e.target.closest(".tile");
    if (!tile) return;
    select(tile.dataset.id);
  });

  function matches(a) {
    if (!filter) return true;
    return [a.name, a.status, a.type, a.health?.state].some((v) => String(v ?? "").toLowerCase().includes(filter));
  }

  function newTile(a) {
    const parts = {
      name: h("div", { class: "name" }),
      state: h("div", { class: "line" }),
      task: h("div", { class: "line" }),
      usage: h("div", { class: "line" }),
      bar: h("i"),
    };
    const el = h("div", { class: "tile", tabindex: "0", dataset: { id: a.id, name: a.name } },
      parts.name, parts.state, parts.task, parts.usage, h("div", { class: "bar" }, parts.bar));
    el.addEventListener("keydown", (e) => {
      if (e.key === "Enter") select(a.id);
    });
    return { el, parts, sig: "", agent: a };
  }

  function signature(a) {
    const u = a.resource_usage ?? {};
    return [a.name, a.status, a.health?.state, a.current_tasks?.join(","), Math.round(u.cpu_percent ?? -1), Math.round(u.memory_mb ?? -1)].join("|");
  }

  function paint(t) {
    const a = t.agent;
    const sig = signature(a);
    if (sig === t.sig) return;
    t.sig = sig;
    const health = a.health?.state ?? "healthy";
    const u = a.resource_usage ?? {};
    setClass(t.el, `tile h-${health} s-${a.status}${selected === a.id ? " selected" : ""}`);
    t.el.dataset.status = a.status;
    t.el.title = `${a.name}: ${a.status}, ${health}${a.health?.reason ? ` (${a.health.reason})` : ""}`;
    setText(t.parts.name, a.name);
    setText(t.parts.state, `${a.status} · ${health}`);
    const n = a.current_tasks?.length ?? 0;
    setText(t.parts.task, n === 0 ? "no task" : n === 1 ? `task ${short(a.current_tasks[0])}` : `${n} tasks`);
    setText(t.parts.usage, `cpu ${u.cpu_percent == null ? "–" : `${Math.round(u.cpu_percent)}%`} · mem ${u.memory_mb == null ? "–" : `${Math.round(u.memory_mb)} MB`}`);
    t.parts.bar.style.width = `${Math.min(100, Math.max(0, u.cpu_percent ?? 0))}%`;
    t.el.hidden = !matches(a);
    if (selected === a.id) renderPanel();
  }

  /** Applies agents to tiles, a few hundred per animation frame. */
  function enqueue(agents) {
    queue.push(...agents);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  let unordered = false;

  function flush() {
    frame = 0;
    const batch = queue.splice(0, 250);
    const fragment = document.createDocumentFragment();
    for (const a of batch) {
      let t = tiles.get(a.id);
      if (!t) {
        t = newTile(a);
        tiles.set(a.id, t);
        fragment.append(t.el);
        unordered ||= !firstRender;
      }
      t.agent = a;
      paint(t);
    }
    if (fragment.childNodes.length) {
      grid.querySelector(":scope > .empty")?.remove();
      grid.append(fragment);
    }
    grid.dataset.count = String(tiles.size);
    if (queue.length) {
      frame = requestAnimationFrame(flush);
      return;
    }
    if (unordered) reorder();
    if (firstRender) {
      firstRender = false;
      grid.dataset.renderMs = String(Math.round(performance.now() - mountedAt));
      grid.dataset.ready = "1";
    }
    paintSummary();
  }

  /** Puts tiles that joined after the first render in name order (one pass, only if needed). */
  function reorder() {
    unordered = false;
    const sorted = [...tiles.values()].sort((a, b) => (a.agent.name < b.agent.name ? -1 : a.agent.name > b.agent.name ? 1 : 0));
    const inDom = [...grid.children];
    if (sorted.every((t, i) => inDom[i] === t.el)) return;
    grid.append(...sorted.map((t) => t.el));
  }

  function drop(id) {
    const t = tiles.get(id);
    if (!t) return;
    t.el.remove();
    tiles.delete(id);
    if (selected === id) {
      selected = null;
      renderPanel();
    }
  }

  function paintSummary() {
    const by = {};
    const health = {};
    for (const t of tiles.values()) {
      by[t.agent.status] = (by[t.agent.status] ?? 0) + 1;
      const s = t.agent.health?.state ?? "healthy";
      health[s] = (health[s] ?? 0) + 1;
    }
    const text = [`${tiles.size} agents`, ...Object.entries(by).map(([k, v]) => `${v} ${k}`), "·", ...Object.entries(health).map(([k, v]) => `${v} ${k}`)].join("  ");
    setText(summary, text);
  }

  async function loadAll() {
    let agents;
    try {
      agents = await listAll(`/swarms/${enc(swarm)}/agents`);
    } catch (e) {
      showError(e);
      return;
    }
    rememberAgents(agents);
    if (agents.length) swarmId = agents[0].swarm_id;
    agents.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const seen = new Set(agents.map((a) => a.id));
    for (const id of [...tiles.keys()]) if (!seen.has(id)) drop(id);
    enqueue(agents);
    if (!agents.length && firstRender) {
      firstRender = false;
      grid.dataset.ready = "1";
      grid.append(h("p", { class: "empty", text: "No agents in this swarm yet." }));
    }
  }

  async function loadDirty() {
    const ids = [...dirty];
    dirty = new Set();
    if (ids.length > 40) return loadAll();
    const agents = await Promise.all(ids.map(async (id) => {
      try {
        return await api(`/agents/${enc(id)}`);
      } catch (e) {
        if (e.status === 404) drop(id);
        return null;
      }
    }));
    enqueue(agents.filter((a) => a && a.swarm_id === swarmId));
  }

  function select(id) {
    const old = tiles.get(selected);
    selected = id;
    logText = null;
    if (old) {
      old.el.classList.remove("selected");
    }
    tiles.get(id)?.el.classList.add("selected");
    renderPanel();
  }

  function renderPanel() {
    const t = tiles.get(selected);
    if (!t) {
      side.replaceChildren(h("p", { class: "muted", text: "Select an agent to see it and control it." }));
      return;
    }
    const a = t.agent;
    const u = a.resource_usage ?? {};
    const managed = !!a.managed;
    const allowed = {
      start: ["stopped", "failed", "pending", "recovering"].includes(a.status),
      stop: a.status !== "stopped",
      pause: ["idle", "busy", "starting"].includes(a.status),
      resume: a.status === "paused",
      restart: true,
    };
    const buttons = OPS.map((op) => h("button", {
      type: "button",
      class: op === "stop" ? "small danger" : "small",
      text: op[0].toUpperCase() + op.slice(1),
      dataset: { op },
      disabled: !managed || !allowed[op],
      title: managed ? "" : "a connected agent runs on its own; only managed agents can be controlled",
      onclick: () => lifecycle(a, op),
    }));
    const tasks = (a.current_tasks ?? []).map((id) => h("a", { href: `#/task/${enc(id)}`, text: short(id) }));
    const logButton = h("button", { type: "button", class: "small secondary", text: "Log tail", onclick: () => loadLog(a) });
    side.replaceChildren(
      h("h2", { text: a.name }),
      h("div", {}, badge(a.status), " ", badge(a.health?.state ?? "healthy")),
      h("dl", {},
        h("dt", { text: "id" }), h("dd", { class: "mono", text: a.id }),
        h("dt", { text: "type" }), h("dd", { text: a.type }),
        h("dt", { text: "role" }), h("dd", { text: a.role ?? "–" }),
        h("dt", { text: "tasks" }), h("dd", {}, tasks.length ? tasks.flatMap((x, i) => (i ? [", ", x] : [x])) : "none"),
        h("dt", { text: "done / failed" }), h("dd", { text: `${a.tasks_completed} / ${a.tasks_failed}` }),
        h("dt", { text: "cpu / memory" }), h("dd", { text: `${u.cpu_percent == null ? "–" : `${u.cpu_percent.toFixed(1)}%`} / ${u.memory_mb == null ? "–" : `${u.memory_mb.toFixed(1)} MB`}` }),
        h("dt", { text: "health" }), h("dd", { text: a.health?.reason ? `${a.health.reason}${a.health.detail ? `: ${a.health.detail}` : ""}` : "ok" }),
        h("dt", { text: "heartbeat" }), h("dd", { text: fmtTime(a.last_heartbeat_at) }),
        h("dt", { text: "managed" }), h("dd", { text: managed ? `${a.managed.mode}, ${a.managed.runtime}, pid ${a.managed.pid ?? "–"}, starts ${a.managed.starts}` : "no (connected)" })),
      h("div", { class: "controls" }, ...buttons),
      h("div", { class: "controls" }, logButton),
      ...(logText === null ? [] : [h("pre", { class: "log", text: logText || "(empty)" })]));
  }

  async function lifecycle(a, op) {
    if (op === "stop") {
      const ok = await confirmAction(`Stop agent ${a.name}? Its running tasks go back to the queue.`, "Stop");
      if (!ok) return;
    }
    const agent = await act(`${a.name}: ${op}`, () => api(`/agents/${enc(a.id)}`, { method: "PATCH", body: { operation: op } }));
    if (agent) enqueue([agent]);
  }

  async function loadLog(a) {
    try {
      logText = await api(`/agents/${enc(a.id)}/logs?tail=100`, { text: true });
    } catch (e) {
      logText = `no log: ${e.message}`;
    }
    renderPanel();
  }

  // Live events name the agents that changed: those are read again (a burst at once, at most
  // once a second); the whole list is read every 5 s (15 s past 300 agents) for CPU and memory.
  const soon = throttle(loadDirty, 1000);
  const reload = throttle(loadAll, 1000);
  const stop = every(5000, () => (tiles.size > 300 ? null : loadAll()));
  const slow = every(15_000, () => (tiles.size > 300 ? loadAll() : null));
  loadAll();

  return {
    el,
    onEvents(events) {
      for (const e of events) {
        if (swarmId && e.swarm_id !== swarmId) continue;
        if (e.type === "agent_joined" || e.type === "agent_left" || e.type === "pool_scaled" || !swarmId) reload();
        else if (e.agent_id) {
          dirty.add(e.agent_id);
          soon();
        }
      }
    },
    destroy() {
      stop();
      slow();
      soon.cancel();
      reload.cancel();
      cancelAnimationFrame(frame);
    },
    /** For tests and measurements: a full reload and diff, resolved when painted. */
    async reloadNow() {
      await loadAll();
      await new Promise((r) => {
        const wait = () => (queue.length || frame ? requestAnimationFrame(wait) : r());
        wait();
      });
    },
  };
}

// ----- tasks -----

function tasksView(r) {
  const params = new URLSearchParams(r.params);
  const swarmSel = h("select", { "aria-label": "swarm", id: "task-swarm" }, h("option", { value: "", text: "all swarms" }),
    ...app.swarms.map((s) => h("option", { value: s.name, text: s.name })));
  const statusSel = h("select", { "aria-label": "status", id: "task-status" }, h("option", { value: "", text: "any status" }),
    ...TASK_STATUSES.map((s) => h("option", { value: s, text: s })));
  const typeIn = h("input", { type: "search", placeholder: "type", "aria-label": "task type", id: "task-type" });
  const sizeSel = h("select", { "aria-label": "page size" }, ...[25, 50, 100, 200].map((n) => h("option", { value: String(n), text: `${n} a page` })));
  swarmSel.value = params.get("swarm") ?? "";
  statusSel.value = params.get("status") ?? "";
  typeIn.value = params.get("type") ?? "";
  sizeSel.value = params.get("limit") ?? "50";
  const tbody = h("tbody");
  const prev = h("button", { type: "button", class: "secondary small", text: "← Newer" });
  const next = h("button", { type: "button", class: "secondary small", text: "Older →" });
  const pageInfo = h("span", { class: "muted" });
  const el = h("div", {},
    h("h1", { text: "Tasks" }),
    h("div", { class: "toolbar" }, h("label", {}, "Swarm", swarmSel), h("label", {}, "Status", statusSel), h("label", {}, "Type", typeIn), sizeSel),
    h("div", { class: "panel" },
      h("table", { id: "task-table" },
        h("thead", {}, h("tr", {}, ...["id", "type", "status", "priority", "attempts", "agent", "created", "updated", ""].map((t) => h("th", { text: t })))),
        tbody),
      h("div", { class: "pager" }, prev, pageInfo, next)));

  let cursors = [];
  let nextCursor = null;

  function query() {
    const q = new URLSearchParams();
    for (const [k, input] of [["swarm", swarmSel], ["status", statusSel], ["type", typeIn]]) {
      if (input.value.trim()) q.set(k, input.value.trim());
    }
    if (sizeSel.value !== "50") q.set("limit", sizeSel.value);
    return q;
  }

  function changed() {
    cursors = [];
    replaceQuery(query());
    load();
  }
  swarmSel.addEventListener("change", changed);
  statusSel.addEventListener("change", changed);
  sizeSel.addEventListener("change", changed);
  typeIn.addEventListener("change", changed);
  typeIn.addEventListener("search", changed);
  prev.addEventListener("click", () => {
    cursors.pop();
    load();
  });
  next.addEventListener("click", () => {
    if (!nextCursor) return;
    cursors.push(nextCursor);
    load();
  });

  async function load() {
    const q = query();
    q.set("limit", sizeSel.value);
    const cursor = cursors[cursors.length - 1];
    if (cursor) q.set("cursor", cursor);
    let page;
    try {
      page = await api(`/tasks?${q}`);
    } catch (e) {
      showError(e);
      return;
    }
    nextCursor = page.next_cursor;
    prev.disabled = cursors.length === 0;
    next.disabled = !nextCursor;
    setText(pageInfo, `page ${cursors.length + 1} · ${page.items.length} task(s)`);
    tbody.replaceChildren(...page.items.map(row));
    if (!page.items.length) tbody.append(h("tr", {}, h("td", { colspan: "9", class: "empty", text: "No task matches." })));
  }

  function row(t) {
    const actions = h("td");
    if (UNFINISHED.has(t.status)) {
      actions.append(h("button", { type: "button", class: "small danger", text: "Cancel", dataset: { action: "cancel" }, onclick: (e) => { e.stopPropagation(); cancelTask(t).then(load); } }));
    } else if (RETRYABLE.has(t.status)) {
      actions.append(h("button", { type: "button", class: "small", text: "Retry", dataset: { action: "retry" }, onclick: (e) => { e.stopPropagation(); retryTask(t).then(load); } }));
    }
    return h("tr", { class: "clickable", dataset: { task: t.id }, onclick: () => (location.hash = `#/task/${enc(t.id)}`) },
      h("td", { class: "mono", text: short(t.id) }),
      h("td", { text: t.type }),
      h("td", {}, badge(t.status)),
      h("td", { class: "num", text: t.priority }),
      h("td", { class: "num", text: `${t.attempts}/${t.max_attempts ?? "–"}` }),
      h("td", { text: agentName(t.agent_id) }),
      h("td", { text: fmtTime(t.created_at) }),
      h("td", { text: fmtTime(t.updated_at) }),
      actions);
  }

  const soon = throttle(() => {
    // Later pages stay as they were read; the first one follows the log.
    if (cursors.length === 0) load();
  }, 1500);
  const stop = every(10_000, () => cursors.length === 0 && load());
  load();
  return {
    el,
    onEvents(events) {
      if (events.some((e) => e.type.startsWith("task_"))) soon();
    },
    destroy() {
      stop();
      soon.cancel();
    },
  };
}

async function cancelTask(t) {
  const ok = await confirmAction(`Cancel task ${short(t.id)} (${t.type})? It will not run again unless retried.`, "Cancel task");
  if (!ok) return;
  await act(`Task ${short(t.id)} cancelled`, () => api(`/tasks/${enc(t.id)}/cancel`, { method: "POST", body: { reason: "cancelled from the dashboard" } }));
}

async function retryTask(t) {
  await act(`Task ${short(t.id)} queued again`, () => api(`/tasks/${enc(t.id)}/retry`, { method: "POST", body: {} }));
}

// ----- one task -----

function taskView(r) {
  const id = r.arg;
  const head = h("div");
  const body = h("div");
  const attempts = h("tbody");
  const log = h("div");
  const el = h("div", { id: "task-detail" },
    h("p", {}, h("a", { href: "#/tasks", text: "← tasks" })),
    head, body,
    h("h2", { text: "History" }),
    h("div", { class: "panel" }, h("table", {}, h("thead", {}, h("tr", {}, ...["seq", "at", "event", "agent", "detail"].map((t) => h("th", { text: t })))), attempts)),
    log);
  let task = null;
  let logAgent = null;

  async function load() {
    try {
      task = await api(`/tasks/${enc(id)}`);
    } catch (e) {
      showError(e);
      head.replaceChildren(h("h1", { text: `Task ${short(id)}` }), h("p", { class: "error-text", text: e.message }));
      return;
    }
    const t = task;
    const actions = h("div", { class: "controls" });
    if (UNFINISHED.has(t.status)) actions.append(h("button", { type: "button", class: "danger", text: "Cancel", dataset: { action: "cancel" }, onclick: () => cancelTask(t).then(load) }));
    if (RETRYABLE.has(t.status)) actions.append(h("button", { type: "button", text: "Retry", dataset: { action: "retry" }, onclick: () => retryTask(t).then(load) }));
    head.replaceChildren(h("h1", {}, `Task ${short(t.id)} `, badge(t.status)), actions);
    const rows = [
      ["id", t.id], ["swarm", swarmName(t.swarm_id)], ["type", t.type], ["priority", t.priority],
      ["attempts", `${t.attempts} of ${t.max_attempts ?? "–"}`], ["agent", t.agent_id ? agentName(t.agent_id) : "–"],
      ["required capabilities", (t.required_capabilities ?? []).join(", ") || "none"],
      ["depends on", (t.depends_on ?? []).map((d) => d.task_id ?? d).join(", ") || "none"],
      ["created", fmtTime(t.created_at)], ["updated", fmtTime(t.updated_at)],
      ["queued", fmtTime(t.queued_at)], ["started", fmtTime(t.started_at)], ["timeout at", fmtTime(t.timeout_at)],
      ["finished", fmtTime(t.completed_at)], ["deadline", fmtTime(t.deadline)],
      ["progress", t.progress ? `${t.progress.percent ?? "–"}% ${t.progress.message ?? ""}` : "–"],
      ["idempotency key", t.idempotency_key ?? "–"], ["reason", t.reason ?? "–"],
    ];
    const sections = [h("dl", { class: "fields panel" }, ...rows.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: String(v ?? "–") })]))];
    sections.push(h("h2", { text: "Payload" }), h("pre", { id: "task-payload", text: json(t.payload ?? null) }));
    if (t.result !== undefined) sections.push(h("h2", { text: "Result" }), h("pre", { id: "task-result", text: json(t.result) }));
    const error = t.error ?? t.last_error;
    if (error) sections.push(h("h2", { text: t.error ? "Error" : "Last error" }), h("pre", { id: "task-error", text: json(error) }));
    if (t.delegation) sections.push(h("h2", { text: "Delegation" }), h("pre", { text: json(t.delegation) }));
    body.replaceChildren(...sections);
    // The log section is left alone while the task stays with the same agent (a log shown
    // stays shown across live refreshes).
    if ((t.agent_id ?? null) !== logAgent) {
      logAgent = t.agent_id ?? null;
      log.replaceChildren(...(logAgent ? [h("h2", { text: "Agent log" }), h("button", { type: "button", class: "secondary small", text: `Show the last lines of ${agentName(logAgent)}'s log`, onclick: () => loadLog(logAgent) })] : []));
    }
    try {
      const events = await api(`/events?task=${enc(id)}&limit=1000`);
      await learnNames(events.items);
      attempts.replaceChildren(...events.items.map((e) => h("tr", {},
        h("td", { class: "num", text: e.seq }), h("td", { text: fmtTime(e.at) }), h("td", {}, badge(e.type.replace(/^task_/, ""), "")),
        h("td", { text: agentName(e.agent_id) }), h("td", { text: e.detail ?? "" }))));
    } catch (e) {
      showError(e);
    }
  }

  async function loadLog(agent) {
    let text;
    try {
      text = await api(`/agents/${enc(agent)}/logs?tail=200`, { text: true });
    } catch (e) {
      text = `no log: ${e.message}`;
    }
    log.replaceChildren(h("h2", { text: `Log of ${agentName(agent)} (last 200 lines, the agent's whole log, not only this task)` }), h("pre", { text: text || "(empty)" }));
  }

  const soon = throttle(load, 500);
  load();
  return {
    el,
    onEvents(events) {
      if (events.some((e) => e.task_id === id)) soon();
    },
    destroy() {
      soon.cancel();
    },
  };
}

// ----- charts -----

function chartsView(r) {
  const swarm = app.swarm;
  const periodSel = h("select", { id: "chart-period", "aria-label": "period" },
    ...Object.entries(PERIODS).map(([k, p]) => h("option", { value: k, text: p.label })));
  const scopeSel = h("select", { id: "chart-scope", "aria-label": "scope" },
    ...["swarm", "pool", "agent", "task_type"].map((s) => h("option", { value: s, text: s.replace("_", " ") })));
  const keyIn = h("input", { id: "chart-key", type: "text", placeholder: "pool, agent or task type", "aria-label": "key" });
  periodSel.value = PERIODS[r.params.get("period")] ? r.params.get("period") : "1m";
  scopeSel.value = r.params.get("scope") ?? "swarm";
  keyIn.value = r.params.get("key") ?? "";
  keyIn.disabled = scopeSel.value === "swarm";
  const status = h("p", { class: "muted", id: "chart-status", text: "loading…" });
  const box = h("div", { id: "charts", dataset: { state: "loading" } });
  const el = h("div", {},
    h("h1", { text: `Charts of ${swarm}` }),
    h("div", { class: "toolbar" }, h("label", {}, "Period", periodSel), h("label", {}, "Scope", scopeSel), keyIn,
      h("button", { type: "button", class: "secondary small", text: "Refresh", onclick: () => load() })),
    status, box);

  function changed() {
    keyIn.disabled = scopeSel.value === "swarm";
    const q = new URLSearchParams({ swarm, period: periodSel.value });
    if (scopeSel.value !== "swarm") q.set("scope", scopeSel.value);
    if (scopeSel.value !== "swarm" && keyIn.value.trim()) q.set("key", keyIn.value.trim());
    replaceQuery(q);
    load();
  }
  periodSel.addEventListener("change", changed);
  scopeSel.addEventListener("change", changed);
  keyIn.addEventListener("change", changed);

  let latest = 0;
  async function load() {
    // Only the newest read draws: an older answer arriving late (after a change of period,
    // or a timer's read) must not replace the chart of the selection on screen.
    const ticket = ++latest;
    const period = periodSel.value;
    const { from, to } = timeRange(period);
    const q = new URLSearchParams({ period, from: new Date(from).toISOString(), to: new Date(to).toISOString() });
    if (scopeSel.value !== "swarm") {
      if (!keyIn.value.trim()) {
        setText(status, `Name the ${scopeSel.value.replace("_", " ")} to chart.`);
        return;
      }
      q.set("scope", scopeSel.value);
      q.set("key", keyIn.value.trim());
    }
    let answer;
    try {
      answer = await api(`/swarms/${enc(swarm)}/metrics?${q}`);
      if (ticket !== latest) return;
    } catch (e) {
      if (ticket !== latest) return;
      if (e.status === 404) {
        box.dataset.state = "unavailable";
        setText(status, `Metrics unavailable: ${e.message}`);
        box.replaceChildren();
        return;
      }
      box.dataset.state = "error";
      showError(e);
      return;
    }
    const points = answer.points ?? [];
    box.dataset.state = points.length ? "filled" : "empty";
    const sum = totals(points);
    setText(status, points.length
      ? `${points.length} period(s) with data · ${sum.submitted} submitted, ${sum.completed} completed, ${sum.failed} failed, ${sum.retried} retried`
      : "No data in this window yet.");
    box.replaceChildren(metricCharts(points, { period, from, to }));
  }

  const stop = every(15_000, () => {
    if (!editing(el)) load();
  });
  load();
  return {
    el,
    destroy() {
      stop();
    },
  };
}

// ----- alerts -----

const LEVEL = { alert_warning: "warning", alert_critical: "critical", alert_recovery: "recovery" };

function alertsView(r) {
  const levelSel = h("select", { id: "alert-level", "aria-label": "level" }, h("option", { value: "", text: "every level" }),
    ...["critical", "warning", "recovery"].map((l) => h("option", { value: l, text: l })));
  levelSel.value = r.params.get("level") ?? "";
  const strip = h("div", { class: "panel" });
  const list = h("ol", { class: "alerts", id: "alert-list" });
  const el = h("div", {}, h("h1", { text: "Alerts" }), h("div", { class: "toolbar" }, h("label", {}, "Level", levelSel)), strip, h("div", { class: "panel" }, list));
  levelSel.addEventListener("change", () => {
    replaceQuery(new URLSearchParams(levelSel.value ? { level: levelSel.value } : {}));
    load();
  });

  async function load() {
    let page;
    try {
      page = await api(`/alerts?limit=200${levelSel.value ? `&level=${levelSel.value}` : ""}`);
    } catch (e) {
      showError(e);
      return;
    }
    await learnNames(page.items);
    const items = page.items.map((e) => ({ e, t: Date.parse(e.at), level: LEVEL[e.type] }));
    strip.replaceChildren(h("h2", { text: "Over time" }), timeline(items.map((i) => ({
      t: i.t, level: i.level, label: `${fmtTime(i.e.at)} ${i.level}: ${agentName(i.e.agent_id)} ${i.e.detail ?? ""}`,
    }))));
    list.replaceChildren(...items.slice().reverse().map(({ e, level }) => h("li", { dataset: { level } },
      h("span", { text: fmtTime(e.at) }), h("span", {}, badge(level)),
      h("span", { text: `${agentName(e.agent_id)} (${swarmName(e.swarm_id)})` }), h("span", { text: e.detail ?? "" }))));
    if (!items.length) list.append(h("li", { class: "empty", text: "No alerts: every agent has stayed healthy." }));
  }
  const soon = throttle(load, 1000);
  const stop = every(30_000, load);
  load();
  return {
    el,
    onEvents(events) {
      if (events.some((e) => LEVEL[e.type])) soon();
    },
    destroy() {
      stop();
      soon.cancel();
    },
  };
}

// ----- hosts -----

/** The machines running agents for this coordinator (`flotilla host`), with their room. */
function hostsView() {
  const body = h("tbody", { id: "host-rows" });
  const table = h("table", { id: "host-table" },
    h("thead", {}, h("tr", {}, ...["host", "status", "last poll", "CPU", "memory", "labels", "agents"].map((t) => h("th", { text: t })))),
    body);
  const el = h("div", {}, h("h1", { text: "Hosts" }),
    h("p", { class: "muted", text: "Machines that run the agents of pools placed on hosts: flotilla host --coordinator URL --token TOKEN." }),
    h("div", { class: "panel" }, table));

  async function load() {
    let hosts;
    try {
      hosts = await api("/hosts");
    } catch (e) {
      showError(e);
      return;
    }
    body.replaceChildren(...hosts.map((x) => h("tr", { dataset: { host: x.name } },
      h("td", { text: x.name }),
      h("td", {}, badge(x.status, { ready: "healthy", lost: "critical", left: "stopped" }[x.status] ?? x.status)),
      h("td", { text: fmtDuration(x.last_seen_ms_ago) + " ago" }),
      h("td", { text: `${x.allocated.cpu_cores.toFixed(2)} / ${x.capacity.cpu_cores.toFixed(2)} cores` }),
      h("td", { text: `${x.allocated.memory_mb} / ${x.capacity.memory_mb} MiB` }),
      h("td", { text: x.labels.join(", ") || "-" }),
      h("td", {}, ...(x.agents.length ? x.agents.map((a) => h("a", { href: `#/agents/${enc(a.id)}`, class: "host-agent", text: `${a.name} (${a.status})` })) : ["-"])))));
    if (!hosts.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "empty", text: "No host has registered. Pools run their agents on this coordinator's machine unless their template says placement = \"hosts\"." })));
  }
  const soon = throttle(load, 1000);
  const stop = every(2000, load);
  load();
  return {
    el,
    onEvents(events) {
      if (events.some((e) => e.type.startsWith("host_") || e.type === "agent_started")) soon();
    },
    destroy() {
      stop();
      soon.cancel();
    },
  };
}

// ----- topology -----

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Places a topology's nodes: rows by level for stars and hierarchies, a circle otherwise. */
function layout(view) {
  const nodes = view.nodes.slice().sort((a, b) => a.position - b.position);
  const pos = new Map();
  const n = nodes.length;
  if (view.topology === "ring" || view.topology === "mesh") {
    const radius = Math.max(140, n * 9);
    const size = radius * 2 + 160;
    nodes.forEach((node, i) => {
      const a = (2 * Math.PI * i) / Math.max(1, n) - Math.PI / 2;
      pos.set(node.id, { x: size / 2 + radius * Math.cos(a), y: size / 2 + radius * Math.sin(a) });
    });
    return { pos, width: size, height: size };
  }
  const levels = new Map();
  for (const node of nodes) {
    const level = node.level ?? (node.id === view.leader ? 0 : 1);
    if (!levels.has(level)) levels.set(level, []);
    levels.get(level).push(node);
  }
  const perRow = 24;
  const gapX = 70;
  const gapY = 80;
  const widest = Math.min(perRow, Math.max(1, ...[...levels.values()].map((l) => l.length)));
  const width = Math.max(600, widest * gapX + 80);
  let y = 50;
  for (const level of [...levels.keys()].sort((a, b) => a - b)) {
    const row = levels.get(level);
    for (let i = 0; i < row.length; i += perRow) {
      const chunk = row.slice(i, i + perRow);
      chunk.forEach((node, j) => pos.set(node.id, { x: width / 2 + (j - (chunk.length - 1) / 2) * gapX, y }));
      y += gapY;
    }
  }
  return { pos, width, height: y };
}

function topologyView() {
  const swarm = app.swarm;
  const info = h("div", { class: "stats" });
  const holder = h("div", { id: "topology" });
  const el = h("div", {}, h("h1", { text: `Topology of ${swarm}` }), info, holder,
    h("p", { class: "muted", text: "Blue: leader and coordinators; teal: supervisors; grey: workers; red: down; purple: paused; an orange ring: the ring's token." }));

  async function load() {
    let view;
    try {
      view = await api(`/swarms/${enc(swarm)}/topology`);
    } catch (e) {
      showError(e);
      return;
    }
    rememberAgents(view.nodes);
    const leader = view.nodes.find((x) => x.id === view.leader);
    info.replaceChildren(...[
      ["topology", view.topology], ["status", view.status], ["leader", leader?.name ?? "none"], ["members", view.nodes.length],
      ["token", view.token ? `${agentName(view.token.holder)} (${view.token.passes} passes)` : "–"],
    ].map(([k, v]) => h("div", { class: "stat" }, h("b", { text: String(v) }), h("span", { text: k }))));
    const { pos, width, height } = layout(view);
    const svg = s("svg", { class: "topology", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${view.topology} topology` });
    const n = view.nodes.length;
    let edges = view.edges ?? [];
    if (view.full) {
      edges = [];
      if (n <= 40) for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) edges.push([view.nodes[i].id, view.nodes[j].id]);
    }
    const lines = s("g", { class: "edges" });
    for (const [a, b] of edges) {
      const pa = pos.get(a);
      const pb = pos.get(b);
      if (pa && pb) lines.append(s("line", { x1: pa.x.toFixed(1), y1: pa.y.toFixed(1), x2: pb.x.toFixed(1), y2: pb.y.toFixed(1) }));
    }
    svg.append(lines);
    const r = n > 150 ? 5 : 10;
    for (const node of view.nodes) {
      const p = pos.get(node.id);
      const down = ["unhealthy", "failed", "stopped", "recovering"].includes(node.status);
      const cls = down ? "down" : node.status === "paused" ? "paused" : `role-${node.role}`;
      const g = s("g", { class: "node", "data-id": node.id, "data-name": node.name });
      const c = s("circle", { cx: p.x.toFixed(1), cy: p.y.toFixed(1), r, class: `${cls}${node.token ? " token" : ""}` });
      c.append(s("title", {}, `${node.name}: ${node.role}, ${node.status}${node.token ? ", holds the token" : ""}`));
      g.append(c);
      if (n <= 100) g.append(s("text", { x: p.x.toFixed(1), y: (p.y + r + 13).toFixed(1), "text-anchor": "middle" }, node.name));
      svg.append(g);
    }
    if (view.full && n > 40) svg.append(s("text", { x: 10, y: 20 }, `full mesh: all ${(n * (n - 1)) / 2} connections (not drawn)`));
    if (!n) svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no members yet"));
    holder.replaceChildren(svg);
  }
  const soon = throttle(load, 1000);
  const stop = every(10_000, load);
  load();
  const relevant = /^(agent_joined|agent_left|agent_failed|agent_recovered|agent_paused|agent_resumed|agent_stopped|agent_started|topology_changed|leader_election|token_passed|swarm_status_changed)$/;
  return {
    el,
    onEvents(events) {
      if (events.some((e) => relevant.test(e.type))) soon();
    },
    destroy() {
      stop();
      soon.cancel();
    },
  };
}

// ----- the live event list -----

function eventsView() {
  const filterIn = h("input", { type: "search", placeholder: "filter: type, agent, detail", "aria-label": "filter events", id: "event-filter" });
  const count = h("span", { class: "muted" });
  const tbody = h("tbody");
  const el = h("div", {},
    h("h1", { text: "Live events" }),
    h("div", { class: "toolbar" }, filterIn, count),
    h("div", { class: "panel" },
      h("table", { class: "events", id: "events-table" },
        h("thead", {}, h("tr", {}, ...["seq", "at", "type", "swarm", "agent", "task", "detail"].map((t) => h("th", { text: t })))),
        tbody)));

  const text = (e) => `${e.type} ${agentName(e.agent_id)} ${e.task_id ?? ""} ${e.detail ?? ""} ${swarmName(e.swarm_id)}`.toLowerCase();
  const shown = (e) => !filterIn.value.trim() || text(e).includes(filterIn.value.trim().toLowerCase());

  function row(e, fresh) {
    return h("tr", { class: fresh ? "fresh" : "", dataset: { seq: e.seq, type: e.type, task: e.task_id ?? "", agent: e.agent_id ?? "" } },
      h("td", { class: "num", text: e.seq }),
      h("td", { text: fmtTime(e.at) }),
      h("td", {}, badge(e.type, "")),
      h("td", { text: swarmName(e.swarm_id) }),
      h("td", { text: e.agent_id ? agentName(e.agent_id) : "" }),
      h("td", {}, e.task_id ? h("a", { href: `#/task/${enc(e.task_id)}`, class: "mono", text: short(e.task_id) }) : ""),
      h("td", { text: e.detail ?? "" }));
  }

  function renderAll() {
    tbody.replaceChildren(...app.events.filter(shown).map((e) => row(e, false)));
    setText(count, `${app.events.length} most recent`);
  }
  filterIn.addEventListener("input", renderAll);
  renderAll();
  return {
    el,
    onEvents(events) {
      // Only the new rows are added, newest first; the oldest go past the limit.
      const rows = events.filter(shown).reverse().map((e) => row(e, true));
      tbody.prepend(...rows);
      while (tbody.children.length > MAX_EVENTS) tbody.lastElementChild.remove();
      setText(count, `${app.events.length} most recent`);
    },
  };
}

// ----- start -----

function init() {
  $("banner-close").addEventListener("click", hideError);
  $("logout").addEventListener("click", () => logout());
  window.addEventListener("hashchange", route);
  $("swarm-select").addEventListener("change", (e) => {
    app.swarm = e.target.value;
    sessionStorage.setItem(SWARM_KEY, app.swarm);
    const r = parseHash();
    if (SWARM_SCOPED.has(r.name)) {
      r.params.set("swarm", app.swarm);
      location.hash = `#/${r.name}?${r.params}`;
    }
  });
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    const err = $("login-error");
    err.hidden = true;
    if (!token) return;
    $("login-submit").disabled = true;
    try {
      const info = await login(token);
      await started(info);
    } catch (ex) {
      err.hidden = false;
      setText(err, ex.status === 401
        ? "The coordinator does not know this token. Use the admin token from admin.token."
        : ex.status === 403
          ? "This is an agent's token; the dashboard needs the admin token."
          : ex.message);
    } finally {
      $("login-submit").disabled = false;
    }
  });
  // For tests and measurements: the current view's reload, when it has one.
  window.flotilla = { reloadView: () => app.current?.view.reloadNow?.() };
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    login(saved).then(started).catch((e) => logout(e.status === 401 ? "The saved token no longer works. Sign in again." : e.message));
  } else {
    logout();
  }
}

init();
