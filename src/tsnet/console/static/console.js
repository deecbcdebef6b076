// tsnet console: the server's status, and charts of any stored series.
//
// An ES module with no build step.  uPlot (vendored, loaded just before this
// module) draws every chart; this file only fetches, lays out and labels.
// Everything shown is built with textContent, never parsed as HTML.  The
// console only reads: /console/api/access and /console/api/status, and
// OpenTSDB's /api/suggest, /api/aggregators, /api/config/filters and
// /api/query.  On an `auth = token` listener every request carries the READ
// token the user typed, as HTTP Basic; it lives in this tab's memory only.

const uPlot = globalThis.uPlot;
const $ = (id) => document.getElementById(id);

const HISTORY = 180; // status polls kept for the points/s chart
const RATE_WINDOW = 300; // seconds the points/s chart shows
const SUGGEST_MAX = 50;
const TOOLTIP_ROWS = 12;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

const num = new Intl.NumberFormat("en-US");
const rateFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const valueFmt = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 6 });

// What tests (and curious users, from the devtools) can read: the charts are
// uPlot instances, so their data is `chart.data` ([times, series...]).
const state = {
  secret: null, access: null, status: null, previous: null, timer: null,
  history: [[], [], []], rateChart: null, chart: null,
  explore: null, lastQuery: null, lastResult: null,
};
globalThis.tsnetConsole = state;

// -- requests ----------------------------------------------------------------------

function authorization() {
  if (!state.secret) return {};
  // ID:KEY is HTTP Basic's user:password; a secret without a colon is the password.
  const pair = state.secret.includes(":") ? state.secret : ":" + state.secret;
  let bytes = "";
  for (const b of new TextEncoder().encode(pair)) bytes += String.fromCharCode(b);
  return { Authorization: "Basic " + btoa(bytes) };
}

// credentials "omit": the browser neither sends nor asks for credentials of its
// own (no login dialog on a 401); the token goes in the header set here.
async function api(path, init = {}) {
  const headers = { Accept: "application/json", ...authorization(), ...(init.headers || {}) };
  let response;
  try {
    response = await fetch(path, { ...init, headers, credentials: "omit", cache: "no-store" });
  } catch (e) {
    return { status: 0, body: null, error: "the server did not answer" };
  }
  const text = await response.text();
  let body = text;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  return { status: response.status, body };
}

function errorText(r) {
  if (r.error) return r.error;
  const e = r.body && r.body.error;
  if (e && typeof e === "object") return e.details ? `${e.message}: ${e.details}` : e.message;
  if (typeof e === "string") return e;
  return `the server answered ${r.status}`;
}

// -- small DOM helpers --------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

function cell(text, cls = "") {
  return el("td", { class: cls, textContent: text });
}

function fill(table, rows) {
  table.tBodies[0].replaceChildren(...rows);
}

function show(node, visible) {
  node.hidden = !visible;
}

function setNumber(node, value) {
  node.textContent = num.format(value);
  node.dataset.value = String(value);
}

// -- start, token ----------------------------------------------------------------------

async function boot() {
  const r = await api("/console/api/access");
  show($("loading"), false);
  if (r.status !== 200) {
    fatal(`The console cannot start: ${errorText(r)}.`);
    return;
  }
  state.access = r.body;
  if (r.body.auth === "token") askToken("");
  else opened(await loadStatus());
}

function fatal(text) {
  const p = $("fatal");
  p.textContent = text;
  show(p, true);
}

function askToken(message) {
  stopPolling();
  state.secret = state.status = state.previous = null;
  state.history = [[], [], []];
  show($("rate-wait"), true);
  for (const chart of ["rateChart", "chart"]) {
    if (state[chart]) state[chart].destroy();
    state[chart] = null;
  }
  for (const id of ["status", "explore", "tabs", "who"]) show($(id), false);
  show($("login"), true);
  $("login-error").textContent = message;
  $("token").value = "";
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  state.secret = $("token").value.trim();
  if (!state.secret) return;
  const r = await api("/console/api/status");
  if (r.status === 200) {
    show($("login"), false);
    opened(r);
  } else if (r.status === 401) {
    askToken("That token is not known here (or it expired, or was revoked).");
  } else if (r.status === 403) {
    askToken("That is a WRITE token: the console reads, so it needs the READ token.");
  } else {
    askToken(`The status could not be read: ${errorText(r)}.`);
  }
}

