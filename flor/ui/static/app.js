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

const MAX_CHARTED = 100;      // the server's MAX_COMPARED: a page of the table
const X_MODES = ["iteration", "step", "time"];

// What the page shows is kept in the URL (readUrl, writeUrl): a reload or a shared link restores
// the filter, brushes, sort, page, selection, hidden columns and the charts' settings.
const state = {
  where: "", sort: "tstamp", desc: true, offset: 0, brush: {},
  columns: [], metrics: [], rows: [], sources: [], matched: 0, total: 0, version: -1,
  hidden: new Set(JSON.parse(localStorage.getItem("flor-ui-hidden") || "[]")),
  picked: new Map(),            // tstamp -> {row values by column name}
  panels: [], views: [], smooth: 0, xmode: "iteration", logy: false, group: "",
  scatterX: "", scatterY: "", pcMetric: "", pcAxes: null,
  scatter: null, runView: null,
};

// -- state in the URL --------------------------------------------------------------------------

function readUrl() {
  const q = new URLSearchParams(location.search);
  state.where = q.get("where") || "";
  state.sort = q.get("sort") || "tstamp";
  state.desc = q.has("desc") ? q.get("desc") === "1" : state.sort === "tstamp";
  state.offset = Math.max(0, Number(q.get("offset")) || 0);
  if (q.has("hide")) state.hidden = new Set(q.get("hide").split(",").filter(Boolean));
  state.panels = (q.get("charts") || "").split(",").filter(Boolean);
  state.smooth = Math.min(0.99, Math.max(0, Number(q.get("smooth")) || 0));
  state.xmode = X_MODES.includes(q.get("x")) ? q.get("x") : "iteration";
  state.logy = q.get("logy") === "1";
  state.group = q.get("group") || "";
  state.scatterX = q.get("sx") || "";
  state.scatterY = q.get("sy") || "";
  state.pcMetric = q.get("pc") || "";
  state.archived = q.get("archived") === "1";
  state.brush = {};
  for (const item of (q.get("brush") || "").split(";").filter(Boolean)) {
    const [name, lo, hi] = item.split(":");
    if (name && Number.isFinite(Number(lo)) && Number.isFinite(Number(hi))) state.brush[name] = [Number(lo), Number(hi)];
  }
  return (q.get("sel") || "").split(",").filter(Boolean);
}

function writeUrl() {
  const q = new URLSearchParams();
  const put = (key, value, skip) => { if (value !== skip && value !== "" && value !== undefined) q.set(key, value); };
  put("where", state.where);
  put("brush", brushParam());
  put("sort", state.sort, "tstamp");
  if (state.desc !== (state.sort === "tstamp")) q.set("desc", state.desc ? "1" : "0");
  put("offset", String(state.offset), "0");
  put("sel", [...state.picked.keys()].join(","));
  if (q.has("hide") || state.hidden.size) put("hide", [...state.hidden].join(","));
  put("charts", state.panels.join(","));
  put("x", state.xmode, "iteration");
  put("smooth", String(state.smooth), "0");
  put("logy", state.logy ? "1" : "0", "0");
  put("group", state.group);
  put("sx", state.scatterX);
  put("sy", state.scatterY);
  put("pc", state.pcMetric);
  put("archived", state.archived ? "1" : "");
  const query = q.toString();
  history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
}

function brushParam() {
  return Object.entries(state.brush).map(([name, [lo, hi]]) => `${name}:${lo}:${hi}`).join(";");
}

// The runs ticked in a shared link: their rows, read back by tstamp.
async function restoreSelection(tstamps) {
  if (!tstamps.length) return;
  const body = await api("runs", { where: `tstamp in (${tstamps.map((t) => JSON.stringify(t)).join(", ")},)`,
    limit: 1000 }).catch(() => null);
  if (!body) return;
  const names = body.columns.map((c) => c.name);
  const found = new Map(body.rows.map((values, i) => {
    const row = { _sources: body.sources[i] || {} };
    names.forEach((n, k) => { row[n] = values[k]; });
    return [row.tstamp, row];
  }));
  for (const t of tstamps) if (found.has(t)) state.picked.set(t, found.get(t));
}

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
  // Relative: behind a path-prefix proxy the page lives under that prefix.
  const url = "api/" + path + (query.toString() ? "?" + query : "");
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// The only write: a run's annotations, when the server runs with --allow-edit. The token comes
// from this page's own HTML (no other site can read it); the server refuses a POST without it.
const EDIT_TOKEN = (document.querySelector('meta[name="flor-edit-token"]') || {}).content || "";

