"""Benchmark of ``flor ui``: is the runs table usable within 1 s, and does a long chart draw in 1 s?

    .venv/bin/python benchmarks/ui.py               # 10,000 runs x (20 args + 20 metrics), 1,000,000 steps
    .venv/bin/python benchmarks/ui.py --quick       # smaller store, for a smoke test

It builds a synthetic store (written through flor's own schema, no training) with
``--runs`` runs, each with ``--args`` args and ``--metrics`` metrics logged once per epoch for
``--epochs`` epochs, plus one run that logs ``loss`` at ``--steps`` steps. Then, ``--repeat``
times, alternately:

- API: the time of ``GET /api/runs`` (first page, default sort) and of ``GET /api/series`` for
  the long run, from a fresh server (cold: the first request reads the store) and warm;
- browser: headless chromium opens the page and the time until the first table rows are in the
  DOM; then the long run is selected and the time until its curve is drawn.

The table goes into the ``ui`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import fmt_range, machine, write_section  # noqa: E402

from flor.store import Store  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def build_store(root: Path, runs: int, n_args: int, n_metrics: int, epochs: int, steps: int) -> Path:
    """Write a synthetic project store under ``root/.flor/flor.db``; return its path."""
    path = root / ".flor" / "flor.db"
    Store.open(path).close()  # creates the schema exactly as a recording run would
    connection = sqlite3.connect(str(path), isolation_level=None)
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("BEGIN")
    rng = random.Random(7)
    start = 1_790_000_000.0
    arg_names = [f"arg{i:02d}" for i in range(n_args)]
    metric_names = ["accuracy", "loss"] + [f"metric{i:02d}" for i in range(n_metrics - 2)]
    for run_id in range(1, runs + 2):
        started = start + run_id * 60
        tstamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
        connection.execute(
            "INSERT INTO runs(run_id, tstamp, projid, filename, argv, cwd, code_commit, status, started, ended, "
            "heartbeat, pid, host) VALUES (?, ?, 'bench', 'train.py', '[]', '.', ?, 'finished', ?, ?, ?, NULL, 'bench')",
            (run_id, tstamp, f"{run_id:040x}", started, started + 50, started + 50),
        )
        connection.executemany(
            "INSERT INTO args(run_id, name, value, vtype) VALUES (?, ?, ?, ?)",
            [(run_id, "lr", 10 ** rng.uniform(-4, -1), "float")]
            + [(run_id, name, rng.randint(1, 1000), "int") for name in arg_names[1:]],
        )
        if run_id == runs + 1:
            # The long run: one top-level loop of `steps` iterations, `loss` at each.
            connection.execute(
                "INSERT INTO contexts(run_id, ctx_id, parent_id, parent_iteration, loop_name, t_start, t_end, "
                "iterations) VALUES (?, 1, NULL, NULL, 'step', 0, ?, ?)", (run_id, steps * 1e-3, steps),
            )
            connection.executemany(
                "INSERT INTO iterations(run_id, ctx_id, iteration, t) VALUES (?, 1, ?, ?)",
                ((run_id, i, i * 1e-3) for i in range(steps)),
            )
            connection.executemany(
                "INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype) VALUES (?, 1, ?, 'loss', ?, 'float')",
                ((run_id, i, 2.0 / (1 + i / 1000) + rng.random() * 0.1) for i in range(steps)),
            )
            continue
        connection.execute(
            "INSERT INTO contexts(run_id, ctx_id, parent_id, parent_iteration, loop_name, t_start, t_end, "
            "iterations) VALUES (?, 1, NULL, NULL, 'epoch', 0, ?, ?)", (run_id, epochs * 5.0, epochs),
        )
        connection.executemany(
            "INSERT INTO iterations(run_id, ctx_id, iteration, t) VALUES (?, 1, ?, ?)",
            [(run_id, e, e * 5.0) for e in range(epochs)],
        )
        connection.executemany(
            "INSERT INTO logs(run_id, ctx_id, iteration, name, value, vtype) VALUES (?, 1, ?, ?, ?, 'float')",
            [(run_id, e, name, rng.random()) for e in range(epochs) for name in metric_names],
        )
    connection.execute("COMMIT")
    connection.execute("ANALYZE")
    connection.close()
    return path


class Server:
    """``flor ui`` in a thread of this process, on a free loopback port."""

    def __init__(self, root: Path) -> None:
        from flor.ui.server import make_server

        self.server, self.app = make_server(root / ".flor" / "flor.db", root, host="127.0.0.1", port=0)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def get(self, path: str) -> tuple[float, bytes]:
        """(wall seconds, body) of one GET; the CPU seconds it cost go to ``self.cpu``."""
        began, cpu = time.perf_counter(), time.process_time()
        with urllib.request.urlopen(self.url + path) as response:
            body = response.read()
        # The server runs in this process, so process CPU time is the request's own work,
        # whatever else competes for the CPUs.
        self.cpu = time.process_time() - cpu
        return time.perf_counter() - began, body

    def close(self) -> None:
        self.server.shutdown()
        self.app.config["FLOR_DATA"].close()


@contextlib.contextmanager
def launched_browser():
    """Headless chromium, launched once for all repetitions."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def chromium_version() -> str:
    import subprocess

    try:
        out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return ""
    return out.split()[1] if len(out.split()) > 1 else ""