function opened(r) {
  if (r.status !== 200) {
    fatal(`The status could not be read: ${errorText(r)}.`);
    return;
  }
  show($("fatal"), false);
  show($("tabs"), true);
  const p = r.body.principal;
  const tags = Object.entries(p.tags).map(([k, v]) => `${k}=${v}`).join(", ");
  $("who-text").textContent = p.token
    ? `Solution ${p.solution}${tags ? ` · only ${tags}` : ""}`
    : `Listener ${state.access.listener} · reads solution ${p.solution}`;
  show($("sign-out"), p.token);
  show($("who"), true);
  renderStatus(r.body);
  schedule(r.body.poll);
  route();
}

// -- tabs ------------------------------------------------------------------------------

function route() {
  if (!state.status) return;
  const tab = location.hash === "#explore" ? "explore" : "status";
  for (const name of ["status", "explore"]) {
    show($(name), name === tab);
    const link = $(`tab-${name}`);
    if (name === tab) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (tab === "explore") openExplore();
  resizeCharts();
}

// -- status ------------------------------------------------------------------------------

function stopPolling() {
  clearTimeout(state.timer);
  state.timer = null;
}

function schedule(seconds) {
  stopPolling();
  state.timer = setTimeout(poll, Math.max(1, seconds || 2) * 1000);
}

async function loadStatus() {
  return api("/console/api/status");
}

async function poll() {
  if (document.hidden) { // nothing to see: look again later
    schedule(state.status ? state.status.poll : 2);
    return;
  }
  const secret = state.secret;
  const r = await loadStatus();
  if (state.secret !== secret || !state.status) return; // (signed out meanwhile)
  if (r.status === 401 || r.status === 403) {
    askToken("The token is no longer accepted: paste a valid READ token.");
    return;
  }
  if (r.status === 200) {
    show($("fatal"), false);
    renderStatus(r.body);
  } else {
    fatal(`The status could not be read: ${errorText(r)} (retrying).`);
  }
  schedule(state.status ? state.status.poll : 2);
}

function rate(now, before, key) {
  if (!before) return null;
  const dt = now.time - before.time;
  const d = now.points[key] - before.points[key];
  return dt > 0 && d >= 0 ? d / dt : null; // (a restarted server counts from 0)
}

function renderStatus(s) {
  const before = state.previous && state.previous.time < s.time ? state.previous : null;
  state.previous = state.status = s;
  const rx = rate(s, before, "received_total");
  const wx = rate(s, before, "written_total");
  const jx = rate(s, before, "rejected_total");
  $("rate-received").textContent = rx === null ? "–" : rateFmt.format(rx);
  $("rate-written").textContent = wx === null ? "–" : rateFmt.format(wx);
  $("rate-rejected").textContent = jx === null ? "–" : rateFmt.format(jx);
  setNumber($("total-received"), s.points.received_total);
  setNumber($("total-written"), s.points.written_total);
  setNumber($("total-rejected"), s.points.rejected_total);
  renderQueue(s);
  if (rx !== null) {
    const h = state.history;
    h[0].push(s.time); h[1].push(rx); h[2].push(wx);
    if (h[0].length > HISTORY) for (const a of h) a.shift();
    drawRates();
  }

  fill($("listeners"), s.listeners.map((l) => el("tr", { dataset: { listener: l.name } },
    cell(l.name), cell(l.protocol), cell(l.endpoint || "not bound", "endpoint"),
    cell(l.auth), cell(num.format(l.connections), "num connections"))));

  fill($("storages"), s.storages.map((st) => {
    const stateText = st.failing
      ? `failing: retrying every ${rateFmt.format(st.retry_delay)} s` : "writing";
    return el("tr", { dataset: { storage: st.name } },
      cell(st.name), cell(st.backend), cell(stateText, st.failing ? "state-bad" : "state-ok"),
      cell(num.format(st.errors.unavailable), "num"), cell(num.format(st.errors.bad), "num"));
  }));

  fill($("rejected"), s.rejected.map((r) => el("tr", { dataset: { reason: r.reason } },
    cell(r.protocol), cell(r.reason), cell(num.format(r.count), "num"))));
  show($("rejected-none"), s.rejected.length === 0);

  const tagged = Object.keys(s.principal.tags).length > 0;
  fill($("solutions"), s.solutions.map((sol) => {
    let points = "counting…";
    if (tagged) points = "not counted (token tags)";
    else if (sol.counted) points = sol.points === null ? "unavailable" : num.format(sol.points);
    return el("tr", { class: sol.read_here ? "here" : "", dataset: { solution: sol.name } },
      cell(sol.name), cell(sol.storage), cell(points, "num points"),
      cell(sol.store ? `ts-store (${sol.store}) ${sol.description}` : sol.description, "wrap"));
  }));
  const note = $("solutions-note");
  const notes = [];
  if (!s.principal.token) notes.push(`Explore on this port reads solution ${s.principal.solution}.`);
  if (s.more_solutions) notes.push(`${num.format(s.more_solutions)} more not listed.`);
  note.textContent = notes.join(" ");
  show(note, notes.length > 0);

  const committed = [
    ...Object.entries(s.points.written).map(([p, n]) => [`points over ${p}`, n]),
    ...Object.entries(s.items_written).map(([k, n]) => [`${k} items`, n]),
  ];
  fill($("committed"), committed.map(([what, n]) => el("tr", {},
    cell(what), cell(num.format(n), "num"))));

  $("version").textContent = s.version;
  const t = new Date(s.time * 1000);
  $("updated").textContent = t.toLocaleTimeString();
  $("updated").dateTime = t.toISOString();
}

function renderQueue(s) {
  const q = s.queue;
  setNumber($("queue-items"), q.items);
  const meter = $("queue-meter");
  meter.max = q.high_watermark;
  meter.value = Math.min(q.items, q.high_watermark);
  const failing = s.storages.filter((st) => st.failing).map((st) => st.name);
  let text = `inputs flowing (pause above ${num.format(q.high_watermark)})`;
  if (failing.length) text = `storage ${failing.join(", ")} failing: batches kept and retried`;
  else if (q.paused) text = `inputs paused: above ${num.format(q.high_watermark)} until below ${num.format(q.low_watermark)}`;
  $("queue-state").textContent = text;
  $("queue-card").classList.toggle("paused", q.paused || failing.length > 0);
}

function drawRates() {
  const box = $("rate-chart");
  if (box.offsetParent === null || state.history[0].length < 2) return; // (drawn when shown)
  show($("rate-wait"), false);
  if (!state.rateChart) {
    state.rateChart = new uPlot({
      width: box.clientWidth, height: 160,
      scales: {
        x: { time: true, range: (u, lo, hi) => [hi - RATE_WINDOW, hi] },
        y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] },
      },
      axes: [{}, { size: 70, values: (u, ticks) => ticks.map((v) => rateFmt.format(v)) }],
      series: [{}, { label: "received/s", stroke: COLORS[0], width: 2 },
               { label: "committed/s", stroke: COLORS[2], width: 2 }],
      legend: { live: false },
    }, state.history, box);
  } else {
    state.rateChart.setData(state.history);
  }
}

