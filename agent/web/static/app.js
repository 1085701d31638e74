// gpulse live page: polls /api/v1/overview and draws one card per GPU with plain SVG.
// No libraries and nothing fetched from elsewhere: this file, style.css and index.html are all.
"use strict";

const POLL_MS = 2000;
const FETCH_TIMEOUT_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";
const W = 200, H = 54;
const PROBLEMS = new Set(["unavailable", "starved_host", "starved_io", "starved_other", "throttled_power",
  "throttled_thermal"]);
const TOKEN_KEY = "gpulse.profilingToken";

let labels = {};
let states = [];
let timer = null;
let minutes = initialMinutes();

function initialMinutes() {
  const v = Number(new URLSearchParams(location.search).get("minutes"));
  return v > 0 && v <= 60 ? v : 5;
}

// --- small DOM helpers (text always goes in as text, never as HTML) ---------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

const present = (v) => v !== null && v !== undefined;
function pct(x) { return present(x) ? `${Math.round(x * 100)} %` : "–"; }
function gib(b) { return present(b) ? `${(b / 2 ** 30).toFixed(1)} GiB` : "–"; }
function num(x, unit) { return present(x) ? `${Math.round(x)}${unit}` : "–"; }
function last(a) { for (let i = (a || []).length - 1; i >= 0; i--) if (present(a[i])) return a[i]; return null; }
// The newest point: null when the newest sample has no value (a lost GPU shows "–", not stale figures).
function now(a) { return a && a.length ? a[a.length - 1] : null; }
function maxOf(a) { const v = (a || []).filter(present); return v.length ? Math.max(...v) : null; }
function color(state) { return state ? `var(--${state})` : "var(--nodata)"; }
function label(state) { return labels[state] || state || "No data yet"; }

function span(seconds) {
  if (!(seconds > 0)) return "";
  if (seconds >= 90) return `${+(seconds / 60).toFixed(1)} min`;
  return `${Math.round(seconds)} s`;
}

// --- charts ---------------------------------------------------------------------------------