async function apiPost(path, payload) {
  const response = await fetch("api/" + path, {
    method: "POST", body: JSON.stringify(payload),
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-Flor-Token": EDIT_TOKEN },
  });
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
  const index = chartedRuns().findIndex((r) => r.tstamp === tstamp);
  return COLORS[(index < 0 ? 0 : index) % COLORS.length];
}

// -- the runs table ------------------------------------------------------------------------------

async function loadRuns() {
  let body;
  try {
    body = await api("runs", { where: state.where, brush: brushParam(), archived: state.archived ? 1 : "",
      sort: state.sort, desc: state.desc ? 1 : 0,
      offset: state.offset, limit: PAGE });
  } catch (error) {
    return filterRefused(error);
  }
  state.shownWhere = state.where;
  const wasLoading = state.loading;
  $("filter").classList.remove("bad");
  $("filter-error").hidden = true;
  Object.assign(state, { columns: body.columns, metrics: body.metrics, rows: body.rows, sources: body.sources || [],
    matched: body.matched, total: body.total, archivedCount: body.archived || 0, version: body.version, loading: body.loading,
    chartsReady: Boolean(body.charts_ready) });
  // A large store: the server still reads the last logged values; ask again shortly.
  if (body.loading) setTimeout(() => { if (state.loading) loadRuns(); }, 700);
  if (body.offset >= body.matched && body.matched > 0 && state.offset > 0) {
    state.offset = 0;
    return loadRuns();
  }
  renderTable();
  renderColumnsMenu();
  renderScatterChoices();
  renderGroupChoices();
  renderParallelChoices();
  writeUrl();
  if (state.routed && (panelsStale() || (wasLoading && !state.loading))) { renderPanels(); drawParallel(); }
  return true;
}

// A filter the server refused: say why (with the fix when there is one), keep the rows of the
// last filter that worked, and make the count say which filter they match.
function filterRefused(error) {
  $("filter").classList.add("bad");
  $("filter-error").textContent = error.message;
  $("filter-error").hidden = false;
  const typed = state.where;
  state.where = state.shownWhere || "";
  renderCount(typed);
  writeUrl();
  return false;
}

function renderCount(refused) {
  const brushed = Object.keys(state.brush).length;
  const narrowed = state.where || brushed;
  $("count").textContent = (narrowed ? `${state.matched} of ${state.total} runs match` : `${state.total} runs`) +
    (state.where ? ` ${JSON.stringify(state.where)}` : "") +
    (brushed ? ` within the brushed range${brushed > 1 ? "s" : ""}` : "") +
    (refused !== undefined ? ` (not ${JSON.stringify(refused)}: see below)` : "") +
    (state.archivedCount && !state.archived ? ` (${state.archivedCount} archived not shown)` : "") +
    (state.loading ? " · reading logged values…" : "");
}

function visibleColumns() {
  return state.columns.map((c, i) => ({ ...c, index: i })).filter((c) => !state.hidden.has(c.name));
}

function rowObject(values, sources) {
  const object = { _sources: sources || {} };
  state.columns.forEach((c, i) => { object[c.name] = values[i]; });
  return object;
}

// A last value that replay or extract gave (not the run's own record) is marked and says so; a
// logged value says it was recorded.
function sourceMark(value, source, kind) {
  const empty = value === null || value === undefined;
  if (!source) return { class: "", title: empty ? "" : String(value) + (kind === "log" ? " (recorded)" : "") };
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
      const mark = sourceMark(value, sources[c.name], c.kind);
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
  const csv = new URLSearchParams({ sort: state.sort, desc: state.desc ? "1" : "0",
    columns: columns.map((c) => c.name).join(",") });
  if (state.where) csv.set("where", state.where);
  if (brushParam()) csv.set("brush", brushParam());
  $("csv").href = "api/runs.csv?" + csv;
  const last = Math.min(state.offset + state.rows.length, state.matched);
  renderCount();
  $("page").textContent = state.matched ? `${state.offset + 1}–${last}` : "";
  $("prev").disabled = state.offset === 0;
  $("next").disabled = last >= state.matched;
}

function sortBy(column) {
  if (state.sort === column) state.desc = !state.desc;
  else { state.sort = column; state.desc = column === "tstamp"; }
  state.offset = 0;
  loadRuns().then(() => { if (!state.picked.size) renderPanels(); });
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
  writeUrl();
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
  writeUrl();
  renderCompare();
  renderPanels();
}

