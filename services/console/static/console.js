// InfraWatch console: every page reads the console's JSON endpoints and renders with textContent
// (never innerHTML with data), so nothing user-supplied is interpreted as markup.
"use strict";

const HEADERS = { "Content-Type": "application/json", "X-InfraWatch-Console": "1" };

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === undefined ? "" : String(cell);
    tr.appendChild(td);
  }
  return tr;
}

function showError(message) {
  const box = document.getElementById("error");
  if (!box) return;
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  let body = {};
  try { body = await response.json(); } catch (e) { body = {}; }
  if (response.status === 401 && !location.pathname.startsWith("/login")) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

function fmt(value, unit) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (unit === "percent") return value.toFixed(1) + " %";
  if (unit === "bytes" || unit === "bytes/s") {
    let v = Math.abs(value), i = 0;
    while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
    return (value < 0 ? "-" : "") + v.toFixed(v < 10 && i > 0 ? 1 : 0) + " " + UNITS[i] + (unit === "bytes/s" ? "/s" : "");
  }
  return Math.abs(value) >= 100 ? value.toFixed(0) : Number(value.toPrecision(3)).toString();
}

function ago(ms) {
  if (!ms) return "—";
  const seconds = Math.round((Date.now() - ms) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 60) return seconds + " s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " d ago";
}

function stamp(iso) { return iso ? Date.parse(iso) : 0; }

// Times are shown in the browser's zone, or in UTC after the header's switch (kept in this
// browser); every absolute time says which, and charts follow the same choice.
const USE_UTC = localStorage.getItem("iw-utc") === "1";
const LOCAL_ZONE = (Intl.DateTimeFormat().resolvedOptions().timeZone || "local time");
const ZONE = USE_UTC ? "UTC" : LOCAL_ZONE;
// One formatter each, made once: a fresh toLocaleString per table cell costs more than the table.
const DATE_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium", ...(USE_UTC ? { timeZone: "UTC" } : {}) });
const TIME_ONLY = new Intl.DateTimeFormat(undefined, { timeStyle: "medium", ...(USE_UTC ? { timeZone: "UTC" } : {}) });
function absolute(ms, timeOnly) {
  return (timeOnly ? TIME_ONLY : DATE_TIME).format(new Date(ms)) + " " + ZONE;
}
function inZone(options) {
  if (USE_UTC) options.tzDate = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
  return options;
}
function zoneSwitch() {
  const button = document.getElementById("zone");
  if (!button) return;
  button.textContent = "Times: " + ZONE + " · show " + (USE_UTC ? "local" : "UTC");
  button.addEventListener("click", () => { localStorage.setItem("iw-utc", USE_UTC ? "0" : "1"); location.reload(); });
}

function when(iso) {
  const ms = stamp(iso);
  const span = el("span", ago(ms));
  if (ms) span.addEventListener("mouseenter", () => { span.title = absolute(ms); }, { once: true });
  return span;
}

const STATUS = { AGENT_STATUS_ONLINE: "ONLINE", AGENT_STATUS_STALE: "STALE", AGENT_STATUS_OFFLINE: "OFFLINE", AGENT_STATUS_DEREGISTERED: "DEREGISTERED" };
const KEY_UNITS = { cpu_usage_percent: "percent", memory_used_bytes: "bytes", memory_used_percent: "percent", load1: "" };

function statusBadge(status) { const s = STATUS[status] || "UNKNOWN"; return el("span", s, "status " + s.toLowerCase()); }

function hostLink(hostname) { const a = el("a", hostname); a.href = "/hosts/" + encodeURIComponent(hostname); return a; }

function latest(view, name) {
  const found = (view.latest || []).find((m) => m.name === name);
  return found ? fmt(found.value, KEY_UNITS[name]) : "—";
}