// -- explore -------------------------------------------------------------------------------

async function openExplore() {
  if (state.explore) return;
  state.explore = { aggregators: [], filters: [] };
  if (!state.access.explore) {
    show($("explore-off"), true);
    show($("query-form"), false);
    return;
  }
  const [aggs, filters] = await Promise.all([api("/api/aggregators"), api("/api/config/filters")]);
  state.explore.aggregators = aggs.status === 200 && Array.isArray(aggs.body)
    ? [...aggs.body].sort() : ["avg", "count", "max", "min", "none", "sum"];
  state.explore.filters = filters.status === 200 && filters.body && typeof filters.body === "object"
    ? Object.keys(filters.body).sort() : ["literal_or", "wildcard", "regexp"];
  for (const kind of ["metrics", "tagk", "tagv"]) {
    document.body.append(el("datalist", { id: `suggest-${kind}` }));
  }
  addQuery();
}

function options(select, values, selected) {
  select.replaceChildren(...values.map((v) => el("option", { value: v, textContent: v,
                                                             selected: v === selected })));
}

function addQuery() {
  const block = $("query-template").content.firstElementChild.cloneNode(true);
  options(block.querySelector("[name=aggregator]"), state.explore.aggregators, "sum");
  options(block.querySelector("[name=ds-function]"),
          state.explore.aggregators.filter((a) => a !== "none"), "avg");
  suggestOn(block.querySelector("[name=metric]"), "metrics");
  block.querySelector(".add-filter").addEventListener("click", () => addFilter(block));
  block.querySelector(".remove-query").addEventListener("click", () => {
    if ($("queries").children.length > 1) block.remove();
  });
  $("queries").append(block);
  return block;
}