function renderCompare() {
  const runs = [...state.picked.entries()];
  $("selected-count").textContent = runs.length ? `${runs.length} selected` : "";
  $("compare-section").hidden = runs.length < 2;
  if (runs.length < 2) return;
  const onlyDiff = $("compare-diff").checked;
  const names = state.columns.map((c) => c.name).filter((n) => n !== "tstamp");
  const kinds = new Map(state.columns.map((c) => [c.name, c.kind]));
  const head = el("tr", {}, el("th", {}, ""), runs.map(([t]) =>
    el("th", { style: `color:${colorOf(t)}` }, el("a", { href: "#run=" + encodeURIComponent(t) }, t))));
  const rows = [];
  for (const name of names) {
    const cells = runs.map(([, row]) => row[name]);
    const differs = new Set(cells.map((v) => JSON.stringify(v))).size > 1;
    if (onlyDiff && !differs) continue;
    rows.push(el("tr", {}, el("th", {}, name), cells.map((v, i) => {
      const mark = sourceMark(v, runs[i][1]._sources && runs[i][1]._sources[name], kinds.get(name));
      return el("td", { class: (differs ? "differs" : "") + mark.class, title: mark.title }, formatValue(v, name));
    })));
  }
  $("compare").replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
}

// -- scatter of one column against another across runs --------------------------------------------

