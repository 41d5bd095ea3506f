// Charts drawn as SVG by hand: line charts of a swarm's metrics over time and the alerts'
// timeline. Pure functions of their data: they return elements and touch nothing else, so a
// test page can render them from a fixed data set.
//
// Metrics follow GET /api/v1/swarms/{swarm}/metrics: `points` are periods (`start`, `end`)
// that had observations, so periods without any are gaps, and lines break across them.

const SVG = "http://www.w3.org/2000/svg";

/** The periods the metrics endpoint aggregates by, with the span of time shown for each. */
export const PERIODS = {
  "1m": { ms: 60_000, span: 60 * 60_000, label: "1 minute, last hour" },
  "5m": { ms: 5 * 60_000, span: 6 * 3_600_000, label: "5 minutes, last 6 hours" },
  "1h": { ms: 3_600_000, span: 48 * 3_600_000, label: "1 hour, last 2 days" },
  "1d": { ms: 86_400_000, span: 30 * 86_400_000, label: "1 day, last 30 days" },
};

/** The window to ask for: `span` back from `now`, to the end of the current period. */
export function timeRange(period, now = Date.now()) {
  const p = PERIODS[period] ?? PERIODS["1m"];
  const to = Math.ceil(now / p.ms) * p.ms;
  return { from: to - p.span, to };
}

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function html(name, cls, text) {
  const node = document.createElement(name);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Round tick values from at most `min` to at least `max`, about `count` steps. */
export function niceTicks(min, max, count = 4) {
  if (!(max > min)) max = min + 1;
  const raw = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const lo = Math.floor(min / step) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  const ticks = [];
  for (let i = 0; lo + i * step <= hi + step * 1e-9; i++) {
    ticks.push(Number((lo + i * step).toFixed(10)));
  }
  return ticks;
}

/** A number for an axis or a tooltip: short, with its unit. */
export function formatValue(v, unit = "") {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (unit === "ms") {
    if (v >= 60_000) return `${(v / 60_000).toFixed(1)} min`;
    if (v >= 1000) return `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)} s`;
    return `${Math.round(v)} ms`;
  }
  if (unit === "%") return `${Math.round(v)}%`;
  const abs = Math.abs(v);
  const s = abs >= 1e6 ? `${(v / 1e6).toFixed(1)}M` : abs >= 1e4 ? `${(v / 1e3).toFixed(1)}k`
    : abs >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(abs >= 10 ? 1 : 2);
  return unit ? `${s} ${unit}` : s;
}

/** A time on the axis: clock time for short periods, the date for long ones. */
export function formatTime(t, periodMs) {
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, "0");
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (periodMs >= 86_400_000) return `${d.getMonth() + 1}/${d.getDate()}`;
  if (periodMs >= 3_600_000) return `${d.getMonth() + 1}/${d.getDate()} ${hm}`;
  return hm;
}

/**
 * The values of one figure over the points, in time order: `{t, v}` with `v` null where a
 * point lacks it. `pick(point)` returns a number or null.
 */
export function column(points, pick) {
  return points
    .map((p) => ({ t: Date.parse(p.start), v: finiteOrNull(pick(p)) }))
    .filter((p) => Number.isFinite(p.t))
    .sort((a, b) => a.t - b.t);
}

