/* flor ui: the page. Plain JavaScript, no build step; charts by the vendored uPlot.
 *
 * Everything from the store is put into the page with textContent (never innerHTML), so a
 * logged string cannot inject markup. The server filters, sorts and pages the runs table; this
 * file renders one page, keeps the selection, and draws the charts.
 */
"use strict";

const PAGE = 100;
const POLL_MS = 2000;
const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#0a6b5b", "#bf3989",
  "#4d2d00", "#57606a", "#116329"];

const state = {
  where: "", sort: "tstamp", desc: true, offset: 0,
  columns: [], metrics: [], rows: [], sources: [], matched: 0, total: 0, version: -1,
  hidden: new Set(JSON.parse(localStorage.getItem("flor-ui-hidden") || "[]")),
  picked: new Map(),            // tstamp -> {row values by column name}
  metric: localStorage.getItem("flor-ui-metric") || "",
  chart: null, zoom: null, chartRequest: 0, chartBusy: false,
  scatter: null, runView: null,
};

// -- small helpers -----------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") query.set(key, value);
  }
  const url = "/api/" + path + (query.toString() ? "?" + query : "");
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function formatValue(value, column) {
  if (value === null || value === undefined) return "";
  if (column === "duration") return formatDuration(value);
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    const abs = Math.abs(value);
    return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? value.toExponential(3) : String(+value.toPrecision(5));
  }
  return String(value);
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return seconds.toFixed(1) + "s";
  const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s % 60).padStart(2, "0")}s`;
}

function colorOf(tstamp) {
  const keys = [...state.picked.keys()];
  const index = keys.indexOf(tstamp);
  return COLORS[(index < 0 ? 0 : index) % COLORS.length];
}

// -- the runs table ------------------------------------------------------------------------------

async function loadRuns() {
  let body;
  try {
    body = await api("runs", { where: state.where, sort: state.sort, desc: state.desc ? 1 : 0,
      offset: state.offset, limit: PAGE });
  } catch (error) {
    $("filter").classList.add("bad");
    $("filter-error").textContent = error.message;
    $("filter-error").hidden = false;
    return;
  }
  $("filter").classList.remove("bad");
  $("filter-error").hidden = true;
  Object.assign(state, { columns: body.columns, metrics: body.metrics, rows: body.rows, sources: body.sources || [],
    matched: body.matched, total: body.total, version: body.version, loading: body.loading });
  // A large store: the server still reads the last logged values; ask again shortly.
  if (body.loading) setTimeout(() => { if (state.loading) loadRuns(); }, 700);
  if (body.offset >= body.matched && body.matched > 0 && state.offset > 0) {
    state.offset = 0;
    return loadRuns();
  }
  renderTable();
  renderColumnsMenu();
  renderMetricChoices();
}

function visibleColumns() {
  return state.columns.map((c, i) => ({ ...c, index: i })).filter((c) => !state.hidden.has(c.name));
}

function rowObject(values, sources) {
  const object = { _sources: sources || {} };
  state.columns.forEach((c, i) => { object[c.name] = values[i]; });
  return object;
}

// A last value that replay or extract gave (not the run's own record) is marked and says so.
function sourceMark(value, source) {
  if (!source) return { class: "", title: value === null || value === undefined ? "" : String(value) };
  return { class: ` src-${source}`, title: `${value} (${source === "extract" ? "extracted" : "replayed"})` };
}

function renderTable() {
  const columns = visibleColumns();
  const head = el("tr", {}, el("th", { title: "select runs to chart and compare" }, "✓"),
    columns.map((c) => el("th", {
      class: `kind-${c.kind}` + (state.sort === c.name ? " sorted" + (state.desc ? " desc" : "") : ""),
      title: `${c.kind === "log" ? "last logged value of" : c.kind === "arg" ? "arg" : "run"} ${c.name} — click to sort`,
      dataset: { column: c.name },
      onclick: () => sortBy(c.name),
    }, c.name)));
  $("runs").tHead.replaceChildren(head);
  const tstampIndex = state.columns.findIndex((c) => c.name === "tstamp");
  const body = document.createDocumentFragment();
  state.rows.forEach((values, rowIndex) => {
    const tstamp = values[tstampIndex];
    const sources = state.sources[rowIndex] || {};
    const picked = state.picked.has(tstamp);
    const box = el("input", { type: "checkbox", class: "pick", title: "chart and compare this run" });
    box.checked = picked;
    box.addEventListener("change", () => togglePick(tstamp, values, sources, box.checked));
    const cells = columns.map((c) => {
      const value = values[c.index];
      if (c.name === "tstamp") return el("td", {}, el("a", { href: "#run=" + encodeURIComponent(tstamp) }, tstamp));
      const text = formatValue(value, c.name);
      const mark = sourceMark(value, sources[c.name]);
      return el("td", {
        class: (typeof value === "number" ? "num" : "") + (c.name === "status" ? ` status-${value}` : "") + mark.class,
        title: mark.title,
      }, text);
    });
    body.append(el("tr", { class: picked ? "picked" : "", dataset: { tstamp } }, el("td", {}, box), cells));
  });
  $("runs").tBodies[0].replaceChildren(body);
  // For benchmarks/ui.py: when the first rows appeared, measured from navigation start.
  if (state.rows.length && !performance.getEntriesByName("flor-first-rows").length) performance.mark("flor-first-rows");
  if (state.rows.length && !state.loading && !performance.getEntriesByName("flor-all-columns").length) {
    performance.mark("flor-all-columns");
  }
  const last = Math.min(state.offset + state.rows.length, state.matched);
  $("count").textContent = (state.where
    ? `${state.matched} of ${state.total} runs match` : `${state.total} runs`) +
    (state.loading ? " · reading logged values…" : "");
  $("page").textContent = state.matched ? `${state.offset + 1}–${last}` : "";
  $("prev").disabled = state.offset === 0;
  $("next").disabled = last >= state.matched;
}

function sortBy(column) {
  if (state.sort === column) state.desc = !state.desc;
  else { state.sort = column; state.desc = column === "tstamp"; }
  state.offset = 0;
  loadRuns();
}

function renderColumnsMenu() {
  const list = $("columns-list");
  const names = state.columns.map((c) => c.name).join("\n");
  if (list.dataset.names === names) return;
  list.dataset.names = names;
  list.replaceChildren(...state.columns.map((c) => {
    const box = el("input", { type: "checkbox" });
    box.checked = !state.hidden.has(c.name);
    box.addEventListener("change", () => {
      if (box.checked) state.hidden.delete(c.name); else state.hidden.add(c.name);
      saveHidden();
      renderTable();
    });
    return el("label", { class: `kind-${c.kind}` }, box, " ", c.name, el("span", { class: "note" }, " " + c.kind));
  }));
}

function saveHidden() {
  localStorage.setItem("flor-ui-hidden", JSON.stringify([...state.hidden]));
}

function setAllColumns(visible) {
  state.hidden = visible ? new Set() : new Set(state.columns.map((c) => c.name).filter((n) => n !== "tstamp"));
  saveHidden();
  $("columns-list").dataset.names = "";
  renderColumnsMenu();
  renderTable();
}

// -- selection and comparison --------------------------------------------------------------------

function togglePick(tstamp, values, sources, on) {
  if (on) state.picked.set(tstamp, rowObject(values, sources));
  else state.picked.delete(tstamp);
  for (const tr of $("runs").tBodies[0].rows) {
    if (tr.dataset.tstamp === tstamp) tr.classList.toggle("picked", on);
  }
  state.zoom = null;
  renderCompare();
  drawChart();
}

function renderCompare() {
  const runs = [...state.picked.entries()];
  $("selected-count").textContent = runs.length ? `${runs.length} selected` : "";
  $("compare-section").hidden = runs.length < 2;
  if (runs.length < 2) return;
  const onlyDiff = $("compare-diff").checked;
  const names = state.columns.map((c) => c.name).filter((n) => n !== "tstamp");
  const head = el("tr", {}, el("th", {}, ""), runs.map(([t]) =>
    el("th", { style: `color:${colorOf(t)}` }, el("a", { href: "#run=" + encodeURIComponent(t) }, t))));
  const rows = [];
  for (const name of names) {
    const cells = runs.map(([, row]) => row[name]);
    const differs = new Set(cells.map((v) => JSON.stringify(v))).size > 1;
    if (onlyDiff && !differs) continue;
    rows.push(el("tr", {}, el("th", {}, name), cells.map((v, i) => {
      const mark = sourceMark(v, runs[i][1]._sources && runs[i][1]._sources[name]);
      return el("td", { class: (differs ? "differs" : "") + mark.class, title: mark.title }, formatValue(v, name));
    })));
  }
  $("compare").replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
}

// -- the line chart of the selected runs ---------------------------------------------------------

function renderMetricChoices() {
  const select = $("metric");
  const metrics = state.metrics;
  const key = metrics.join("\n");
  if (select.dataset.key !== key) {
    select.dataset.key = key;
    select.replaceChildren(...metrics.map((m) => el("option", { value: m }, m)));
  }
  if (!metrics.includes(state.metric)) {
    state.metric = metrics.includes("loss") ? "loss" : metrics[0] || "";
  }
  select.value = state.metric;
  renderScatterChoices();
}

function chartWidth(id) {
  return Math.max(320, $(id).parentElement.clientWidth - 4);
}

async function drawChart(keepZoom) {
  const node = $("chart");
  const request = ++state.chartRequest;
  node.dataset.request = String(request);
  const runs = [...state.picked.keys()];
  if (!runs.length || !state.metric) {
    if (state.chart) { state.chart.destroy(); state.chart = null; }
    node.dataset.points = "0";
    node.dataset.drawn = String(request);
    $("chart-note").textContent = state.metric
      ? "Tick runs in the table to chart them; drag across the chart to zoom."
      : "No numeric values logged yet.";
    return;
  }
  const zoom = keepZoom ? state.zoom : null;
  let body;
  state.chartBusy = true;
  try {
    body = await api("series", { runs: runs.join(","), name: state.metric,
      points: Math.round(chartWidth("chart") * 2), xmin: zoom ? zoom[0] : "", xmax: zoom ? zoom[1] : "" });
  } catch (error) {
    if (request === state.chartRequest) $("chart-note").textContent = error.message;
    return;
  } finally {
    state.chartBusy = false;
  }
  if (request !== state.chartRequest) return;  // a newer request superseded this one

  const tables = [], series = [{ label: body.x_label }];
  let points = 0, total = 0, inRange = 0, runLevel = [], lasts = [];
  for (const run of body.series) {
    for (const part of run.parts) {
      tables.push([part.x, part.y]);
      points += part.x.length;
      total += part.total;
      inRange += part.in_range;
      // Recorded solid, replayed dashed, extracted (read out of printed lines) dotted.
      const replay = part.source === "replay", extract = part.source === "extract";
      series.push({
        label: run.run + (replay ? " (replayed)" : extract ? " (extracted)" : ""),
        stroke: colorOf(run.run), width: replay || extract ? 2 : 1.5,
        dash: replay ? [6, 4] : extract ? [2, 3] : undefined,
        spanGaps: true, points: { show: (replay || extract) && part.x.length < 200 },
        value: (u, v) => (v === null || v === undefined ? "–" : formatValue(v)),
      });
    }
    if (run.run_level !== null && run.run_level !== undefined) runLevel.push(`${run.run}: ${formatValue(run.run_level)}`);
    // The run's last value as the table shows it (at its last iteration), beside the legend.
    if (run.last && run.last.value !== null && run.last.value !== undefined) {
      lasts.push(`${run.run}: ${formatValue(run.last.value)}` +
        (run.last.source === "record" ? "" : ` (${run.last.source === "extract" ? "extracted" : "replayed"})`));
    }
  }
  const data = tables.length ? uPlot.join(tables) : [[]];
  $("chart-note").textContent = tables.length
    ? `${body.name} against ${body.x_label}: ${total.toLocaleString()} values, ${points.toLocaleString()} drawn` +
      (zoom ? `; ${inRange.toLocaleString()} in the zoomed range` : "") +
      (points < inRange ? " (min and max per bucket; zoom in for detail)" : "") +
      (runLevel.length ? `. Logged once per run: ${runLevel.join(", ")}` : "") +
      (lasts.length ? `. Last values: ${lasts.join(", ")}` : "")
    : `${body.name} is logged only once per run: ${runLevel.join(", ") || "no numeric values"}`;

  const sameShape = state.chart && state.chart.series.length === series.length &&
    state.chart.series.every((s, i) => s.label === series[i].label) && state.chart.dataset === body.name;
  if (sameShape && keepZoom) {
    state.chart.setData(data, !zoom);
    if (zoom) state.chart.setScale("x", { min: zoom[0], max: zoom[1] });
  } else {
    if (state.chart) state.chart.destroy();
    state.chart = new uPlot(chartOptions(series, body), data, node);
    state.chart.dataset = body.name;
  }
  node.dataset.points = String(points);
  node.dataset.drawn = String(request);
}

function chartOptions(series, body) {
  let zoomTimer = null;
  return {
    width: chartWidth("chart"), height: 320,
    scales: { x: { time: false }, y: { distr: $("logy").checked ? 3 : 1 } },
    axes: [{ label: body.x_label }, { label: body.name, size: 70 }],
    series,
    // The page zooms itself (setScale: false) so that it can fetch the range again at full
    // detail: downsampling hid what lies between the kept points.
    cursor: { drag: { x: true, y: false, setScale: false } },
    legend: { live: true },
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 2) return;
        const min = u.posToVal(u.select.left, "x"), max = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
        u.setScale("x", { min, max });
        clearTimeout(zoomTimer);
        zoomTimer = setTimeout(() => { state.zoom = [min, max]; drawChart(true); }, 50);
      }],
    },
  };
}

// -- scatter of one column against another across runs --------------------------------------------

function renderScatterChoices() {
  const xs = $("scatter-x"), ys = $("scatter-y");
  const names = state.columns.filter((c) => c.kind !== "run" || c.name === "duration").map((c) => c.name);
  const key = names.join("\n");
  if (xs.dataset.key === key) return;
  xs.dataset.key = key;
  const args = state.columns.filter((c) => c.kind === "arg").map((c) => c.name);
  const previousX = xs.value || localStorage.getItem("flor-ui-scatter-x") || args[0] || names[0];
  const previousY = ys.value || localStorage.getItem("flor-ui-scatter-y") ||
    (state.metrics.includes("accuracy") ? "accuracy" : state.metrics[0]) || names[0];
  xs.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  ys.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  xs.value = names.includes(previousX) ? previousX : names[0] || "";
  ys.value = names.includes(previousY) ? previousY : names[0] || "";
  drawScatter();
}

function padded(values, log) {
  if (!values.length) return [0, 1];
  let min = Math.min(...values), max = Math.max(...values);
  if (log) return [min / 1.5, max * 1.5];
  const pad = (max - min) * 0.05 || Math.abs(max) * 0.05 || 1;
  return [min - pad, max + pad];
}

async function drawScatter() {
  const x = $("scatter-x").value, y = $("scatter-y").value;
  if (!x || !y) return;
  localStorage.setItem("flor-ui-scatter-x", x);
  localStorage.setItem("flor-ui-scatter-y", y);
  let body;
  try {
    body = await api("values", { names: x === y ? x : `${x},${y}`, where: state.where });
  } catch (error) {
    return;
  }
  // Text values (an optimizer name) become categories placed at 0, 1, 2, ...
  const categories = (values) => {
    if (values.every((v) => v === null || typeof v === "number" || typeof v === "boolean")) return null;
    return [...new Set(values.filter((v) => v !== null).map(String))].sort();
  };
  const xv = body.columns[x], yv = body.columns[y];
  const xCats = categories(xv), yCats = categories(yv);
  const toNumber = (v, cats) => v === null ? null : cats ? cats.indexOf(String(v)) : Number(v);
  const points = [];
  body.runs.forEach((run, i) => {
    const px = toNumber(xv[i], xCats), py = toNumber(yv[i], yCats);
    if (px !== null && py !== null && Number.isFinite(px) && Number.isFinite(py)) points.push([px, py, run]);
  });
  const positive = !xCats && points.length > 1 && points.every((p) => p[0] > 0);
  if (positive && $("scatter-logx").dataset.column !== x) {
    // A learning rate spans orders of magnitude: start on a log axis, the box can undo it.
    $("scatter-logx").dataset.column = x;
    const xs = points.map((p) => p[0]);
    $("scatter-logx").checked = Math.max(...xs) / Math.min(...xs) >= 100;
  }
  const logx = $("scatter-logx").checked && positive;
  points.sort((a, b) => a[0] - b[0]);  // uPlot wants x ascending
  const runs = points.map((p) => p[2]);
  const data = [points.map((p) => p[0]), points.map((p) => p[1])];
  const node = $("scatter");
  if (state.scatter) state.scatter.destroy();
  const numbers = (u, splits) => splits.map((v) => formatValue(v));
  const tick = (cats) => cats ? (u, splits) => splits.map((s) => Number.isInteger(s) && cats[s] !== undefined ? cats[s] : "") : undefined;
  state.scatter = new uPlot({
    width: chartWidth("scatter"), height: 280,
    // Explicit ranges: uPlot's own autorange assumes distinct x values, and runs often share one.
    scales: { x: { time: false, distr: logx ? 3 : 1, range: () => padded(data[0], logx) },
      y: { range: () => padded(data[1], false) } },
    axes: [{ label: x, values: tick(xCats) || numbers }, { label: y, size: 70, values: tick(yCats) || numbers }],
    series: [
      { label: x, value: (u, v, s, i) => (i === null || i === undefined ? "–" : `${formatValue(v)}  (run ${runs[i]})`) },
      { label: y, stroke: COLORS[0], paths: () => null, points: { show: true, size: 7, fill: COLORS[0] + "aa" } },
    ],
    cursor: { drag: { x: true, y: true, uni: 20 } },
  }, data, node);
  node.dataset.points = String(points.length);
}

// -- the page of one run ------------------------------------------------------------------------

function kvRows(pairs) {
  return pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v instanceof Node ? v : String(v))));
}

function table(headers, rows) {
  if (!rows.length) return [el("tr", {}, el("td", { class: "note" }, "(none)"))];
  return [el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), el("tbody", {}, rows)];
}

async function showRun(tstamp) {
  state.runView = tstamp;
  $("main-view").hidden = true;
  $("run-view").hidden = false;
  $("run-code").hidden = true;
  let run;
  try {
    run = await api("runs/" + encodeURIComponent(tstamp));
  } catch (error) {
    $("run-title").textContent = tstamp;
    $("run-error").textContent = error.message;
    $("run-error").hidden = false;
    return;
  }
  document.title = `flor ui — ${run.tstamp}`;
  $("run-title").replaceChildren(run.tstamp, " ", el("span", { class: `status-${run.status}` }, run.status));
  $("run-error").textContent = run.error || "";
  $("run-error").hidden = !run.error;
  const when = (t) => t ? new Date(t * 1000).toLocaleString() : "";
  const end = run.ended || (run.status === "running" ? Date.now() / 1000 : null);
  $("run-info").replaceChildren(...kvRows([
    ["file", run.filename], ["command", run.argv.join(" ")], ["directory", run.cwd],
    ["code version", run.commit || "unversioned"], ["version note", run.vcs_note],
    ["started", when(run.started)], ["ended", when(run.ended)],
    ["duration", end ? formatDuration(end - run.started) : ""],
    ["recorded status", run.recorded_status !== run.status ? run.recorded_status : ""],
    ["resumes", run.resumed_from ? el("a", { href: "#run=" + encodeURIComponent(run.resumed_from) }, run.resumed_from) : ""],
    ["host", run.host], ["python", run.python], ["project", run.projid],
  ]));
  $("run-args").replaceChildren(...(run.args.length ? kvRows(run.args.map((a) => [a.name, formatValue(a.value)]))
    : [el("tr", {}, el("td", { class: "note" }, "(none)"))]));
  $("run-logs").replaceChildren(...table(["name", "source", "values", ""], run.logs.map((l) => el("tr", {},
    el("td", {}, l.name), el("td", {}, l.source), el("td", { class: "num" }, l.count.toLocaleString()),
    el("td", {}, l.numeric ? el("a", { href: "#", onclick: (e) => { e.preventDefault(); chartFromRun(run.tstamp, l.name); } }, "chart") : "")))));
  $("run-checkpoints").replaceChildren(...table(["iteration", "MB", "written MB", "snapshot ms", "write ms"],
    run.checkpoints.map((c) => el("tr", {}, el("td", { class: "num" }, c.iteration),
      el("td", { class: "num" }, (c.bytes / 1e6).toFixed(2)), el("td", { class: "num" }, (c.bytes_written / 1e6).toFixed(2)),
      el("td", { class: "num" }, ((c.snapshot_s || 0) * 1000).toFixed(1)), el("td", { class: "num" }, ((c.write_s || 0) * 1000).toFixed(1))))));
  $("run-drift").replaceChildren(...table(["name", "values that drifted", "largest difference"],
    run.drift.map((d) => el("tr", {}, el("td", {}, d.name), el("td", { class: "num" }, d.count), el("td", { class: "num" }, formatValue(d.max_difference))))));
  const lineageRows = (runs) => runs.length ? runs.map((r) => el("tr", {},
    el("td", {}, el("a", { href: "#run=" + encodeURIComponent(r.tstamp) }, r.tstamp)), el("td", {}, r.filename), el("td", { class: "note" }, r.how)))
    : [el("tr", {}, el("td", { class: "note" }, "(none)"))];
  $("run-read-from").replaceChildren(...lineageRows(run.lineage.read_from));
  $("run-read-by").replaceChildren(...lineageRows(run.lineage.read_by));
  $("run-code-name").textContent = `${run.filename} at ${run.commit ? run.commit.slice(0, 10) : "no version"}`;
  showOutput();
  const others = await api("values", { names: "tstamp" }).catch(() => ({ runs: [] }));
  $("diff-against").replaceChildren(...others.runs.filter((t) => t !== run.tstamp).reverse()
    .map((t) => el("option", { value: t }, t)));
}

async function showOutput() {
  const tstamp = state.runView;
  const grep = $("output-grep").value;
  const stream = $("output-stream").value;
  let body;
  try {
    body = await api(`runs/${encodeURIComponent(tstamp)}/output`, { grep, stream });
  } catch (error) {
    $("output-error").textContent = error.message;
    $("output-error").hidden = false;
    return;
  }
  if (tstamp !== state.runView || grep !== $("output-grep").value || stream !== $("output-stream").value) return;
  $("output-error").hidden = true;
  const context = (c) => Object.entries(c).map(([k, v]) => `${k}=${v}`).join(" ");
  $("run-output").replaceChildren(...body.lines.map((l) => el("span", { class: `line stream-${l.stream}`, title: `${l.stream} ${context(l.context)} +${l.t.toFixed(2)}s` }, l.text + "\n")));
  $("run-output-note").textContent = !body.total ? "(none captured)"
    : `${body.lines.length.toLocaleString()} of ${body.matched.toLocaleString()} matching line(s), ${body.total.toLocaleString()} captured`;
}

let outputTimer = null;
function outputSearch() {
  clearTimeout(outputTimer);
  outputTimer = setTimeout(showOutput, 200);
}

function chartFromRun(tstamp, name) {
  state.picked.clear();
  const index = state.rows.findIndex((r) => r[state.columns.findIndex((c) => c.name === "tstamp")] === tstamp);
  state.picked.set(tstamp, index >= 0 ? rowObject(state.rows[index], state.sources[index]) : { tstamp });
  state.metric = name;
  location.hash = "";
}

async function showCode() {
  const pre = $("run-code");
  pre.hidden = false;
  pre.textContent = "loading…";
  try {
    const body = await api(`runs/${encodeURIComponent(state.runView)}/code`);
    pre.textContent = body.text;
  } catch (error) {
    pre.textContent = error.message;
  }
}

async function showDiff() {
  const pre = $("run-code");
  const other = $("diff-against").value;
  if (!other) return;
  pre.hidden = false;
  pre.textContent = "loading…";
  try {
    const body = await api("diff", { a: other, b: state.runView });
    const lines = body.text ? body.text.split("\n") : [`no differences in ${body.files.join(", ")}`];
    pre.replaceChildren(...lines.map((line) => {
      const kind = line.startsWith("+") && !line.startsWith("+++") ? "add"
        : line.startsWith("-") && !line.startsWith("---") ? "del" : line.startsWith("@@") ? "hunk" : "";
      return kind ? el("span", { class: kind }, line) : document.createTextNode(line + "\n");
    }));
  } catch (error) {
    pre.textContent = error.message;
  }
}

// -- routing and polling ----------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#run=(.+)$/);
  if (match) return showRun(decodeURIComponent(match[1]));
  state.runView = null;
  document.title = "flor ui";
  $("run-view").hidden = true;
  $("main-view").hidden = false;
  renderCompare();
  loadRuns().then(() => drawChart());
}

async function poll() {
  try {
    const body = await api("version");
    $("live").textContent = `${body.runs} runs` + (body.running ? `, ${body.running} running` : "") + " · live";
    $("live").classList.remove("stale");
    $("project").textContent = body.root;
    const changed = body.version !== state.version;
    if (changed && !state.runView) {
      await loadRuns();
      // Redraw only when a charted run is still logging, and never pile up requests: a long
      // running curve takes a while to read.
      const running = body.running_runs.some((t) => state.picked.has(t));
      if (running && !state.chartBusy) drawChart(true);
      drawScatter();
    } else if (!state.runView && body.running) {
      loadRuns();  // durations of running runs grow
    } else if (changed && state.runView) {
      state.version = body.version;
      showRun(state.runView);
    }
  } catch (error) {
    $("live").textContent = "server unreachable";
    $("live").classList.add("stale");
  }
  setTimeout(poll, POLL_MS);
}

function wire() {
  $("filter").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      state.where = $("filter").value.trim();
      state.offset = 0;
      loadRuns().then(drawScatter);
    }
  });
  $("filter").addEventListener("search", () => {
    if (!$("filter").value && state.where) { state.where = ""; state.offset = 0; loadRuns().then(drawScatter); }
  });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadRuns(); });
  $("next").addEventListener("click", () => { state.offset += PAGE; loadRuns(); });
  $("columns-button").addEventListener("click", (event) => {
    const menu = $("columns-menu");
    menu.hidden = !menu.hidden;
    const box = event.target.getBoundingClientRect();
    menu.style.left = box.left + window.scrollX + "px";
    menu.style.top = box.bottom + window.scrollY + 2 + "px";
  });
  document.addEventListener("click", (event) => {
    if (!$("columns-menu").contains(event.target) && event.target !== $("columns-button")) $("columns-menu").hidden = true;
  });
  $("columns-all").addEventListener("click", () => setAllColumns(true));
  $("columns-none").addEventListener("click", () => setAllColumns(false));
  $("metric").addEventListener("change", () => {
    state.metric = $("metric").value;
    localStorage.setItem("flor-ui-metric", state.metric);
    state.zoom = null;
    drawChart();
  });
  $("logy").addEventListener("change", () => { if (state.chart) { state.chart.destroy(); state.chart = null; } drawChart(true); });
  $("reset-zoom").addEventListener("click", () => { state.zoom = null; drawChart(true); });
  $("clear-selection").addEventListener("click", () => {
    state.picked.clear();
    for (const box of document.querySelectorAll("#runs input.pick")) box.checked = false;
    for (const tr of $("runs").tBodies[0].rows) tr.classList.remove("picked");
    renderCompare();
    drawChart();
  });
  $("compare-diff").addEventListener("change", renderCompare);
  $("scatter-x").addEventListener("change", drawScatter);
  $("scatter-y").addEventListener("change", drawScatter);
  $("scatter-logx").addEventListener("change", drawScatter);
  $("show-code").addEventListener("click", showCode);
  $("show-diff").addEventListener("click", showDiff);
  $("output-grep").addEventListener("input", outputSearch);
  $("output-stream").addEventListener("change", showOutput);
  window.addEventListener("hashchange", route);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (state.chart) state.chart.setSize({ width: chartWidth("chart"), height: 320 });
      if (state.scatter) state.scatter.setSize({ width: chartWidth("scatter"), height: 280 });
    }, 150);
  });
}

wire();
route();
poll();