// A small line chart. lines: [{values, cls, dash}]; max: the top of the y axis;
// marks: per point "thermal" | "power" | null, shaded behind the lines.
function chart(times, lines, max, marks, description) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
    "aria-label": description });
  const n = times.length;
  if (n < 2 || !(max > 0)) return root;
  const t0 = times[0], width = (times[n - 1] - t0) || 1;
  const x = (t) => ((t - t0) / width) * W;
  const y = (v) => H - 2 - (Math.max(0, Math.min(v, max)) / max) * (H - 4);
  if (marks) {
    for (let i = 0; i < n; i++) {
      if (!marks[i]) continue;
      const a = x(times[Math.max(0, i - 1)]), b = x(times[i]);
      root.append(svg("rect", { x: a, y: 0, width: Math.max(1, b - a), height: H, class: `mark-${marks[i]}` }));
    }
  }
  for (const line of lines) {
    let d = "", pen = false;
    for (let i = 0; i < n; i++) {
      const v = line.values[i];
      if (!present(v)) { pen = false; continue; }  // a gap, never a zero
      d += `${pen ? "L" : "M"}${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    if (d) root.append(svg("path", { d, class: `line ${line.cls}${line.dash ? " dash" : ""}`,
      "vector-effect": "non-scaling-stroke" }));
  }
  return root;
}

function key(cls, text, dash) {
  return el("span", { class: "key" }, el("i", { class: `${cls}${dash ? " dash" : ""}` }), text);
}

function chartBox(title, keys, value, svgNode, extraClass, tag) {
  return el("div", { class: `chart${extraClass ? " " + extraClass : ""}` },
    el("div", { class: "title" }, el("span", { class: "name" }, title, ...keys), el("span", { class: "value" }, value)),
    el("div", { class: "plot" }, svgNode, tag));
}

// --- one card per GPU -----------------------------------------------------------------------

function shareBlock(gpu) {
  const shares = gpu.shares || {};
  const bar = el("div", { class: "sharebar", role: "img" });
  const parts = [];
  for (const s of Object.keys(shares)) {
    const v = shares[s];
    if (!(v > 0)) continue;
    bar.append(el("div", { style: `width:${(v * 100).toFixed(2)}%;background:${color(s)}`, title: `${label(s)}: ${pct(v)}` }));
    parts.push([v, s]);
  }
  parts.sort((a, b) => b[0] - a[0]);
  const words = parts.filter(([v]) => v >= 0.01).map(([v, s]) => `${label(s)} ${pct(v)}`).join(" · ");
  bar.setAttribute("aria-label", `where this GPU's time went: ${words || "no data yet"}`);
  const points = gpu.timeline || [];
  const strip = el("div", { class: "timeline", "aria-hidden": "true" });
  for (const [, s] of points) strip.append(el("div", { style: `background:${color(s)}`, title: label(s) }));
  const covered = points.length > 1 ? points[points.length - 1][0] - points[0][0] : 0;
  return el("section", { class: "time" },
    el("div", { class: "caption" }, el("span", {}, "Where the time went"), el("span", {}, covered ? `last ${span(covered)}` : "")),
    bar, el("div", { class: "sharetext" }, words || "no data yet"), strip);
}

function charts(gpu) {
  const s = gpu.series || {};
  const t = s.t || [];
  const maxClock = last(s.sm_clock_max_mhz) || maxOf(s.sm_clock_mhz);
  const limit = last(s.power_limit_watts) || maxOf(s.power_watts);
  const slowdown = last(s.slowdown_celsius);
  const memTotal = last(s.memory_total_bytes) || maxOf(s.memory_used_bytes);
  const clock = now(s.sm_clock_mhz);
  const marks = s.throttle || [];
  const throttled = marks.length ? marks[marks.length - 1] : null;
  const temp = now(s.temperature_celsius);
  return el("div", { class: "charts" },
    chartBox("Activity", [key("sm", `SM ${pct(now(s.sm))}`), key("tensor", `tensor ${pct(now(s.tensor))}`),
      key("dram", `DRAM ${pct(now(s.dram))}`)], "",
      chart(t, [{ values: s.sm || [], cls: "sm" }, { values: s.tensor || [], cls: "tensor" },
        { values: s.dram || [], cls: "dram" }], 1, null,
        `activity now: SM ${pct(now(s.sm))}, tensor ${pct(now(s.tensor))}, DRAM ${pct(now(s.dram))}`), "wide"),
    chartBox("SM clock", [], `${num(clock, "")} / ${num(maxClock, " MHz")}`,
      chart(t, [{ values: s.sm_clock_mhz || [], cls: "clock" }, { values: s.sm_clock_max_mhz || [], cls: "limit", dash: true }],
        (maxClock || 0) * 1.05, marks,
        `SM clock ${num(clock, " MHz")} of ${num(maxClock, " MHz")}${throttled ? `, held down by ${throttled}` : ""}`),
      null, throttled ? el("span", { class: `tag ${throttled}` }, `held down: ${throttled}`) : null),
    chartBox("Power", [], `${num(now(s.power_watts), "")} / ${num(limit, " W")}`,
      chart(t, [{ values: s.power_watts || [], cls: "power" }, { values: s.power_limit_watts || [], cls: "limit", dash: true }],
        (limit || 0) * 1.1, null, `power ${num(now(s.power_watts), " W")} of a ${num(limit, " W")} limit`)),
    chartBox("Temperature", [], `${num(temp, "")} / ${num(slowdown, " °C")}`,
      chart(t, [{ values: s.temperature_celsius || [], cls: "temp" }, { values: s.slowdown_celsius || [], cls: "limit", dash: true }],
        (slowdown || maxOf(s.temperature_celsius) || 0) * 1.1, null,
        `temperature ${num(temp, " °C")}, slowdown at ${num(slowdown, " °C")}`)),
    chartBox("Memory", [], `${gib(now(s.memory_used_bytes))} / ${gib(memTotal)}`,
      chart(t, [{ values: s.memory_used_bytes || [], cls: "memory" }], memTotal || 0, null,
        `memory ${gib(now(s.memory_used_bytes))} used of ${gib(memTotal)}`)),
  );
}

function figures(gpu) {
  const items = [];
  if (present(gpu.reported_mfu)) items.push(["MFU (reported)", pct(gpu.reported_mfu)]);
  if (present(gpu.estimated_mfu)) items.push(["MFU (est.)", pct(gpu.estimated_mfu)]);
  if (present(gpu.mbu)) items.push(["MBU", pct(gpu.mbu)]);
  const xids = Object.entries(gpu.xids || {});
  if (xids.length) items.push(["XID", xids.map(([x, n]) => (n > 1 ? `${x} ×${n}` : x)).join(", ")]);
  if (!items.length) return null;
  return el("div", { class: "figures" }, ...items.map(([k, v]) => el("span", { class: k === "XID" ? "fig bad" : "fig" }, `${k} `, el("b", {}, v))));
}

function processList(gpu) {
  const owner = gpu.owners || {};
  const ownerText = ["namespace", "pod", "container", "slurm_job"].filter((k) => owner[k])
    .map((k) => `${k === "slurm_job" ? "job" : k} ${owner[k]}`).join(" · ");
  const list = el("ul");
  for (const p of gpu.processes || []) {
    const where = p.pod ? ` · pod ${p.namespace ? p.namespace + "/" : ""}${p.pod}` : p.slurm_job ? ` · job ${p.slurm_job}` : "";
    list.append(el("li", {}, el("b", {}, `pid ${p.pid}`), `${p.user ? ` (${p.user})` : ""}${where}${present(p.used_memory_bytes) ? ` · ${gib(p.used_memory_bytes)}` : ""}`,
      p.command ? el("div", { class: "cmd", title: p.command }, p.command) : null));
  }
  if (!(gpu.processes || []).length) list.append(el("li", {}, "no compute processes"));
  return el("section", { class: "procs" }, ownerText ? el("div", { class: "owner" }, ownerText) : null, list);
}

function card(gpu) {
  const state = gpu.state;
  const badge = el("span", { class: "state", "data-state": state || "" }, gpu.state_label || label(state));
  const head = el("h2", {}, el("span", { class: "gpu" }, `GPU ${gpu.index} `, el("span", { class: "name" }, gpu.name || "")), badge);
  const node = el("article", { class: "card", "data-gpu": String(gpu.index), "data-state": state || "",
    "aria-label": `GPU ${gpu.index}: ${gpu.state_label}` }, head);
  node.style.setProperty("--state", color(state));
  const sentence = gpu.diagnosis || (gpu.error ? `GPU ${gpu.index}: ${gpu.error}` : "Collecting data…");
  const parts = [el("p", { class: "diagnosis" }, sentence), figures(gpu), shareBlock(gpu), charts(gpu), processList(gpu)];
  node.append(...parts.filter(present));
  return node;
}

// --- node header, legend, banner ------------------------------------------------------------

function nodeStats(info) {
  const host = info.host || {};
  const p = host.pressure_some_ratio || {};
  const healthy = info.health && info.health.healthy;
  const items = [
    ["agent", healthy ? "healthy" : "unhealthy", healthy ? "" : "bad", info.health && info.health.detail],
    ["NVML", info.nvml_up ? "up" : "down", info.nvml_up ? "" : "bad", info.nvml_message],
    ["host CPU", pct(host.cpu_busy_ratio), "", present(host.cpu_count) ? `${host.cpu_count} CPUs` : null],
    ["CPU pressure", pct(p.cpu), p.cpu > 0.2 ? "warn" : "", "share of time some task waited for a CPU (PSI)"],
    ["I/O pressure", pct(p.io), p.io > 0.2 ? "warn" : "", "share of time some task waited for I/O (PSI)"],
    ["memory pressure", pct(p.memory), p.memory > 0.1 ? "warn" : "", "share of time some task waited for memory (PSI)"],
  ];
  if ((info.collectors_failed || []).length) items.push(["failing", info.collectors_failed.join(", "), "bad", "collectors whose last run failed"]);
  document.getElementById("node-stats").replaceChildren(...items.map(([k, v, cls, title]) =>
    el("span", { class: `stat ${cls}`, title }, `${k} `, el("b", {}, v))));
  document.getElementById("hostname").textContent = info.hostname || "";
  document.getElementById("version").textContent = info.version ? `gpulse ${info.version}` : "";
  document.getElementById("profiles-link").hidden = !info.profiling_enabled;
  document.getElementById("profiles").hidden = !info.profiling_enabled;
}

function legend() {
  const box = document.getElementById("legend");
  if (box.childElementCount || !states.length) return;
  for (const s of states) box.append(el("span", {}, el("span", { class: "swatch", style: `background:${color(s)}` }), label(s)));
  document.getElementById("chart-legend").replaceChildren(
    el("span", {}, "Charts:"), key("limit", "limit (max clock, power limit, slowdown temperature)", true),
    key("mark-thermal", "clock held down: thermal"), key("mark-power", "clock held down: power"));
}

function banner(text) {
  const b = document.getElementById("banner");
  b.hidden = !text;
  b.textContent = text || "";
}

function title(gpus, hostname) {
  const bad = gpus.filter((g) => PROBLEMS.has(g.state)).length;
  document.title = `${bad ? `(${bad}) ` : ""}gpulse · ${hostname || "node"}`;
}

// --- polling --------------------------------------------------------------------------------

async function fetchJson(url, options) {
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
  try {
    const response = await fetch(url, { cache: "no-store", signal: abort.signal, ...(options || {}) });
    if (!response.ok) {
      let detail = `HTTP ${response.status}`;
      try { const body = await response.json(); detail = body.detail || body.message || body.error || detail; } catch (_) { /* not JSON */ }
      throw new Error(detail);
    }
    return await response.json();
  } catch (err) {
    throw err.name === "AbortError" ? new Error(`no answer in ${FETCH_TIMEOUT_MS / 1000} s`) : err;
  } finally {
    clearTimeout(timeout);
  }
}

let inFlight = false, again = false;

// One poll at a time: a refresh asked for while one runs (window change, tab shown) runs right after it.
async function refresh() {
  if (inFlight) { again = true; return; }
  inFlight = true;
  again = false;
  clearTimeout(timer);
  try {
    const data = await fetchJson(`/api/v1/overview?minutes=${minutes}`);
    labels = data.node.state_labels || labels;
    states = data.node.states || states;
    legend();
    nodeStats(data.node);
    document.body.classList.remove("stale");
    if (!data.ready) { banner("Agent started; waiting for the first sample…"); return; }
    banner(data.gpus.length ? "" : `No GPUs on this node: ${data.node.nvml_message || "host-only"}.`);
    document.getElementById("gpus").replaceChildren(...data.gpus.map(card));
    title(data.gpus, data.node.hostname);
  } catch (err) {
    // An agent restarting is normal: keep the last picture, dimmed, and keep polling.
    document.body.classList.add("stale");
    banner(`Agent not reachable (${err.message || err}); showing the last data, retrying every ${POLL_MS / 1000} s…`);
  } finally {
    inFlight = false;
    timer = setTimeout(refresh, again ? 0 : document.hidden ? POLL_MS * 5 : POLL_MS);
  }
}

// A hidden tab polls rarely; coming back refreshes at once.
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });

