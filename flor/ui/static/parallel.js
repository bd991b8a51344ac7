/* flor ui: parallel coordinates of the args and one metric over the runs that match the filter,
 * drawn on a canvas (no library). Dragging along a numeric axis brushes a range of it: the table,
 * the count, the scatter and the default chart then show only the runs inside every brushed
 * range (the server applies the brushes, ?brush= in the URL); a click on an axis clears its brush.
 * Loaded before app.js, whose helpers it calls.
 */
"use strict";

const PC_HEIGHT = 260, PC_TOP = 34, PC_BOTTOM = 22, PC_SIDE = 60;

function parallelColumns() {
  const args = state.columns.filter((c) => c.kind === "arg").map((c) => c.name);
  const metric = state.metrics.includes(state.pcMetric) ? state.pcMetric : state.metrics[0];
  return { args, metric, names: metric ? [...args, metric] : args };
}

function renderParallelChoices() {
  const select = $("pc-metric");
  const key = state.metrics.join("\n");
  if (select.dataset.key !== key) {
    select.dataset.key = key;
    select.replaceChildren(...state.metrics.map((m) => el("option", { value: m }, m)));
  }
  select.value = parallelColumns().metric || "";
}

// One axis: how its values map to [0, 1] and back; text values become evenly spaced categories.
function pcAxis(name, values) {
  const present = values.filter((v) => v !== null && v !== undefined);
  if (!present.every((v) => typeof v === "number" || typeof v === "boolean")) {
    const cats = [...new Set(present.map(String))].sort();
    const at = (v) => (v === null || v === undefined ? null : cats.length < 2 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1));
    return { name, cats, at, brushable: false, ticks: cats };
  }
  const nums = present.map(Number).filter(Number.isFinite);
  let min = nums.length ? Math.min(...nums) : 0, max = nums.length ? Math.max(...nums) : 1;
  const log = min > 0 && max / min >= 100;  // a learning rate spanning orders of magnitude
  const f = log ? Math.log10 : (v) => v;
  const lo = f(min), hi = f(max);
  const at = (v) => (v === null || v === undefined || !Number.isFinite(Number(v)) ? null
    : hi === lo ? 0.5 : (f(Number(v)) - lo) / (hi - lo));
  const back = (t) => { const v = lo + t * (hi - lo); return log ? Math.pow(10, v) : v; };
  return { name, at, back, brushable: hi !== lo, ticks: [formatValue(max), formatValue(min)], log };
}

