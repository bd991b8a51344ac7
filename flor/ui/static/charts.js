/* flor ui: the metric panels. Loaded before app.js, whose helpers (api, el, state, formatValue)
 * these functions call when they run.
 *
 * Each panel charts one logged name over the charted runs: the ticked runs, or when none are
 * ticked the runs visible in the table (so the page opens on a chart). Values are placed by
 * iteration, step or wall time (the server's axes.py); a null y from the server marks missing
 * iterations and is drawn as a gap, never bridged; smoothing is an exponential moving average
 * (debiased, restarted after a gap); grouping by an arg draws each group's mean and a band from
 * its minimum to its maximum.
 */
"use strict";

const INTEGER_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5,
  1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8];
const CHART_HEIGHT = 280;
const MARKERS_UNDER = 20;  // a curve of this few values shows a marker at each (one epoch: one point)

function chartedRuns() {
  if (state.picked.size) return [...state.picked.entries()].map(([tstamp, row]) => ({ tstamp, row }));
  const at = state.columns.findIndex((c) => c.name === "tstamp");
  return state.rows.map((values, i) => ({ tstamp: values[at], row: rowObject(values, state.sources[i]) }));
}

function panelMetrics() {
  if (state.panels.length) return state.panels.filter((name) => name !== "-");
  return state.metrics.length ? [state.metrics[0]] : [];
}

function chartWidth(node) {
  return Math.max(320, (node.parentElement || node).clientWidth - 4);
}

function panelKey() {
  return panelMetrics().join("\n") + "\u0000" + state.metrics.join("\n");
}

// Panels whose names are not built yet (the logged names arrived after the first rows).
function panelsStale() {
  return $("panels").dataset.key !== panelKey();
}

// Rebuild the panels when their names changed, then draw them all.
function renderPanels(keepZoom) {
  const names = panelMetrics();
  const box = $("panels");
  const key = panelKey();
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    for (const view of state.views) if (view.chart) view.chart.destroy();
    state.views = names.map((name, index) => makePanel(name, index));
    box.replaceChildren(...state.views.map((view) => view.node));
    const adder = $("add-panel");
    adder.replaceChildren(el("option", { value: "" }, "+ add a chart…"),
      ...state.metrics.filter((m) => !names.includes(m)).map((m) => el("option", { value: m }, m)));
    adder.value = "";
    keepZoom = false;
  }
  $("charts-empty").hidden = state.views.length > 0;
  for (const view of state.views) drawPanel(view, keepZoom);
}

function makePanel(name, index) {
  const select = el("select", { class: "metric", title: "the logged name this chart shows" },
    state.metrics.map((m) => el("option", { value: m }, m)));
  select.value = name;
  const chartNode = el("div", { class: "chart", dataset: { points: "0", request: "0", drawn: "0" } });
  const note = el("div", { class: "note chart-note" }, "");
  const view = { name, index, chart: null, zoom: null, request: 0, busy: false, chartNode, note };
  select.addEventListener("change", () => {
    const names = panelMetrics().slice();
    names[index] = select.value;
    state.panels = names;
    writeUrl();
    renderPanels();
  });
  const remove = el("button", { type: "button", class: "remove-panel", title: "remove this chart",
    onclick: () => {
      state.panels = panelMetrics().filter((_, i) => i !== index);
      if (!state.panels.length) state.panels = ["-"];  // "-": no chart at all (not the default one)
      writeUrl();
      renderPanels();
    } }, "×");
  const reset = el("button", { type: "button", class: "reset-zoom", title: "drag across the chart to zoom",
    onclick: () => { view.zoom = null; drawPanel(view, true); } }, "reset zoom");
  view.node = el("div", { class: "panel", dataset: { metric: name } },
    el("div", { class: "toolbar" }, select, reset, remove), chartNode, note);
  return view;
}

// Debiased exponential moving average (as TensorBoard's), restarted after each gap.
function smoothed(ys, weight) {
  if (!weight) return ys;
  let last = 0, n = 0;
  return ys.map((v) => {
    if (v === null || v === undefined || !Number.isFinite(v)) { last = 0; n = 0; return v; }
    last = last * weight + (1 - weight) * v;
    n += 1;
    return last / (1 - Math.pow(weight, n));
  });
}

function countValues(ys) {
  return ys.reduce((n, v) => n + (v === null || v === undefined ? 0 : 1), 0);
}

function sourceLabel(source) {
  return source === "replay" ? " (replayed)" : source === "extract" ? " (extracted)" : "";
}