const windowSelect = document.getElementById("window");
if (![...windowSelect.options].some((o) => Number(o.value) === minutes)) windowSelect.append(el("option", { value: String(minutes) }, `${minutes} min`));
windowSelect.value = String(minutes);
windowSelect.addEventListener("change", () => {
  minutes = Number(windowSelect.value);
  const url = new URL(location.href);
  url.searchParams.set("minutes", String(minutes));
  history.replaceState(null, "", url);
  refresh();
});

// --- stored profiles (profiling needs its bearer token; it is kept for this tab only) -------

function profileRow(p, token) {
  const target = p.target || {};
  const when = p.created_at ? new Date(p.created_at * 1000).toLocaleTimeString() : "";
  const cells = [p.id, p.status, target.gpu !== null && target.gpu !== undefined ? `GPU ${target.gpu}` : "", `pid ${target.pid}`,
    p.trigger || "", when, p.top_function || p.error || ""];
  const row = el("tr", {}, ...cells.map((c) => el("td", {}, String(c))));
  const action = el("td");
  if (p.download) {
    const button = el("button", { type: "button" }, "download");
    button.addEventListener("click", () => download(p.download, token, p.id));
    action.append(button);
  }
  row.append(action);
  return row;
}

async function download(url, token, id) {
  const status = document.getElementById("profiles-status");
  try {
    const response = await fetch(url, { headers: { "X-Gpulse-Token": token } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const name = (response.headers.get("content-disposition") || "").match(/filename="?([^";]+)/);
    const link = el("a", { href: URL.createObjectURL(await response.blob()), download: name ? name[1] : `profile-${id}` });
    document.body.append(link);
    link.click();
    link.remove();
  } catch (err) {
    status.textContent = `download failed: ${err.message}`;
  }
}

async function listProfiles(event) {
  event.preventDefault();
  const token = document.getElementById("profiles-token").value.trim();
  const status = document.getElementById("profiles-status");
  const table = document.getElementById("profiles-table");
  sessionStorage.setItem(TOKEN_KEY, token);
  status.textContent = "loading…";
  try {
    const data = await fetchJson("/api/v1/profiles", { headers: { "X-Gpulse-Token": token } });
    const profiles = data.profiles || [];
    status.textContent = profiles.length ? `${profiles.length} stored` : "no profiles stored";
    table.replaceChildren(el("tr", {}, ...["id", "status", "GPU", "process", "trigger", "created", "top function / error", ""].map((h) => el("th", {}, h))),
      ...profiles.map((p) => profileRow(p, token)));
  } catch (err) {
    status.textContent = `cannot list profiles: ${err.message}`;
    table.replaceChildren();
  }
}

document.getElementById("profiles-token").value = sessionStorage.getItem(TOKEN_KEY) || "";
document.getElementById("profiles-form").addEventListener("submit", listProfiles);

refresh();