function addFilter(block) {
  const row = $("filter-template").content.firstElementChild.cloneNode(true);
  options(row.querySelector("[name=type]"), state.explore.filters, "wildcard");
  suggestOn(row.querySelector("[name=tagk]"), "tagk");
  suggestOn(row.querySelector("[name=filter]"), "tagv");
  row.querySelector(".remove-filter").addEventListener("click", () => row.remove());
  block.querySelector(".filters").append(row);
  return row;
}

// Suggestions as you type, from /api/suggest (the token's series only).
function suggestOn(input, kind) {
  input.setAttribute("list", `suggest-${kind}`);
  let timer = null;
  let asked = null;
  const ask = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const q = input.value;
      if (q === asked) return;
      asked = q;
      const r = await api(`/api/suggest?type=${kind}&max=${SUGGEST_MAX}&q=${encodeURIComponent(q)}`);
      if (r.status !== 200 || !Array.isArray(r.body) || input.value !== q) return;
      $(`suggest-${kind}`).replaceChildren(...r.body.map((v) => el("option", { value: v })));
    }, 150);
  };
  input.addEventListener("input", ask);
  input.addEventListener("focus", () => { asked = null; ask(); });
}

// A datetime-local input's value for a time (local, to the second).
function inputTime(ms) {
  const offset = new Date(ms).getTimezoneOffset() * 60e3;
  return new Date(ms - offset).toISOString().slice(0, 19);
}

function localTime(value) {
  if (!value) return null;
  const t = new Date(value).getTime();
  return Number.isFinite(t) ? t : null;
}