function renderScatterChoices() {
  const xs = $("scatter-x"), ys = $("scatter-y");
  const names = state.columns.filter((c) => c.kind !== "run" || c.name === "duration").map((c) => c.name);
  const key = names.join("\n");
  if (xs.dataset.key === key) return;
  xs.dataset.key = key;
  const args = state.columns.filter((c) => c.kind === "arg").map((c) => c.name);
  const previousX = state.scatterX || xs.value || args[0] || names[0];
  const previousY = state.scatterY || ys.value ||
    (state.metrics.includes("accuracy") ? "accuracy" : state.metrics[0]) || names[0];
  xs.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  ys.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  xs.value = names.includes(previousX) ? previousX : names[0] || "";
  ys.value = names.includes(previousY) ? previousY : names[0] || "";
  // On the page's first load, route() draws it after asking for the chart, which comes first.
  if (state.routed) drawScatter();
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
  let body;
  try {
    body = await api("values", { names: x === y ? x : `${x},${y}`, where: state.where, brush: brushParam(),
      archived: state.archived ? 1 : "" });
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
    width: chartWidth(node), height: 280,
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
  // The note form holds another run's notes (or none) until this run's arrive: emptied and
  // disabled meanwhile, so that nothing typed into it is overwritten or saved against this run.
  for (const id of ["note-name", "note-tags", "note-text"]) $(id).value = "";
  $("note-archived").checked = false;
  for (const id of ["note-name", "note-tags", "note-text", "note-archived", "note-save"]) $(id).disabled = true;
  let run;
  try {
    run = await api("runs/" + encodeURIComponent(tstamp));
  } catch (error) {
    $("run-title").textContent = tstamp;
    $("run-error").textContent = error.message;
    $("run-error").hidden = false;
    return;
  }
  if (state.runView !== tstamp) return;  // another run was opened while this one loaded
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
  showNotes(run.annotations);
  $("run-code-name").textContent = `${run.filename} at ${run.commit ? run.commit.slice(0, 10) : "no version"}`;
  showOutput();
  const others = await api("values", { names: "tstamp", archived: 1 }).catch(() => ({ runs: [] }));
  $("diff-against").replaceChildren(...others.runs.filter((t) => t !== run.tstamp).reverse()
    .map((t) => el("option", { value: t }, t)));
}

function showNotes(notes) {
  $("note-name").value = notes.name || "";
  $("note-tags").value = notes.tags.join(", ");
  $("note-text").value = notes.note || "";
  $("note-archived").checked = notes.archived;
  for (const id of ["note-name", "note-tags", "note-text", "note-archived", "note-save"]) $(id).disabled = !EDIT_TOKEN;
  $("note-status").textContent = EDIT_TOKEN ? "" : "read-only: start `flor ui --allow-edit` to name, tag, note or archive runs";
}

async function saveNotes() {
  const tstamp = state.runView;
  $("note-status").textContent = "saving…";
  try {
    const notes = await apiPost(`runs/${encodeURIComponent(tstamp)}/annotations`, {
      name: $("note-name").value, tags: $("note-tags").value.split(",").map((t) => t.trim()).filter(Boolean),
      note: $("note-text").value, archived: $("note-archived").checked,
    });
    showNotes(notes);
    $("note-status").textContent = "saved";
  } catch (error) {
    $("note-status").textContent = error.message;
  }
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
  state.panels = [name];
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
  loadRuns().then(() => { state.routed = true; renderPanels(); drawScatter(); drawParallel(); });
}

async function poll() {
  try {
    const body = await api("version");
    $("live").textContent = `${body.runs} runs` + (body.running ? `, ${body.running} running` : "") + " · live";
    $("live").classList.remove("stale");
    $("project").textContent = body.root;
    const changed = body.version !== state.version;
    if (changed && !state.runView && !state.routed) {
      // The page's first loadRuns is still on its way: a second one would only compete with it.
    } else if (changed && !state.runView) {
      await loadRuns();
      // Redraw only when a charted run is still logging, and never pile up requests: a long
      // running curve takes a while to read.
      const charted = new Set(chartedRuns().map((r) => r.tstamp));
      const running = body.running_runs.some((t) => charted.has(t));
      if (running && !state.views.some((v) => v.busy)) renderPanels(true);
      drawScatter();
      drawParallel();
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

function applyFilter() {
  state.where = $("filter").value.trim();
  state.offset = 0;
  loadRuns().then((ok) => {
    if (!ok) return;
    drawScatter();
    drawParallel();
    if (!state.picked.size) renderPanels();
  });
}

function chartSettingChanged() {
  writeUrl();
  for (const view of state.views) view.zoom = null;
  renderPanels();
}

function wire() {
  $("filter").addEventListener("keydown", (event) => { if (event.key === "Enter") applyFilter(); });
  $("filter").addEventListener("search", () => { if (!$("filter").value && state.where) applyFilter(); });
  const page = (offset) => {
    state.offset = offset;
    loadRuns().then(() => { if (!state.picked.size) renderPanels(); });
  };
  $("prev").addEventListener("click", () => page(Math.max(0, state.offset - PAGE)));
  $("next").addEventListener("click", () => page(state.offset + PAGE));
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
  $("add-panel").addEventListener("change", () => {
    const name = $("add-panel").value;
    if (!name) return;
    state.panels = [...panelMetrics(), name];
    chartSettingChanged();
  });
  $("x-mode").addEventListener("change", () => { state.xmode = $("x-mode").value; chartSettingChanged(); });
  $("smooth").addEventListener("input", () => {
    state.smooth = Number($("smooth").value);
    $("smooth-value").textContent = state.smooth ? String(state.smooth) : "off";
    chartSettingChanged();
  });
  $("logy").addEventListener("change", () => { state.logy = $("logy").checked; chartSettingChanged(); });
  $("group-by").addEventListener("change", () => { state.group = $("group-by").value; chartSettingChanged(); });
  $("clear-selection").addEventListener("click", () => {
    state.picked.clear();
    for (const box of document.querySelectorAll("#runs input.pick")) box.checked = false;
    for (const tr of $("runs").tBodies[0].rows) tr.classList.remove("picked");
    writeUrl();
    renderCompare();
    renderPanels();
  });
  $("compare-diff").addEventListener("change", renderCompare);
  $("show-archived").addEventListener("change", () => { state.archived = $("show-archived").checked; applyFilter(); });
  $("note-save").addEventListener("click", saveNotes);
  const scatterChanged = () => {
    state.scatterX = $("scatter-x").value;
    state.scatterY = $("scatter-y").value;
    writeUrl();
    drawScatter();
  };
  $("scatter-x").addEventListener("change", scatterChanged);
  $("scatter-y").addEventListener("change", scatterChanged);
  $("scatter-logx").addEventListener("change", drawScatter);
  $("pc-metric").addEventListener("change", () => { state.pcMetric = $("pc-metric").value; writeUrl(); drawParallel(); });
  wireParallel();
  $("show-code").addEventListener("click", showCode);
  $("show-diff").addEventListener("click", showDiff);
  $("output-grep").addEventListener("input", outputSearch);
  $("output-stream").addEventListener("change", showOutput);
  window.addEventListener("hashchange", route);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      resizePanels();
      if (state.scatter) state.scatter.setSize({ width: chartWidth($("scatter")), height: 280 });
      drawParallel();
    }, 150);
  });
}

// The settings read from the URL, shown in the controls before the first load.
function showSettings() {
  $("filter").value = state.where;
  $("x-mode").value = state.xmode;
  $("smooth").value = String(state.smooth);
  $("smooth-value").textContent = state.smooth ? String(state.smooth) : "off";
  $("logy").checked = state.logy;
  $("show-archived").checked = state.archived;
}

async function start() {
  const selection = readUrl();
  showSettings();
  wire();
  await restoreSelection(selection);
  route();
  poll();
}

start();