function alertItem(alert) {
  const silenced = (alert.silenced_by || []).length > 0;
  const li = el("li", null, "alert " + (alert.state || "").toLowerCase() + (silenced ? " silenced" : ""));
  li.appendChild(el("strong", alert.rule));
  if (silenced) li.appendChild(el("span", " (silenced)", "silenced-mark"));
  const labels = Object.entries(alert.labels || {}).filter(([k]) => k !== "alertname").map(([k, v]) => k + "=" + v).join(", ");
  li.appendChild(el("span", " " + labels + " "));
  if (alert.annotations && alert.annotations.summary) li.appendChild(el("em", alert.annotations.summary));
  return li;
}

// --- Fleet ----------------------------------------------------------------------------------------
async function fleetPage() {
  const filter = document.getElementById("filter");
  let data = null;
  function matches(view) {
    const query = filter.value.trim().toLowerCase();
    if (!query) return true;
    const agent = view.agent || {};
    if ((agent.hostname || "").toLowerCase().includes(query)) return true;
    return Object.entries(agent.labels || {}).some(([k, v]) => (k + "=" + v).toLowerCase().includes(query));
  }
  function render() {
    if (!data) return;
    const overview = data.overview;
    const counts = document.getElementById("counts");
    counts.replaceChildren(...(overview.counts || []).map((c) => {
      const box = el("div", null, "count " + (STATUS[c.status] || "").toLowerCase());
      box.appendChild(el("span", c.count || 0, "number"));
      box.appendChild(el("span", STATUS[c.status] || c.status, "label"));
      return box;
    }));
    const firing = document.getElementById("firing");
    const alerts = overview.firing_alerts || [];
    firing.replaceChildren(...(alerts.length ? alerts.map(alertItem) : [el("li", overview.alerts === "AVAILABILITY_UNAVAILABLE" ? "Alerts are unavailable right now." : "Nothing is firing.", "empty")]));
    document.querySelector("#down tbody").replaceChildren(...(overview.recently_down || []).map((view) => row([
      hostLink(view.agent.hostname), statusBadge(view.agent.status), when(view.agent.last_heartbeat_at),
      (view.latest || []).map((m) => m.name + " " + fmt(m.value, KEY_UNITS[m.name])).join(", "),
    ])));
    document.querySelector("#busiest tbody").replaceChildren(...(overview.top_hosts || []).map((h) => row([
      hostLink(h.hostname), fmt(h.value, "percent"), when(h.sampled_at),
    ])));
    const targets = overview.scrape_targets || [];
    document.getElementById("targets-section").hidden = targets.length === 0;
    document.querySelector("#targets tbody").replaceChildren(...targets.map((t) => {
      const tr = row([t.instance, t.job || "", el("span", t.up ? "UP" : "DOWN", "status " + (t.up ? "online" : "offline")), when(t.sampled_at)]);
      tr.dataset.instance = t.instance;
      return tr;
    }));
    const shown = data.agents.filter(matches);
    const total = (overview.counts || []).filter((c) => c.status !== "AGENT_STATUS_DEREGISTERED").reduce((n, c) => n + (c.count || 0), 0);
    const more = document.getElementById("more");
    more.hidden = data.complete;
    more.textContent = "Show all " + total + " hosts";
    document.getElementById("shown").textContent = data.complete ? "" : "the first " + data.agents.length + " of " + total + " · ";
    document.querySelector("#hosts tbody").replaceChildren(...shown.map((view) => {
      const tr = row([
        hostLink(view.agent.hostname), statusBadge(view.agent.status), when(view.agent.last_heartbeat_at),
        latest(view, "cpu_usage_percent"), latest(view, "memory_used_bytes"), latest(view, "load1"),
        Object.entries(view.agent.labels || {}).map(([k, v]) => k + "=" + v).join(" "),
      ]);
      tr.dataset.hostname = view.agent.hostname;
      return tr;
    }));
    document.getElementById("empty").hidden = data.agents.length > 0;
    document.getElementById("updated").textContent = absolute(data.now_ms, true);
    if (!document.body.dataset.loaded) document.body.dataset.loadedAt = String(performance.now());
    document.body.dataset.loaded = "true";
  }
  // The first page comes first; every host is fetched once someone filters or asks for all.
  let every = false;
  async function refresh() {
    try { data = await api("/api/fleet" + (every ? "?all=1" : "")); showError(""); render(); } catch (e) { showError(e.message); }
  }
  async function showAll() { if (!every) { every = true; await refresh(); } }
  filter.addEventListener("input", () => { render(); if (filter.value.trim()) showAll(); });
  document.getElementById("more").addEventListener("click", showAll);
  await refresh();
  setInterval(refresh, 5000);
}