// The /api/query body of the form, as OpenTSDB 2.4 (and Grafana) write it.
function buildQuery() {
  const query = {};
  if ($("range").value === "absolute") {
    const from = localTime($("from").value);
    const to = localTime($("to").value);
    if (from === null) throw new Error("Pick when the range starts.");
    if (to !== null && to <= from) throw new Error("The range must end after it starts.");
    query.start = from;
    if (to !== null) query.end = to;
  } else {
    query.start = $("range").value;
  }
  query.queries = [...$("queries").children].map((block) => {
    const value = (name) => block.querySelector(`[name=${name}]`).value.trim();
    const checked = (name) => block.querySelector(`[name=${name}]`).checked;
    const sub = { aggregator: value("aggregator"), metric: value("metric") };
    if (!sub.metric) throw new Error("Name a metric for every query.");
    const interval = value("ds-interval");
    if (interval) sub.downsample = [interval, value("ds-function"), value("ds-fill")].filter(Boolean).join("-");
    if (checked("rate")) {
      sub.rate = true;
      if (checked("counter")) sub.rateOptions = { counter: true };
    }
    const filters = [...block.querySelectorAll(".filter")].map((row) => {
      const f = {
        type: row.querySelector("[name=type]").value,
        tagk: row.querySelector("[name=tagk]").value.trim(),
        filter: row.querySelector("[name=filter]").value.trim(),
        groupBy: row.querySelector("[name=groupBy]").checked,
      };
      if (!f.filter && f.type === "wildcard") f.filter = "*"; // (every value)
      if (f.tagk && !f.filter) throw new Error(`Give the ${f.type} filter on ${f.tagk} a value.`);
      return f;
    }).filter((f) => f.tagk);
    if (filters.length) sub.filters = filters;
    return sub;
  });
  return query;
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

function showQuery(query) {
  const json = JSON.stringify(query, null, 2);
  $("query-json").textContent = json;
  const user = state.secret ? ' -u "$READ_ID:$READ_KEY"' : "";
  $("query-curl").textContent = `curl -s${user} -XPOST ${shellQuote(location.origin + "/api/query")} \\\n`
    + `  -H 'Content-Type: application/json' -d ${shellQuote(JSON.stringify(query))}`;
}

async function draw(event) {
  event.preventDefault();
  const error = $("query-error");
  show(error, false);
  let query;
  try {
    query = buildQuery();
  } catch (e) {
    error.textContent = e.message;
    show(error, true);
    return;
  }
  state.lastQuery = query;
  showQuery(query);
  $("draw").disabled = true;
  $("chart-summary").textContent = "Reading…";
  const r = await api("/api/query?arrays=true", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(query),
  });
  $("draw").disabled = false;
  if (r.status === 401 || r.status === 403) {
    askToken("The token is no longer accepted: paste a valid READ token.");
    return;
  }
  if (r.status !== 200 || !Array.isArray(r.body)) {
    error.textContent = `The query failed: ${errorText(r)}.`;
    show(error, true);
    $("chart-summary").textContent = "";
    return;
  }
  state.lastResult = r.body;
  drawChart(r.body);
}

function seriesLabel(result) {
  const tags = Object.entries(result.tags).map(([k, v]) => `${k}=${v}`).join(", ");
  return tags ? `${result.metric}{${tags}}` : result.metric;
}

