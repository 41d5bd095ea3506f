// End-to-end test of the dashboard in headless Chromium, against a real coordinator.
//
// Run by crates/flotilla-cli/tests/dashboard.rs, which starts `flotilla serve` and agents and
// passes, in the environment:
//   FLOTILLA_URL, FLOTILLA_TOKEN   the coordinator and its admin token
//   DASHBOARD_ARTEFACTS            where screenshots go
//   DASHBOARD_MODE                 `full` (default): every view and control;
//                                  `grid`: only the agent grid's timings with many agents
//   DASHBOARD_SWARM, DASHBOARD_POOL, DASHBOARD_AGENTS   the swarm, its managed pool, how many agents
//   DASHBOARD_CSP                  the coordinator's Content-Security-Policy, applied to the
//                                  charts' fixture page too
//   DASHBOARD_PROBE_AGENT, DASHBOARD_PROBE_TOKEN   (grid mode) an agent whose heartbeat the
//                                  test changes, to time a live update among many tiles
// It prints `PASS`, `SKIP` (with why) and `MEASURE` lines, then `RESULT {json}`, and exits
// non-zero on the first failure (with a screenshot of it).

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const env = process.env;
const here = path.dirname(fileURLToPath(import.meta.url));
const webDir = path.resolve(here, "..");
const base = need("FLOTILLA_URL").replace(/\/$/, "");
const token = need("FLOTILLA_TOKEN");
const artefacts = env.DASHBOARD_ARTEFACTS ?? path.join(here, "artefacts");
const mode = env.DASHBOARD_MODE ?? "full";
const swarm = env.DASHBOARD_SWARM ?? "default";
const pool = env.DASHBOARD_POOL ?? "dash";
const agents = Number(env.DASHBOARD_AGENTS ?? "3");
fs.mkdirSync(artefacts, { recursive: true });
// A failure's screenshot from an earlier run of this mode would mislead: they go.
for (const f of fs.readdirSync(artefacts)) {
  if (f.startsWith(`failed-${mode}-`)) fs.rmSync(path.join(artefacts, f));
}

function need(name) {
  const v = env[name];
  if (!v) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return v;
}

const result = { mode, passed: [], skipped: [], measures: {}, screenshots: [] };

function check(cond, message) {
  if (!cond) throw new Error(message);
}