// --- Host -----------------------------------------------------------------------------------------
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

function seriesName(chart, labels) {
  const parts = Object.entries(labels).filter(([k]) => k !== "host").map(([k, v]) => (k === "series" ? v : k + "=" + v));
  return parts.length ? parts.join(", ") : chart.metric;
}

class HostChartView {
  constructor(container, chart, step) {
    this.chart = chart;
    this.box = el("figure", null, "chart");
    this.box.dataset.chart = chart.key;
    this.box.appendChild(el("figcaption", chart.title + (chart.unit ? " (" + chart.unit + ")" : "")));
    this.area = el("div");
    this.box.appendChild(this.area);
    container.appendChild(this.box);
    this.width = Math.min(560, container.clientWidth || 560);
    this.names = [];
    this.keys = [];
    const seen = [...new Set(chart.series.flatMap((s) => s.t))].sort((a, b) => a - b);
    // Where nothing was stored for longer than a few steps, a time with no values breaks the line
    // rather than drawing a straight line across the outage.
    this.times = seen.flatMap((t, i) => (i > 0 && step && t - seen[i - 1] > 3 * step ? [seen[i - 1] + step, t] : [t]));
    const index = new Map(this.times.map((t, i) => [t, i]));
    this.values = chart.series.map((s) => {
      this.keys.push(this.keyOf(s.labels));
      this.names.push(seriesName(chart, s.labels));
      const column = new Array(this.times.length).fill(null);
      s.t.forEach((t, i) => { column[index.get(t)] = s.v[i]; });
      return column;
    });
    this.draw();
  }
  keyOf(labels) { return JSON.stringify(this.chart.group_by.map((name) => [name, labels[name] || ""])); }
  draw() {
    if (this.plot) { this.plot.destroy(); this.plot = null; }
    this.area.replaceChildren();
    if (!this.values.length) {
      this.area.appendChild(el("p", "No samples of " + (this.chart.metric || this.chart.title) + " in this range yet.", "empty"));
    } else {
      const unit = this.chart.unit;
      this.plot = new uPlot(inZone({
        width: this.width, height: 220,
        series: [{}].concat(this.names.map((name, i) => ({ label: name, stroke: COLORS[i % COLORS.length], width: 1.5, value: (u, v) => fmt(v, unit) }))),
        axes: [{}, { values: (u, ticks) => ticks.map((v) => fmt(v, unit)), size: 70 }],
      }), [this.times].concat(this.values), this.area);
    }
    this.count();
  }
  count() { this.box.dataset.points = String(this.values.reduce((n, column) => n + column.filter((v) => v !== null).length, 0)); }
  append(labels, times, values) {
    if (this.chart.unit === "bytes/s") return; // live samples of a counter are not a rate
    const key = this.keyOf(labels);
    let which = this.keys.indexOf(key);
    const grown = which < 0;
    if (grown) {
      which = this.keys.length;
      this.keys.push(key);
      this.names.push(seriesName(this.chart, Object.fromEntries(this.chart.group_by.map((n) => [n, labels[n] || ""]))));
      this.values.push(new Array(this.times.length).fill(null));
    }
    times.forEach((t, i) => {
      this.times.push(t);
      this.values.forEach((column, c) => column.push(c === which ? values[i] : null));
    });
    if (grown || !this.plot) this.draw(); else { this.plot.setData([this.times].concat(this.values)); this.count(); }
  }
}