def browser_times(browser, url: str, long_run: str) -> tuple[float, float, float, float]:
    """In a fresh tab: seconds to the first table rows as the page measures them from navigation
    start; the same seen from outside; seconds to the rows with every logged column; seconds
    from ticking the long run to its curve drawn."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    began = time.perf_counter()
    # The page opens on a chart of the visible runs; `accuracy` keeps the long run's `loss` out
    # of it, so that the curve measured below is fetched cold.
    page.goto(url + "/?charts=accuracy")
    page.wait_for_selector("#runs tbody tr[data-tstamp]", timeout=30_000)
    outside = time.perf_counter() - began
    inside = page.evaluate("() => performance.getEntriesByName('flor-first-rows')[0].startTime") / 1000
    page.wait_for_function("() => performance.getEntriesByName('flor-all-columns').length > 0", timeout=120_000)
    complete = page.evaluate("() => performance.getEntriesByName('flor-all-columns')[0].startTime") / 1000
    page.fill("#filter", f"tstamp == '{long_run}'")
    page.press("#filter", "Enter")
    page.wait_for_selector(f"#runs tbody tr[data-tstamp='{long_run}'] input.pick", timeout=30_000)
    page.check(f"#runs tbody tr[data-tstamp='{long_run}'] input.pick")
    began = time.perf_counter()
    page.select_option(".panel select.metric", "loss")
    page.wait_for_function(
        "() => { const c = document.querySelector('.panel .chart'); return c && Number(c.dataset.points) > 0 "
        "&& c.dataset.drawn === c.dataset.request; }", timeout=30_000,
    )
    chart = time.perf_counter() - began
    context.close()
    return inside, outside, complete, chart


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--args", type=int, default=20)
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 runs and 100,000 steps; RESULTS.md untouched")
    parser.add_argument("--no-browser", action="store_true", help="API timings only")
    options = parser.parse_args()
    if options.quick:
        options.runs, options.steps, options.repeat = 1000, 100_000, 2

    scratch = Path(tempfile.mkdtemp(prefix="flor-ui-bench-"))
    try:
        began = time.perf_counter()
        path = build_store(scratch, options.runs, options.args, options.metrics, options.epochs, options.steps)
        built = time.perf_counter() - began
        rows = sqlite3.connect(str(path)).execute("SELECT COUNT(*) FROM logs").fetchone()[0]
        print(f"store: {options.runs + 1} runs, {rows:,} log rows, {path.stat().st_size / 1e6:.0f} MB, built in {built:.1f}s")
        long_run = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_790_000_000.0 + (options.runs + 1) * 60))
        use_browser = (not options.no_browser and Path(CHROMIUM).exists()
                       and importlib.util.find_spec("playwright") is not None)
        load_before = os.getloadavg()[0]
        timings: dict[str, list[float]] = {k: [] for k in (
            "start", "runs_first", "loaded", "runs_sorted", "runs_filtered", "series_cold", "series_zoom",
            "page_rows", "page_rows_outside", "page_complete", "page_chart",
        )}
        cpu_times: dict[str, list[float]] = {k: [] for k in timings}
        sizes = {}
        with contextlib.ExitStack() as stack:
            browser = stack.enter_context(launched_browser()) if use_browser else None
            for rep in range(options.repeat):
                # The API and the page alternate, each against a fresh server (empty caches).
                began, cpu = time.perf_counter(), time.process_time()
                server = Server(scratch)
                timings["start"].append(time.perf_counter() - began)
                cpu_times["start"].append(time.process_time() - cpu)
                seconds, body = server.get("/api/runs?limit=100&sort=tstamp&desc=1")
                timings["runs_first"].append(seconds)
                cpu_times["runs_first"].append(server.cpu)
                sizes["runs"] = len(body)
                server.app.config["FLOR_DATA"].table.wait_loaded()
                timings["loaded"].append(time.perf_counter() - began)
                cpu_times["loaded"].append(time.process_time() - cpu)
                where = urllib.request.quote("accuracy > 0.9 and lr < 0.01")
                requests = {
                    "runs_sorted": "/api/runs?limit=100&sort=accuracy&desc=1",
                    "runs_filtered": f"/api/runs?limit=100&where={where}",
                    "series_cold": f"/api/series?runs={long_run}&name=loss&points=2000",
                    "series_zoom": f"/api/series?runs={long_run}&name=loss&points=2000&xmin=1000&xmax=200000",
                }
                try:
                    for key, request_path in requests.items():
                        seconds, body = server.get(request_path)
                        timings[key].append(seconds)
                        cpu_times[key].append(server.cpu)
                        if key == "series_cold":
                            sizes["series_points"] = json.loads(body)["series"][0]["parts"][0]["shown"]
                finally:
                    server.close()
                if browser is not None:
                    server = Server(scratch)
                    try:
                        inside, outside, complete, chart = browser_times(browser, server.url, long_run)
                        timings["page_rows"].append(inside)
                        timings["page_rows_outside"].append(outside)
                        timings["page_complete"].append(complete)
                        timings["page_chart"].append(chart)
                    finally:
                        server.close()
                print(f"repetition {rep + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in timings.items() if v),
                      flush=True)

        labels = {
            "start": "server start: runs and args read, address printed (logged values still being read)",
            "runs_first": "API `/api/runs`, first page of 100, right after start (runs and args)",
            "loaded": "server start -> every run's last logged values read (one pass over the logs, in the background)",
            "runs_sorted": "API `/api/runs` sorted by a metric",
            "runs_filtered": "API `/api/runs?where=accuracy > 0.9 and lr < 0.01`",
            "series_cold": f"API `/api/series` of the {options.steps:,}-step run, 2,000 points, first request",
            "series_zoom": "API `/api/series` zoomed to steps 1,000-200,000 (curve cached)",
            "page_rows": "**browser: navigation start -> first table rows rendered** (measured in the page, fresh server)",
            "page_rows_outside": "browser: the same, seen from the test driver (goto -> rows in the DOM)",
            "page_complete": "browser: navigation start -> rows with every logged column (fresh server)",
            "page_chart": f"**browser: run ticked, `loss` chosen -> its {options.steps:,}-step curve drawn** (fetch + downsample + draw)",
        }
        lines = [
            "## flor ui",
            "",
            f"Store: {options.runs:,} runs with {options.args} args and {options.metrics} metrics each "
            f"(each metric logged at {options.epochs} epochs), plus one run of {options.steps:,} steps; "
            f"{rows:,} log rows, {path.stat().st_size / 1e6:.0f} MB. Each repetition starts a fresh server. "
            f"Medians (min-max) of {options.repeat} repetitions, in ms. Target: under 1,000 ms. "
            "*CPU ms* is the CPU time the server spent (it runs in the benchmark's process), which does "
            "not grow when other work competes for the CPUs; browser rows include chromium's own work.",
            "",
            "| measurement | wall ms | CPU ms |",
            "|---|---|---|",
        ]
        for key, label in labels.items():
            if timings[key]:
                cpu = fmt_range(cpu_times[key], 1000, 0) if cpu_times[key] else "-"
                lines.append(f"| {label} | {fmt_range(timings[key], 1000, 0)} | {cpu} |")
        if not use_browser:
            lines.append("| browser timings | skipped: chromium or playwright missing | |")
        lines += [
            "",
            f"First page of runs: {sizes.get('runs', 0) / 1e3:.0f} kB of JSON; the chart gets "
            f"{sizes.get('series_points', 0):,} points (min and max per bucket). Headless chromium "
            f"{chromium_version()} via playwright.",
            "",
            f"Machine: {machine()}; load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after "
            "(other work shared the CPUs, so these are upper bounds). Command: `.venv/bin/python benchmarks/ui.py"
            + "".join(" " + a for a in sys.argv[1:]) + "`",
        ]
        markdown = "\n".join(lines)
        print(markdown)
        if not options.quick:
            write_section("ui", markdown)
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