async function api(method, p, body, bearer = token) {
  const res = await fetch(`${base}/api/v1${p}`, {
    method,
    headers: { Authorization: `Bearer ${bearer}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function until(what, fn, within = 10_000) {
  const started = Date.now();
  let last;
  while (Date.now() - started < within) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`waited ${within} ms for ${what}`);
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
const page = await context.newPage();

// Anything the page logs as an error fails the test — a Content-Security-Policy violation
// included — except the failed requests the test causes on purpose (a wrong token, an invalid
// scale, the metrics endpoint where it does not exist yet).
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => {
  if (m.type() !== "error") return;
  if (/Failed to load resource: the server responded with a status of (400|401|404)/.test(m.text())) return;
  problems.push(`console error: ${m.text()}`);
});

async function shot(name, fullPage = true) {
  const file = path.join(artefacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage });
  result.screenshots.push(file);
}

async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
  } catch (e) {
    await page.screenshot({ path: path.join(artefacts, `failed-${mode}-${name}.png`), fullPage: true }).catch(() => {});
    console.log(`FAIL ${name}: ${e.message}`);
    throw e;
  }
  check(!problems.length, `the page reported errors during ${name}:\n${problems.join("\n")}`);
  console.log(`PASS ${name} (${Date.now() - started} ms)`);
  result.passed.push(name);
}

function skip(name, why) {
  console.log(`SKIP ${name}: ${why}`);
  result.skipped.push({ name, why });
}

function measure(name, value) {
  console.log(`MEASURE ${name} ${value}`);
  result.measures[name] = value;
}

async function signIn() {
  await page.goto(`${base}/`);
  await page.waitForSelector("#login:not([hidden])");
  await page.fill("#token", token);
  await page.click("#login-submit");
  await page.waitForSelector("#nav:not([hidden])");
}

/** Goes to a route of the already loaded page (no reload). */
async function show(hash) {
  await page.evaluate((h) => {
    location.hash = h;
  }, hash);
}

async function full() {
  await step("login", async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector("#login:not([hidden])");
    await shot("login");
    await page.fill("#token", "flt_not-a-real-token");
    await page.click("#login-submit");
    await page.waitForSelector("#login-error:not([hidden])");
    check((await page.textContent("#login-error")).includes("does not know"), "a wrong token is refused in words");
    await page.fill("#token", token);
    await page.click("#login-submit");
    await page.waitForSelector("#nav:not([hidden])");
    check(await page.evaluate(() => sessionStorage.getItem("flotilla.token")) === token, "the token is kept in sessionStorage");
    // The live socket opened: the subprotocol carried the token, and the policy let it connect.
    await page.waitForSelector("#live.on", { timeout: 10_000 });
    await page.waitForSelector(`#swarm-cards section[data-swarm="${swarm}"] tr[data-pool="${pool}"]`);
    await shot("swarms");
  });

  const scaleInput = `#swarm-cards section[data-swarm="${swarm}"] tr[data-pool="${pool}"] input`;
  const scaleButton = `#swarm-cards section[data-swarm="${swarm}"] tr[data-pool="${pool}"] button`;

  await step("typing survives refreshes", async () => {
    let reads = 0;
    const count = (req) => {
      if (req.url().includes("/api/v1/swarms")) reads += 1;
    };
    page.on("request", count);
    await page.click(scaleInput);
    await page.keyboard.type("4");
    // The overview reads the swarms every 3 s: two refreshes happen while the user types.
    await page.waitForTimeout(6500);
    await page.keyboard.type("2");
    page.off("request", count);
    check(reads >= 2, `the overview refreshed while the user typed (${reads} reads)`);
    check(await page.inputValue(scaleInput) === "42", `the scale box kept what was typed: ${await page.inputValue(scaleInput)}`);
    check(await page.evaluate((sel) => document.activeElement === document.querySelector(sel), scaleInput), "the scale box kept the focus");
  });

  await step("invalid scale shows the error banner", async () => {
    const before = (await api("GET", `/swarms/${swarm}`)).body.pools.find((p) => p.name === pool).size.desired;
    await page.fill(scaleInput, "99");
    await page.click(scaleButton);
    await page.waitForSelector("#banner:not([hidden])");
    const text = await page.textContent("#banner-text");
    check(text.includes("out of range") && text.includes("400"), `the banner says why: ${text}`);
    await shot("scale-error");
    const after = (await api("GET", `/swarms/${swarm}`)).body.pools.find((p) => p.name === pool).size.desired;
    check(after === before, "the pool was not resized");
    await page.click("#banner-close");
    check(await page.isHidden("#banner"), "the banner can be dismissed");
  });

  await step("scaling down asks first", async () => {
    const desired = (await api("GET", `/swarms/${swarm}`)).body.pools.find((p) => p.name === pool).size.desired;
    await page.fill(scaleInput, String(desired - 1));
    await page.click(scaleButton);
    await page.waitForSelector("#confirm[open]");
    check((await page.textContent("#confirm-text")).includes(`Scale pool ${pool} down`), "the dialog says what will happen");
    await shot("confirm-scale-down");
    await page.click("#confirm-cancel");
    await page.waitForTimeout(300);
    const after = (await api("GET", `/swarms/${swarm}`)).body.pools.find((p) => p.name === pool).size.desired;
    check(after === desired, "cancelled: the pool kept its size");
    await page.fill(scaleInput, "");
  });

  let paused;
  await step("the grid shows the agents and pauses one", async () => {
    await show(`#/agents?swarm=${swarm}`);
    await page.waitForSelector('#agent-grid[data-ready="1"]');
    await until(`${agents} tiles`, async () => (await page.$$("#agent-grid .tile")).length >= agents);
    const listed = (await api("GET", `/swarms/${swarm}/agents?type=${pool}`)).body.items;
    for (const a of listed) {
      await page.waitForSelector(`#agent-grid .tile[data-id="${a.id}"]`);
    }
    await shot("agents");
    const target = listed.find((a) => a.status === "idle") ?? listed[0];
    paused = target;
    await page.click(`#agent-grid .tile[data-id="${target.id}"]`);
    await page.waitForSelector(`#agent-panel button[data-op="pause"]:not([disabled])`);
    await page.click(`#agent-panel button[data-op="pause"]`);
    await until("the agent to be paused (API)", async () => (await api("GET", `/agents/${target.id}`)).body.status === "paused");
    await page.waitForSelector(`#agent-grid .tile[data-id="${target.id}"][data-status="paused"]`);
    await shot("agent-paused");
    console.log(`PAUSED ${target.id}`);
    result.paused = target.id;
  });

  let liveTask;
  await step("a submitted task's event appears live", async () => {
    await show("#/events");
    await page.waitForSelector("#events-table");
    await page.evaluate(() => {
      window.__sameDocument = true;
    });
    const t = await api("POST", `/swarms/${swarm}/tasks`, { type: "dashboard-live", payload: { hello: "live" } });
    check(t.status === 201, `submitted: ${JSON.stringify(t.body)}`);
    liveTask = t.body;
    const started = Date.now();
    await page.waitForSelector(`#events-table tr[data-task="${liveTask.id}"][data-type="task_submitted"]`, { timeout: 10_000 });
    measure("live_event_ms", Date.now() - started);
    check(await page.evaluate(() => window.__sameDocument === true), "the page was not reloaded");
    // One of the running agents takes it and completes it (they echo the payload).
    await page.waitForSelector(`#events-table tr[data-task="${liveTask.id}"][data-type="task_completed"]`, { timeout: 20_000 });
    await shot("events");
  });

  await step("tasks: filter, detail, cancel and retry", async () => {
    await show(`#/tasks?swarm=${swarm}`);
    await page.waitForSelector(`#task-table tr[data-task="${liveTask.id}"]`);
    await page.fill("#task-type", "dashboard-live");
    await page.press("#task-type", "Enter");
    await until("the type filter", async () => {
      const rows = await page.$$eval("#task-table tbody tr[data-task]", (trs) => trs.map((tr) => tr.children[1].textContent));
      return rows.length > 0 && rows.every((t) => t === "dashboard-live");
    });
    check(page.url().includes("type=dashboard-live"), "the filter is in the address");
    await shot("tasks");
    await page.click(`#task-table tr[data-task="${liveTask.id}"]`);
    await page.waitForSelector("#task-payload");
    check((await page.textContent("#task-payload")).includes('"hello": "live"'), "the payload is shown");
    await page.waitForSelector("#task-result");
    check((await page.textContent("#task-result")).includes("live"), "the result is shown");
    await shot("task");

    // A task nobody can run stays queued; cancel it (after a confirmation), then retry it.
    const stuck = (await api("POST", `/swarms/${swarm}/tasks`, { type: "dashboard-stuck", required_capabilities: ["nobody-has-this"] })).body;
    await show(`#/task/${stuck.id}`);
    await page.waitForSelector('#task-detail button[data-action="cancel"]');
    await page.click('#task-detail button[data-action="cancel"]');
    await page.waitForSelector("#confirm[open]");
    await page.click("#confirm-ok");
    await until("the task to be cancelled (API)", async () => (await api("GET", `/tasks/${stuck.id}`)).body.status === "cancelled");
    await page.waitForSelector('#task-detail button[data-action="retry"]');
    await page.click('#task-detail button[data-action="retry"]');
    await until("the task to be queued again (API)", async () => (await api("GET", `/tasks/${stuck.id}`)).body.status === "queued");
    await api("POST", `/tasks/${stuck.id}/cancel`, {});
  });

  await step("charts", async () => {
    await show(`#/charts?swarm=${swarm}`);
    await page.waitForSelector('#charts:not([data-state="loading"])', { state: "attached", timeout: 15_000 });
    const state = await page.getAttribute("#charts", "data-state");
    await shot("charts");
    check(state === "filled", `the charts have data (state ${state}: ${await page.textContent("#chart-status")})`);
    const drawn = await page.getAttribute('#charts figure[data-chart="throughput"]', "data-points");
    check(Number(drawn) > 0, `the throughput chart drew points (${drawn})`);
    result.passed.push("charts fill");
  });

  await step("an alert appears live", async () => {
    await show("#/alerts");
    await page.waitForSelector("#alert-list li");
    await page.waitForSelector("svg.timeline");
    // A connected agent that says it is degraded raises a warning.
    const reg = await api("POST", `/swarms/${swarm}/agents`, { name: "dash-reporter", type: "reporter" });
    check(reg.status === 201, `registered: ${JSON.stringify(reg.body)}`);
    const beat = await api("POST", `/agents/${reg.body.agent_id}/heartbeat`, { status: "degraded" }, reg.body.token);
    check(beat.status === 200, `heartbeat: ${JSON.stringify(beat.body)}`);
    await page.waitForSelector('#alert-list li[data-level="warning"]', { timeout: 10_000 });
    check((await page.textContent('#alert-list li[data-level="warning"]')).includes("dash-reporter"), "the alert names the agent");
    await page.waitForSelector("svg.timeline circle.warning");
    await shot("alerts");
    await api("DELETE", `/agents/${reg.body.agent_id}`);
  });

  await step("a host appears", async () => {
    const reg = await api("POST", "/hosts", { name: "dash-host", capacity: { cpu_cores: 2, memory_mb: 2048, disk_mb: 0 }, labels: ["linux"] });
    check(reg.status === 201, `registered a host: ${JSON.stringify(reg.body)}`);
    await show("#/hosts");
    await page.waitForSelector('#host-rows tr[data-host="dash-host"]', { timeout: 10_000 });
    const row = await page.textContent('#host-rows tr[data-host="dash-host"]');
    check(row.includes("ready") && row.includes("2.00 cores") && row.includes("linux"), `the host's row: ${row}`);
    await shot("hosts");
  });

  await step("topology", async () => {
    await show(`#/topology?swarm=${swarm}`);
    await until("the topology's nodes", async () => (await page.$$("#topology svg g.node")).length >= agents);
    await shot("topology");
  });

  await step("charts.js draws the metrics contract", chartsFixture);
}

/** Renders charts.js from a fixed answer of the metrics endpoint, on a page served with the
 * coordinator's policy, and checks what was drawn. */
async function chartsFixture() {
  const policy = env.DASHBOARD_CSP ?? "default-src 'none'; script-src 'self'; style-src 'self'";
  const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml" };
  const server = http.createServer((req, res) => {
    const p = path.normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    const file = path.join(webDir, p);
    if (!file.startsWith(webDir) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": types[path.extname(file)] ?? "application/octet-stream", "Content-Security-Policy": policy });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  try {
    const fixture = await context.newPage();
    const errors = [];
    fixture.on("pageerror", (e) => errors.push(e.message));
    fixture.on("console", (m) => m.type() === "error" && errors.push(m.text()));
    fixture.on("response", (r) => r.status() >= 400 && errors.push(`${r.status()} for ${r.url()}`));
    await fixture.goto(`http://127.0.0.1:${server.address().port}/tests/charts.html`);
    await fixture.waitForSelector('body[data-ready="1"]', { timeout: 10_000 });
    check(!errors.length, `the fixture page reported errors: ${errors.join("; ")}`);
    const drawn = await fixture.$$eval("#filled path.series", (ps) => ps.map((p) => ({
      chart: p.closest("figure").dataset.chart, series: p.dataset.series, points: Number(p.dataset.points), runs: Number(p.dataset.runs),
    })));
    const get = (chart, series) => drawn.find((d) => d.chart === chart && d.series === series);
    const points = Number(await fixture.getAttribute("body", "data-points"));
    check(points === 25, `the fixture has 25 periods (${points})`);
    for (const [chart, series] of [["throughput", "completed"], ["throughput", "submitted"], ["queue", "average"], ["queue", "max"], ["utilization", "utilisation"]]) {
      const d = get(chart, series);
      check(d && d.points === 25 && d.runs === 2, `${chart}/${series}: 25 points in 2 runs around the gap, got ${JSON.stringify(d)}`);
    }
    for (const series of ["p50", "p95", "p99"]) {
      const d = get("latency", series);
      check(d && d.points === 24 && d.runs === 3, `latency/${series}: 24 points in 3 runs (a gap and a period without latency), got ${JSON.stringify(d)}`);
    }
    const figures = await fixture.$$eval("#filled figure.chart", (fs) => fs.map((f) => f.dataset.chart));
    check(figures.join() === "throughput,latency,queue,utilization", `four charts: ${figures}`);
    // Points carry their value as a tooltip; the y axis is scaled to the data.
    const title = await fixture.textContent('#filled figure[data-chart="latency"] circle title');
    check(/p50: \d+ ms/.test(title), `a latency point's tooltip: ${title}`);
    const empty = await fixture.$$eval("#empty figure.chart", (fs) => fs.map((f) => f.dataset.points));
    check(empty.length === 4 && empty.every((n) => n === "0"), `an empty window draws no points: ${empty}`);
    check((await fixture.textContent("#empty")).includes("no data in this window"), "an empty chart says so");
    await fixture.screenshot({ path: path.join(artefacts, "charts-fixture.png"), fullPage: true });
    result.screenshots.push(path.join(artefacts, "charts-fixture.png"));
    await fixture.close();
  } finally {
    server.close();
  }
}

/** The agent grid with many agents: first render, a full reload, and a live update. */
async function grid() {
  await step("grid with many agents", async () => {
    await signIn();
    const longTasks = [];
    // Main-thread tasks over 50 ms while the grid renders and updates (what makes a page feel
    // stuck); the browser must support the measurement, or the figure would be a false 0.
    const observed = await page.evaluate(() => {
      window.__longTasks = [];
      if (!PerformanceObserver.supportedEntryTypes.includes("longtask")) return false;
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) window.__longTasks.push(e.duration);
      }).observe({ type: "longtask" });
      return true;
    });
    check(observed, "this Chromium reports long tasks");
    const started = Date.now();
    await show(`#/agents?swarm=${swarm}`);
    await page.waitForSelector('#agent-grid[data-ready="1"]', { timeout: 60_000 });
    await until(`${agents} tiles`, async () => Number(await page.getAttribute("#agent-grid", "data-count")) >= agents, 60_000);
    measure("grid_first_render_ms", Date.now() - started);
    measure("grid_first_render_in_page_ms", Number(await page.getAttribute("#agent-grid", "data-render-ms")));
    const tiles = (await page.$$("#agent-grid .tile")).length;
    check(tiles === agents, `one tile per agent: ${tiles} of ${agents}`);
    // The window only: tiles out of view are not painted (`content-visibility: auto`).
    await shot("agents-1000", false);

    // A full reload of the list with nothing changed: read, diff, nothing repainted.
    const reloads = [];
    for (let i = 0; i < 3; i++) {
      reloads.push(await page.evaluate(async () => {
        const t = performance.now();
        await window.flotilla.reloadView();
        return Math.round(performance.now() - t);
      }));
    }
    measure("grid_reload_ms", reloads);

    // A live update: the probe agent says it is degraded; its tile turns amber.
    if (env.DASHBOARD_PROBE_AGENT) {
      const id = env.DASHBOARD_PROBE_AGENT;
      const t0 = Date.now();
      const beat = await api("POST", `/agents/${id}/heartbeat`, { status: "degraded" }, env.DASHBOARD_PROBE_TOKEN);
      check(beat.status === 200, `heartbeat: ${JSON.stringify(beat.body)}`);
      await page.waitForSelector(`#agent-grid .tile.h-degraded[data-id="${id}"]`, { timeout: 15_000 });
      measure("grid_live_update_ms", Date.now() - t0);
    }
    // The filter box over 1,000 tiles.
    const f0 = Date.now();
    await page.fill("#agent-filter", "zzz-no-such-agent");
    await until("every tile hidden", () => page.$$eval("#agent-grid .tile", (ts) => ts.every((t) => t.hidden)));
    measure("grid_filter_ms", Date.now() - f0);
    await page.fill("#agent-filter", "");
    const lt = await page.evaluate(() => window.__longTasks);
    longTasks.push(...lt);
    measure("grid_long_tasks", longTasks.length);
    measure("grid_longest_task_ms", Math.round(Math.max(0, ...longTasks)));
  });
}

let failed = false;
try {
  if (mode === "grid") await grid();
  else await full();
} catch (e) {
  failed = true;
  console.error(e.stack ?? String(e));
} finally {
  await browser.close();
}
console.log(`RESULT ${JSON.stringify(result)}`);
process.exit(failed ? 1 : 0);