// One line per run and source (recorded solid, replayed dashed, extracted dotted); with smoothing,
// the raw values stay behind the smoothed line, faint.
function runSeries(body, colors) {
  const tables = [], series = [];
  for (const run of body.series) {
    for (const part of run.parts) {
      const replay = part.source === "replay", extract = part.source === "extract";
      const color = colors.get(run.run);
      const common = {
        stroke: color, dash: replay ? [6, 4] : extract ? [2, 3] : undefined, spanGaps: false,
        value: (u, v) => (v === null || v === undefined ? "–" : formatValue(v)),
      };
      const markers = { show: countValues(part.y) <= MARKERS_UNDER, size: 6, fill: color };
      if (state.smooth > 0) {
        tables.push([part.x, part.y]);
        series.push({ ...common, label: run.run + sourceLabel(part.source) + " raw", stroke: color + "40", width: 1,
          points: { show: false } });
      }
      tables.push([part.x, smoothed(part.y, state.smooth)]);
      series.push({ ...common, label: run.run + sourceLabel(part.source), width: replay || extract ? 2 : 1.5,
        points: markers });
    }
  }
  return { tables, series, bands: [] };
}

// Runs grouped by the value of one arg: per group, the mean at each x over the runs that have a
// value there, and a band from the minimum to the maximum.
function groupedSeries(body, runs, colors) {
  const argOf = new Map(runs.map((r) => [r.tstamp, r.row[state.group]]));
  const groups = new Map();
  for (const run of body.series) {
    const key = JSON.stringify(argOf.has(run.run) ? argOf.get(run.run) ?? null : null);
    if (!groups.has(key)) groups.set(key, { runs: 0, at: new Map() });
    const group = groups.get(key);
    group.runs += 1;
    // The run's recorded values, or where it has none, its replayed or extracted ones.
    const parts = run.parts.filter((p) => p.source === "record");
    for (const part of parts.length ? parts : run.parts) {
      const ys = smoothed(part.y, state.smooth);
      part.x.forEach((x, i) => {
        if (!group.at.has(x)) group.at.set(x, []);
        if (ys[i] !== null && ys[i] !== undefined && Number.isFinite(ys[i])) group.at.get(x).push(ys[i]);
      });
    }
  }
  const tables = [], series = [], bands = [];
  [...groups.entries()].sort().forEach(([key, group], g) => {
    const xs = [...group.at.keys()].sort((a, b) => a - b);
    const stats = xs.map((x) => group.at.get(x));
    const mean = stats.map((v) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : null));
    const low = stats.map((v) => (v.length ? Math.min(...v) : null));
    const high = stats.map((v) => (v.length ? Math.max(...v) : null));
    const color = COLORS[g % COLORS.length];
    const label = `${state.group}=${key === "null" ? "(none)" : formatValue(JSON.parse(key))}`;
    const base = 1 + series.length;
    tables.push([xs, mean, low, high]);
    const value = (u, v) => (v === null || v === undefined ? "–" : formatValue(v));
    series.push({ label: `${label} mean of ${group.runs}`, stroke: color, width: 2, spanGaps: false, value,
      points: { show: countValues(mean) <= MARKERS_UNDER, size: 6, fill: color } });
    series.push({ label: `${label} min`, stroke: color + "30", width: 1, spanGaps: false, value, points: { show: false },
      band: true });
    series.push({ label: `${label} max`, stroke: color + "30", width: 1, spanGaps: false, value, points: { show: false },
      band: true });
    bands.push({ series: [base + 2, base + 1], fill: color + "22" });
  });
  return { tables, series, bands, groups: groups.size };
}