async function drawParallel() {
  const canvas = $("parallel");
  const { names, metric } = parallelColumns();
  if (names.length < 2) {
    canvas.dataset.lines = "0";
    $("pc-note").textContent = "Parallel coordinates need at least two args or an arg and a logged value.";
    return;
  }
  let body;
  try {
    body = await api("values", { names: names.join(","), where: state.where, archived: state.archived ? 1 : "" });
  } catch (error) {
    return;
  }
  const axes = names.map((n) => pcAxis(n, body.columns[n]));
  const width = Math.max(320, canvas.parentElement.clientWidth - 4);
  const ratio = window.devicePixelRatio || 1;
  canvas.width = width * ratio;
  canvas.height = PC_HEIGHT * ratio;
  canvas.style.width = width + "px";
  canvas.style.height = PC_HEIGHT + "px";
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, PC_HEIGHT);
  const xOf = (i) => PC_SIDE + (axes.length === 1 ? 0 : i * (width - 2 * PC_SIDE) / (axes.length - 1));
  const yOf = (t) => PC_HEIGHT - PC_BOTTOM - t * (PC_HEIGHT - PC_TOP - PC_BOTTOM);
  const inside = (i) => names.every((n) => {
    const range = state.brush[n];
    if (!range) return true;
    const v = body.columns[n][i];
    return typeof v === "number" && v >= range[0] && v <= range[1];
  });
  const metricAxis = axes[axes.length - 1];
  let selected = 0;
  const lines = body.runs.map((_, i) => ({ i, on: inside(i) }));
  lines.sort((a, b) => a.on - b.on);  // brushed-in lines on top
  for (const { i, on } of lines) {
    g.beginPath();
    let started = false;
    axes.forEach((axis, k) => {
      const t = axis.at(body.columns[axis.name][i]);
      if (t === null) { started = false; return; }
      if (started) g.lineTo(xOf(k), yOf(t)); else g.moveTo(xOf(k), yOf(t));
      started = true;
    });
    if (on) {
      selected += 1;
      const t = metric ? metricAxis.at(body.columns[metric][i]) : null;
      g.strokeStyle = t === null ? "#57606a" : `hsl(${220 - 220 * t}, 75%, 45%)`;  // blue (low) to red (high)
      g.lineWidth = 1.5;
    } else {
      g.strokeStyle = "rgba(87, 96, 106, 0.15)";
      g.lineWidth = 1;
    }
    g.stroke();
  }
  g.fillStyle = "#1f2328";
  g.font = "12px system-ui, sans-serif";
  g.textAlign = "center";
  axes.forEach((axis, k) => {
    const x = xOf(k);
    g.strokeStyle = "#1f2328";
    g.lineWidth = 1;
    g.beginPath(); g.moveTo(x, yOf(0)); g.lineTo(x, yOf(1)); g.stroke();
    g.fillStyle = k === axes.length - 1 ? "#0a6b5b" : "#8250df";
    g.fillText(axis.name + (axis.log ? " (log)" : ""), x, 14);
    g.fillStyle = "#656d76";
    if (axis.cats) axis.cats.forEach((c) => g.fillText(c, x, yOf(axis.at(c)) - 3));
    else { g.fillText(axis.ticks[0], x, PC_TOP - 6); g.fillText(axis.ticks[1], x, PC_HEIGHT - 6); }
    const range = state.brush[axis.name];
    if (range && axis.back) {
      const top = yOf(Math.min(1, Math.max(0, axis.at(range[1])))), bottom = yOf(Math.min(1, Math.max(0, axis.at(range[0]))));
      g.fillStyle = "rgba(9, 105, 218, 0.18)";
      g.fillRect(x - 7, top, 14, Math.max(2, bottom - top));
    }
  });
  state.pcAxes = { axes, xOf, yOf };
  canvas.dataset.lines = String(body.runs.length);
  canvas.dataset.selected = String(selected);
  const brushed = Object.keys(state.brush);
  $("pc-note").textContent = `${body.runs.length} run(s) that match the filter; ` +
    (brushed.length ? `${selected} inside the brushed range of ${brushed.join(", ")} (click an axis to clear it)`
      : "drag along an axis to keep a range of it");
}

// Drag along an axis to brush it; a click without a drag clears that axis.
function wireParallel() {
  const canvas = $("parallel");
  let drag = null;
  const axisAt = (event) => {
    if (!state.pcAxes) return null;
    const box = canvas.getBoundingClientRect();
    const x = event.clientX - box.left, y = event.clientY - box.top;
    const k = state.pcAxes.axes.findIndex((_, i) => Math.abs(state.pcAxes.xOf(i) - x) <= 14);
    return k < 0 ? null : { k, y };
  };
  canvas.addEventListener("mousedown", (event) => {
    const hit = axisAt(event);
    if (hit) { drag = hit; event.preventDefault(); }
  });
  window.addEventListener("mouseup", (event) => {
    if (!drag) return;
    const { k, y } = drag;
    drag = null;
    const axis = state.pcAxes.axes[k];
    const box = canvas.getBoundingClientRect();
    const y2 = event.clientY - box.top;
    if (Math.abs(y2 - y) < 4 || !axis.brushable) {
      delete state.brush[axis.name];
    } else {
      const { yOf } = state.pcAxes;
      const tOf = (py) => Math.min(1, Math.max(0, (yOf(0) - py) / (yOf(0) - yOf(1))));
      const a = axis.back(tOf(y)), b = axis.back(tOf(y2));
      state.brush[axis.name] = [Math.min(a, b), Math.max(a, b)];
    }
    state.offset = 0;
    writeUrl();
    loadRuns().then(() => { drawScatter(); if (!state.picked.size) renderPanels(); });
    drawParallel();
  });
}