async function hostPage() {
  const hostname = document.body.dataset.hostname;
  const charts = document.getElementById("charts");
  let views = [];
  let range = new URLSearchParams(location.search).get("range") || "1h";
  async function loadAgent() {
    const data = await api("/api/hosts/" + encodeURIComponent(hostname));
    const agent = data.agent.agent;
    document.getElementById("status").replaceChildren(statusBadge(agent.status));
    document.getElementById("heartbeat").replaceChildren(when(agent.last_heartbeat_at));
    const inventory = agent.inventory || {};
    const facts = [["OS", (agent.os || "") + " " + (agent.arch || "")], ["Kernel", inventory.kernel_version], ["CPUs", inventory.cpu_count],
      ["Memory", fmt(Number(inventory.memory_total_bytes || 0), "bytes")], ["Agent", agent.agent_version], ["Booted", inventory.boot_time ? absolute(stamp(inventory.boot_time)) : "—"],
      ["Labels", Object.entries(agent.labels || {}).map(([k, v]) => k + "=" + v).join(" ") || "—"]];
    document.getElementById("inventory").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", k), el("dd", v || "—")]));
    document.getElementById("host-alerts").replaceChildren(...(data.agent.firing_alerts || []).map(alertItem));
  }
  async function loadCharts() {
    const data = await api("/api/hosts/" + encodeURIComponent(hostname) + "/series?range=" + range);
    charts.replaceChildren();
    views = data.charts.map((chart) => new HostChartView(charts, chart, data.step_s));
    document.querySelectorAll("[data-range]").forEach((b) => b.classList.toggle("active", b.dataset.range === range));
    document.body.dataset.loaded = "true";
  }
  async function loadProcesses() {
    const data = await api("/api/hosts/" + encodeURIComponent(hostname) + "/processes");
    const body = document.querySelector("#processes tbody");
    body.replaceChildren(...data.processes.map((p) => {
      const tr = row([p.group, fmt(p.procs, ""), fmt(p.cpu, "cores"), fmt(p.resident, "bytes"), fmt(p.threads, ""),
        fmt(p.fds, ""), fmt(p.read, "bytes/s"), fmt(p.written, "bytes/s"), p.started ? absolute(p.started * 1000) : "—"]);
      tr.dataset.group = p.group;
      return tr;
    }));
    document.getElementById("processes-empty").hidden = data.processes.length > 0;
    document.getElementById("processes-at").textContent = "as of " + absolute(data.at * 1000, true);
  }
  document.querySelectorAll("[data-range]").forEach((button) => button.addEventListener("click", async () => {
    range = button.dataset.range;
    history.replaceState(null, "", "?range=" + range);
    try { await loadCharts(); } catch (e) { showError(e.message); }
  }));
  try { await loadAgent(); await Promise.all([loadCharts(), loadProcesses()]); } catch (e) { showError(e.message); }
  setInterval(() => loadAgent().catch((e) => showError(e.message)), 5000);
  setInterval(() => loadProcesses().catch((e) => showError(e.message)), 15000);
  // PromQL charts (rates over the agent's counters) are asked again; the others also grow live below.
  setInterval(() => loadCharts().catch((e) => showError(e.message)), 60000);
  const live = new EventSource("/api/hosts/" + encodeURIComponent(hostname) + "/live");
  live.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.status) loadAgent().catch(() => {});
    for (const series of (message.samples && message.samples.series) || []) {
      const labels = Object.fromEntries((series.labels || []).map((l) => [l.name, l.value]));
      const times = (series.timestamps_ms || []).map((t) => Number(t) / 1000);
      for (const view of views) if (view.chart.metric === labels.__name__) view.append(labels, times, series.values || []);
    }
  };
}