// uPlot wants one time axis: the union of every series' times, each series
// holding null where it has no point (and spanning those gaps).
function aligned(results) {
  const series = results.map((r) => {
    const dps = Array.isArray(r.dps) ? r.dps : Object.entries(r.dps).map(([t, v]) => [Number(t), v]);
    return dps.map(([t, v]) => [t, typeof v === "number" ? v : null]);
  });
  const times = [...new Set(series.flatMap((s) => s.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const columns = series.map((s) => {
    const column = new Array(times.length).fill(null);
    for (const [t, v] of s) column[index.get(t)] = v;
    return column;
  });
  return [times, ...columns];
}

function chartHeight(width) {
  return Math.round(Math.max(220, Math.min(420, width * 0.45)));
}

function drawChart(results) {
  const box = $("chart");
  if (state.chart) {
    state.chart.destroy();
    state.chart = null;
  }
  const data = aligned(results);
  const points = data.slice(1).reduce((n, s) => n + s.filter((v) => v !== null).length, 0);
  $("chart-summary").textContent = results.length
    ? `${num.format(results.length)} series, ${num.format(points)} points.`
    : "No series matched: check the metric, the filters and the time range.";
  box.dataset.series = String(results.length);
  box.dataset.points = String(points);
  if (!results.length) return;
  const width = box.clientWidth;
  // A tap is a touch, then an emulated mouse move, click and leave: the
  // cursor (and its tooltip) stay where the finger was until the next tap.
  const pointer = { touch: false };
  state.chart = new uPlot({
    width, height: chartHeight(width),
    cursor: { bind: { mouseleave: (u, target, handle) => (e) => {
      if (!pointer.touch && e.target === target) handle(e);
    } } },
    scales: { x: { time: true } },
    axes: [{}, { size: 70, values: (u, ticks) => ticks.map((v) => valueFmt.format(v)) }],
    series: [{ label: "time" }, ...results.map((r, i) => ({
      label: seriesLabel(r), stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true,
      value: (u, v) => (v === null ? "–" : valueFmt.format(v)),
    }))],
    legend: { live: true },
    plugins: [tooltip(pointer)],
  }, data, box);
}

// A box by the cursor with the time and each series' value there.
function tooltip(pointer) {
  let tip = null;
  return {
    hooks: {
      init(u) {
        tip = el("div", { class: "tooltip", hidden: true });
        u.over.append(tip);
        u.over.addEventListener("pointerdown", (e) => { pointer.touch = e.pointerType !== "mouse"; });
        u.over.addEventListener("pointermove", (e) => {
          if (e.pointerType === "mouse") pointer.touch = false;
        });
        u.over.addEventListener("mouseleave", () => { if (!pointer.touch) tip.hidden = true; });
      },
      setCursor(u) {
        const { left, top, idx } = u.cursor;
        if (idx === null || idx === undefined || left < 0) {
          tip.hidden = true;
          return;
        }
        const rows = [];
        for (let i = 1; i < u.series.length; i++) {
          const v = u.data[i][idx];
          if (v === null || !u.series[i].show) continue;
          rows.push(el("div", { class: "row-v" },
            el("span", {}, swatch(u.series[i].stroke()), u.series[i].label),
            el("b", { textContent: valueFmt.format(v) })));
        }
        if (!rows.length) {
          tip.hidden = true;
          return;
        }
        const extra = rows.length - TOOLTIP_ROWS;
        const shown = rows.slice(0, TOOLTIP_ROWS);
        if (extra > 0) shown.push(el("div", { textContent: `and ${extra} more` }));
        tip.replaceChildren(el("div", { class: "t", textContent: new Date(u.data[0][idx] * 1000).toLocaleString() }), ...shown);
        tip.hidden = false;
        const w = u.over.clientWidth;
        const h = u.over.clientHeight;
        let x = left + 14;
        if (x + tip.offsetWidth > w) x = Math.max(0, left - tip.offsetWidth - 14);
        const y = Math.max(0, Math.min(top + 14, h - tip.offsetHeight));
        tip.style.transform = `translate(${x}px, ${y}px)`;
      },
    },
  };
}

function swatch(color) {
  const s = el("span", { class: "swatch" });
  s.style.background = color;
  return s;
}

function resizeCharts() {
  const chart = state.chart;
  if (chart) {
    const w = $("chart").clientWidth;
    if (w && w !== chart.width) chart.setSize({ width: w, height: chartHeight(w) });
  }
  const rates = state.rateChart;
  const rw = $("rate-chart").clientWidth;
  if (rates && rw && rw !== rates.width) rates.setSize({ width: rw, height: 160 });
  if (!rates) drawRates();
}

// -- wiring --------------------------------------------------------------------------------

$("login-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => askToken(""));
$("query-form").addEventListener("submit", draw);
$("add-query").addEventListener("click", () => addQuery());
$("range").addEventListener("change", () => {
  const absolute = $("range").value === "absolute";
  show($("absolute"), absolute);
  if (absolute && !$("from").value) { // the last hour, to start from
    const now = Date.now();
    $("from").value = inputTime(now - 3600e3);
    $("to").value = inputTime(now);
  }
});
for (const [button, source] of [["copy-json", "query-json"], ["copy-curl", "query-curl"]]) {
  $(button).addEventListener("click", () => copy($(source)));
}
window.addEventListener("hashchange", route);
new ResizeObserver(resizeCharts).observe(document.querySelector("main"));

async function copy(node) {
  try {
    await navigator.clipboard.writeText(node.textContent);
  } catch {
    // (no clipboard on a plain-http page of another host): select it for Ctrl-C
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
}

boot();