async function drawPanel(view, keepZoom) {
  const node = view.chartNode;
  const request = ++view.request;
  node.dataset.request = String(request);
  const runs = chartedRuns().slice(0, MAX_CHARTED);
  if (!runs.length || !view.name) {
    if (view.chart) { view.chart.destroy(); view.chart = null; }
    node.dataset.points = "0";
    node.dataset.drawn = String(request);
    view.note.textContent = view.name ? "No runs match the filter." : "No numeric values logged yet.";
    return;
  }
  if (state.loading && !state.chartsReady) {
    // Until the server has read every run's logged values it cannot find a run's rows quickly
    // in a store without the index by run and name (each curve would be a scan of the store);
    // loadRuns draws again once it is done. With the index, the chart is drawn at once.
    view.note.textContent = "reading logged values…";
    return;
  }
  const zoom = keepZoom ? view.zoom : null;
  let body;
  view.busy = true;
  try {
    body = await api("series", { runs: runs.map((r) => r.tstamp).join(","), name: view.name, x: state.xmode,
      points: Math.round(chartWidth(node) * 2), xmin: zoom ? zoom[0] : "", xmax: zoom ? zoom[1] : "" });
  } catch (error) {
    if (request === view.request) { view.note.textContent = error.message; node.dataset.drawn = String(request); }
    return;
  } finally {
    view.busy = false;
  }
  if (request !== view.request) return;  // a newer request superseded this one

  const colors = new Map(runs.map((r, i) => [r.tstamp, COLORS[i % COLORS.length]]));
  const built = state.group ? groupedSeries(body, runs, colors) : runSeries(body, colors);
  let points = 0, total = 0, inRange = 0, gaps = 0;
  const runLevel = [], lasts = [];
  for (const run of body.series) {
    for (const part of run.parts) {
      points += countValues(part.y);
      total += part.total;
      inRange += part.in_range;
      gaps += part.gaps || 0;
    }
    if (run.run_level !== null && run.run_level !== undefined) runLevel.push(`${run.run}: ${formatValue(run.run_level)}`);
    // The run's last value as the table shows it (at its last iteration), beside the legend.
    if (run.last && run.last.value !== null && run.last.value !== undefined) {
      lasts.push(`${run.run}: ${formatValue(run.last.value)}` +
        (run.last.source === "record" ? "" : ` (${run.last.source === "extract" ? "extracted" : "replayed"})`));
    }
  }
  const charted = state.picked.size ? `${runs.length} selected run(s)` : `the ${runs.length} run(s) shown in the table`;
  view.note.textContent = built.tables.length
    ? `${body.name} against ${body.x_label} over ${charted}: ${total.toLocaleString()} values, ${points.toLocaleString()} drawn` +
      (built.groups ? `, in ${built.groups} group(s) by ${state.group} (mean, band from min to max)` : "") +
      (state.smooth > 0 ? `, smoothed ${state.smooth}` : "") +
      (zoom ? `; ${inRange.toLocaleString()} in the zoomed range` : "") +
      (points < inRange ? " (min and max per bucket; zoom in for detail)" : "") +
      (gaps ? `; ${gaps} gap(s) where iterations have no value` : "") +
      (runLevel.length ? `. Logged once per run: ${runLevel.slice(0, 10).join(", ")}` : "") +
      (lasts.length && lasts.length <= 10 ? `. Last values: ${lasts.join(", ")}` : "")
    : `${body.name} is logged only once per run: ${runLevel.slice(0, 20).join(", ") || "no numeric values"}`;

  const data = built.tables.length ? uPlot.join(built.tables) : [[]];
  const series = [{ label: body.x_label }, ...built.series];
  const shape = series.map((s) => s.label).join("\n") + `\n${body.x_label}\n${state.logy}`;
  if (view.chart && view.shape === shape && keepZoom) {
    view.chart.setData(data, !zoom);
    if (zoom) view.chart.setScale("x", { min: zoom[0], max: zoom[1] });
  } else {
    if (view.chart) view.chart.destroy();
    view.chart = new uPlot(panelOptions(view, series, built.bands, body), data, node);
    view.shape = shape;
  }
  // The band's edges stay out of the legend: it lists each group's mean (and how many runs).
  const legendRows = node.querySelectorAll(".u-legend .u-series");
  series.forEach((s, i) => { if (s.band && legendRows[i]) legendRows[i].style.display = "none"; });
  node.dataset.points = String(points);
  node.dataset.series = String(built.series.length);
  node.dataset.drawn = String(request);
  // For benchmarks/ui_scale.py: when the first chart was drawn, from navigation start.
  if (!performance.getEntriesByName("flor-first-chart").length) performance.mark("flor-first-chart");
}

function panelOptions(view, series, bands, body) {
  let zoomTimer = null;
  const node = view.chartNode;
  const xValues = (u, splits) => {
    node.dataset.xticks = splits.join(",");
    return splits.map((v) => formatValue(v));
  };
  return {
    width: chartWidth(node), height: CHART_HEIGHT,
    scales: { x: { time: false }, y: { distr: state.logy ? 3 : 1 } },
    // Loop indices are whole numbers: no tick at epoch 0.25.
    axes: [body.integer_x ? { label: body.x_label, incrs: INTEGER_INCRS, values: xValues }
      : { label: body.x_label, values: xValues }, { label: body.name, size: 70 }],
    series, bands,
    // The page zooms itself (setScale: false) so that it can fetch the range again at full
    // detail: downsampling hid what lies between the kept points.
    cursor: { drag: { x: true, y: false, setScale: false }, sync: { key: "flor-panels" } },
    legend: { live: true },
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 2) return;
        const min = u.posToVal(u.select.left, "x"), max = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
        u.setScale("x", { min, max });
        clearTimeout(zoomTimer);
        zoomTimer = setTimeout(() => { view.zoom = [min, max]; drawPanel(view, true); }, 50);
      }],
    },
  };
}

function renderGroupChoices() {
  const select = $("group-by");
  const args = state.columns.filter((c) => c.kind === "arg").map((c) => c.name);
  const key = args.join("\n");
  if (select.dataset.key !== key) {
    select.dataset.key = key;
    select.replaceChildren(el("option", { value: "" }, "(no grouping)"), ...args.map((a) => el("option", { value: a }, a)));
  }
  select.value = args.includes(state.group) ? state.group : "";
}

function resizePanels() {
  for (const view of state.views) {
    if (view.chart) view.chart.setSize({ width: chartWidth(view.chartNode), height: CHART_HEIGHT });
  }
}