function finiteOrNull(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/**
 * Splits a series into the runs a line joins: a missing value or a jump of more than one
 * period between points (a period with no observations) starts a new run.
 */
export function runs(values, periodMs) {
  const out = [];
  let run = [];
  let prev = null;
  for (const p of values) {
    const gap = prev !== null && p.t - prev.t > periodMs * 1.5;
    if (p.v === null || gap) {
      if (run.length) out.push(run);
      run = [];
    }
    if (p.v !== null) run.push(p);
    prev = p;
  }
  if (run.length) out.push(run);
  return out;
}

const W = 560;
const H = 220;
const M = { left: 52, right: 12, top: 12, bottom: 26 };

/**
 * A line chart: `series` is `[{name, cls, values: [{t, v}]}]` (from {@link column}); `from`
 * and `to` bound the time axis (ms since the epoch); `periodMs` says where lines break.
 * Returns a `<figure class="chart">` whose dataset says how many points it drew.
 */
export function lineChart({ key, title, unit = "", series, from, to, periodMs, yMax }) {
  const figure = html("figure", "chart");
  figure.dataset.chart = key ?? title;
  const caption = html("figcaption");
  caption.append(html("span", "", title));
  const legend = html("span", "legend");
  for (const s of series) {
    const item = html("span", "");
    item.append(html("i", s.cls), s.name);
    legend.append(item);
  }
  caption.append(legend);
  figure.append(caption);

  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "aria-label": title });
  const all = series.flatMap((s) => s.values.filter((p) => p.v !== null));
  const tMin = Math.min(from, ...all.map((p) => p.t));
  const tMax = Math.max(to, ...all.map((p) => p.t));
  const vMax = Math.max(yMax ?? 0, ...all.map((p) => p.v), 0);
  const ticks = niceTicks(0, yMax ?? (vMax > 0 ? vMax : 1), 4);
  const top = yMax ?? ticks[ticks.length - 1];
  const x = (t) => M.left + ((t - tMin) / Math.max(1, tMax - tMin)) * (W - M.left - M.right);
  const y = (v) => H - M.bottom - (v / (top || 1)) * (H - M.top - M.bottom);

  // Without data, no scale to show: the baseline and a note.
  for (const v of all.length || yMax ? ticks : []) {
    if (v > top + 1e-9) continue;
    svg.append(el("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
    svg.append(el("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, formatValue(v, unit)));
  }
  svg.append(el("line", { class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }));
  const xTicks = 5;
  for (let i = 0; i <= xTicks; i++) {
    const t = tMin + ((tMax - tMin) * i) / xTicks;
    const anchor = i === 0 ? "start" : i === xTicks ? "end" : "middle";
    svg.append(el("text", { x: x(t), y: H - 8, "text-anchor": anchor }, formatTime(t, periodMs)));
  }

  let drawn = 0;
  for (const s of series) {
    const parts = runs(s.values, periodMs);
    const d = parts
      .map((run) => run.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(""))
      .join("");
    const count = parts.reduce((n, r) => n + r.length, 0);
    drawn += count;
    const path = el("path", { class: `series ${s.cls}`, d: d || "M0,0" });
    path.dataset.series = s.name;
    path.dataset.points = String(count);
    path.dataset.runs = String(parts.length);
    svg.append(path);
    for (const run of parts) {
      for (const p of run) {
        const dot = el("circle", { class: `dot ${s.cls}`, cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: run.length === 1 ? 3 : 2 });
        dot.append(el("title", {}, `${formatTime(p.t, Math.min(periodMs, 60_000))} — ${s.name}: ${formatValue(p.v, unit)}`));
        svg.append(dot);
      }
    }
  }
  if (drawn === 0) {
    svg.append(el("text", { class: "nodata", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data in this window"));
  }
  figure.dataset.points = String(drawn);
  figure.append(svg);
  return figure;
}

/**
 * The metrics view's four charts from an answer of the metrics endpoint: throughput, latency
 * (p50/p95/p99), queue depth and utilisation. Returns `<div class="charts">`.
 */
export function metricCharts(points, { period, from, to }) {
  const periodMs = (PERIODS[period] ?? PERIODS["1m"]).ms;
  const perMin = periodMs / 60_000;
  const common = { from, to, periodMs };
  const box = html("div", "charts");
  box.append(
    lineChart({
      ...common,
      key: "throughput",
      title: "Throughput (tasks per minute)",
      series: [
        { name: "completed", cls: "c1", values: column(points, (p) => p.throughput_per_min) },
        { name: "submitted", cls: "c4", values: column(points, (p) => (p.submitted ?? 0) / perMin) },
        { name: "failed", cls: "c3", values: column(points, (p) => ((p.failed ?? 0) + (p.dead ?? 0)) / perMin) },
      ],
    }),
    lineChart({
      ...common,
      key: "latency",
      title: "Latency, submitted to finished",
      unit: "ms",
      series: [
        { name: "p50", cls: "c1", values: column(points, (p) => p.latency_ms?.p50) },
        { name: "p95", cls: "c2", values: column(points, (p) => p.latency_ms?.p95) },
        { name: "p99", cls: "c3", values: column(points, (p) => p.latency_ms?.p99) },
      ],
    }),
    lineChart({
      ...common,
      key: "queue",
      title: "Queue depth",
      series: [
        { name: "average", cls: "c1", values: column(points, (p) => p.queue_depth?.avg) },
        { name: "max", cls: "c2", values: column(points, (p) => p.queue_depth?.max) },
      ],
    }),
    lineChart({
      ...common,
      key: "utilization",
      title: "Utilisation (held task slots)",
      unit: "%",
      yMax: 100,
      series: [
        { name: "utilisation", cls: "c4", values: column(points, (p) => (p.utilization == null ? null : p.utilization * 100)) },
      ],
    }),
  );
  return box;
}

/** Totals over the window's points: submitted, completed, failed (with dead), retried. */
export function totals(points) {
  const sum = (f) => points.reduce((n, p) => n + (p[f] ?? 0), 0);
  return {
    submitted: sum("submitted"),
    completed: sum("completed"),
    failed: sum("failed") + sum("dead"),
    retried: sum("retried"),
  };
}

/**
 * The alerts' timeline: one lane per level (warning, critical, recovery), a dot per alert at
 * its time; `items` are `{t, level, label}`.
 */
export function timeline(items, { from, to } = {}) {
  const width = 900;
  const lanes = ["critical", "warning", "recovery"];
  const height = 24 + lanes.length * 22;
  const ts = items.map((i) => i.t);
  const t0 = from ?? Math.min(...ts, Date.now() - 3_600_000);
  const t1 = to ?? Math.max(...ts, Date.now());
  const left = 80;
  const x = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * (width - left - 10);
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "timeline", role: "img", "aria-label": "alerts over time" });
  lanes.forEach((lane, i) => {
    const ly = 12 + i * 22;
    svg.append(el("line", { class: "lane", x1: left, x2: width - 10, y1: ly, y2: ly }));
    svg.append(el("text", { x: 4, y: ly + 4 }, lane));
  });
  const span = t1 - t0;
  const unit = span > 3 * 86_400_000 ? 86_400_000 : span > 6 * 3_600_000 ? 3_600_000 : 60_000;
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (span * i) / 4;
    svg.append(el("text", { x: x(t), y: height - 4, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, formatTime(t, unit)));
  }
  for (const item of items) {
    const lane = lanes.indexOf(item.level);
    if (lane < 0) continue;
    const dot = el("circle", { class: item.level, cx: x(item.t).toFixed(1), cy: 12 + lane * 22, r: 5 });
    dot.append(el("title", {}, item.label));
    svg.append(dot);
  }
  return svg;
}