// --- Alerts ---------------------------------------------------------------------------------------
async function alertsPage() {
  const loggedIn = !!document.getElementById("logout");
  async function refresh() {
    try {
      const data = await api("/api/alerts");
      showError("");
      document.querySelector("#alerts tbody").replaceChildren(...data.alerts.map((alert) => {
        const labels = Object.entries(alert.labels || {}).filter(([k]) => k !== "alertname").map(([k, v]) => k + "=" + v).join(", ");
        const silenced = (alert.silenced_by || []).length > 0;
        const state = el("span", (alert.state || "").replace("ALERT_STATE_", "") + (silenced ? " · SILENCED" : ""), "state " + (alert.state || "").toLowerCase() + (silenced ? " silenced" : ""));
        const action = el("span");
        if (silenced) action.textContent = "silenced";
        else if (loggedIn) {
          // To the silences page, its matchers filled in with this alert's labels.
          const matchers = Object.entries(alert.labels || {}).map(([k, v]) => k + "=" + JSON.stringify(v)).join(", ");
          const link = el("a", "Silence…");
          link.href = "/silences?matchers=" + encodeURIComponent(matchers);
          action.appendChild(link);
        }
        const tr = row([state, alert.rule, labels, (alert.annotations || {}).summary || "", when(alert.fired_at || alert.active_since), action]);
        tr.dataset.rule = alert.rule;
        return tr;
      }));
      document.getElementById("empty").hidden = data.alerts.length > 0;
      document.body.dataset.loaded = "true";
    } catch (e) { showError(e.message); }
  }
  await refresh();
  const live = new EventSource("/api/alerts/live");
  live.onmessage = () => refresh();
  setInterval(refresh, 15000);
}

// --- Silences -------------------------------------------------------------------------------------
const MATCH_OPS = { MATCH_TYPE_NOT_EQUAL: "!=", MATCH_TYPE_REGEX: "=~", MATCH_TYPE_NOT_REGEX: "!~" };
function matcherText(m) { return m.name + (MATCH_OPS[m.type] || "=") + JSON.stringify(m.value || ""); }

async function silencesPage() {
  const loggedIn = !!document.getElementById("logout");
  const form = document.getElementById("silence");
  const expired = document.getElementById("expired");
  const params = new URLSearchParams(location.search);
  if (form && params.get("matchers")) form.elements.matchers.value = params.get("matchers");
  async function refresh() {
    try {
      const data = await api("/api/silences" + (expired.checked ? "?expired=1" : ""));
      showError("");
      document.querySelector("#silences tbody").replaceChildren(...data.silences.map((silence) => {
        const action = el("span");
        if (loggedIn && silence.status !== "expired") {
          const button = el("button", "Expire");
          button.type = "button";
          button.addEventListener("click", async () => {
            try { await api("/api/silences/" + encodeURIComponent(silence.id) + "/expire", { method: "POST", headers: HEADERS, body: "{}" }); refresh(); }
            catch (e) { showError(e.message); }
          });
          action.appendChild(button);
        }
        const tr = row([el("span", silence.status, "state " + silence.status), (silence.matchers || []).map(matcherText).join(", "),
          when(silence.ends_at), silence.author || "", silence.comment || "", action]);
        tr.dataset.silence = silence.id;
        tr.dataset.status = silence.status;
        return tr;
      }));
      document.getElementById("empty").hidden = data.silences.length > 0;
      document.body.dataset.loaded = "true";
    } catch (e) { showError(e.message); document.body.dataset.loaded = "true"; }
  }
  if (form) form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    for (const name of ["matchers", "duration", "author", "comment"]) body[name] = form.elements[name].value;
    try { await api("/api/silences", { method: "POST", headers: HEADERS, body: JSON.stringify(body) }); form.reset(); refresh(); }
    catch (e) { showError(e.message); }
  });
  expired.addEventListener("change", refresh);
  await refresh();
  setInterval(refresh, 15000);
}

// --- Explore --------------------------------------------------------------------------------------
async function explorePage() {
  const form = document.getElementById("query");
  const params = new URLSearchParams(location.search);
  for (const [name, value] of params) if (form.elements[name]) form.elements[name].value = value;
  let plot = null;
  // Autocomplete of the word being typed: label names inside {...} and after by/without/on/ignoring (,
  // metric names elsewhere. The browser's list filters by what is typed, so each option is the
  // whole expression with the word completed.
  const input = form.elements.query;
  let known = { metrics: [], labels: [] };
  function complete() {
    const before = input.value.slice(0, input.selectionStart ?? input.value.length);
    const word = (before.match(/[a-zA-Z_:][a-zA-Z0-9_:]*$/) || [""])[0];
    const head = before.slice(0, before.length - word.length);
    const opened = head.lastIndexOf("{") > head.lastIndexOf("}");
    const grouping = /\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*$/.test(head);
    const inLabels = opened || grouping;
    const candidates = inLabels ? known.labels.map((name) => ({ name, help: "label" })) : known.metrics;
    const shown = candidates.filter((c) => c.name.startsWith(word)).slice(0, 500);
    document.getElementById("metric-names").replaceChildren(...shown.map((c) => {
      const option = document.createElement("option");
      option.value = head + c.name + input.value.slice(before.length);
      option.label = c.help || c.name;
      option.dataset.name = c.name;
      return option;
    }));
    document.getElementById("metric-names").dataset.kind = inLabels ? "labels" : "metrics";
  }
  api("/api/metric-names").then((data) => {
    known = { metrics: data.metrics, labels: data.labels || [] };
    complete();
  }).catch(() => {});
  input.addEventListener("input", complete);
  async function run() {
    const query = new URLSearchParams();
    for (const name of ["query", "range", "step"]) if (form.elements[name].value) query.set(name, form.elements[name].value);
    history.replaceState(null, "", "?" + query.toString());
    const chart = document.getElementById("chart");
    try {
      const data = await api("/api/explore?" + query.toString());
      showError("");
      const times = [...new Set(data.series.flatMap((s) => s.t))].sort((a, b) => a - b);
      const index = new Map(times.map((t, i) => [t, i]));
      const columns = data.series.map((s) => { const c = new Array(times.length).fill(null); s.t.forEach((t, i) => { c[index.get(t)] = s.v[i]; }); return c; });
      if (plot) { plot.destroy(); plot = null; }
      chart.replaceChildren();
      if (data.series.length) {
        plot = new uPlot(inZone({ width: Math.min(900, chart.clientWidth || 900), height: 300,
          series: [{}].concat(data.series.map((s, i) => ({ label: Object.entries(s.labels).map(([k, v]) => k + "=" + v).join(", ") || "all", stroke: COLORS[i % COLORS.length] }))) }),
          [times].concat(columns), chart);
      }
      document.querySelector("#result tbody").replaceChildren(...data.series.map((s) => row([
        Object.entries(s.labels).map(([k, v]) => k + "=" + v).join(", ") || "all", s.v.length, fmt(s.v[s.v.length - 1], ""),
      ])));
      document.getElementById("empty").hidden = data.series.length > 0;
      document.body.dataset.loaded = "true";
    } catch (e) { showError(e.message); document.body.dataset.loaded = "true"; }
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); run(); });
  if (params.get("query")) run(); else document.getElementById("empty").hidden = false;
}

// --- Login ----------------------------------------------------------------------------------------
// Where to go after the login: `next` only when it resolves to this origin. Resolved by the same URL
// parser navigation uses, so "/\evil.example/" (a backslash is a slash) and "/\t/evil.example" (tabs
// are dropped) are seen as the other hosts they are; a prefix check let both through.
function sameOriginPath(next) {
  if (!next) return "/";
  let target;
  try { target = new URL(next, location.origin); } catch (e) { return "/"; }
  return target.origin === location.origin ? target.pathname + target.search + target.hash : "/";
}

function loginPage() {
  const form = document.getElementById("login");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("/api/login", { method: "POST", headers: HEADERS, body: JSON.stringify({ token: form.elements.token.value }) });
      location.href = sameOriginPath(new URLSearchParams(location.search).get("next"));
    } catch (e) { showError(e.message); }
  });
}

const logout = document.getElementById("logout");
if (logout) logout.addEventListener("click", async () => { await fetch("/api/logout", { method: "POST", headers: HEADERS }); location.href = "/login"; });

zoneSwitch();
({ fleet: fleetPage, host: hostPage, alerts: alertsPage, silences: silencesPage, explore: explorePage, login: loginPage })[document.body.dataset.page]();
