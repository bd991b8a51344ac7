"""Benchmark of ``flor ui`` at scale: 10,000 runs and 1,000,000 logged values. Are the first rows
on screen within 1 s, and is a chart of 100 runs drawn within 1 s?

    .venv/bin/python benchmarks/ui_scale.py            # 10,000 runs x 10 metrics x 10 epochs
    .venv/bin/python benchmarks/ui_scale.py --quick    # 1,000 runs, RESULTS.md untouched

The store is built as benchmarks/ui.py builds it (flor's schema, no training): ``--runs`` runs
with ``--args`` args and ``--metrics`` metrics logged once per epoch for ``--epochs`` epochs
(10,000 x 10 x 10 = 1,000,000 values). Then, ``--repeat`` times, alternately, each against a
fresh server:

- API: ``GET /api/runs`` (first page of 100) right after the server starts, then ``GET
  /api/series`` of one metric over the 100 runs of that page (the chart the page opens on) while
  the background pass over the logs still runs; after the pass, the same series again, curves
  not cached;
- browser: headless chromium opens the page: navigation start -> first table rows, and ->
  the first chart drawn (the first metric over the 100 visible runs, as the page opens); then
  another metric chosen in the panel -> its chart of 100 runs drawn.

The table goes into the ``ui_scale`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import fmt_range, machine, write_section  # noqa: E402
from ui import CHROMIUM, Server, build_store, chromium_version, launched_browser  # noqa: E402

CHARTED = 100


def page_times(browser, url: str) -> tuple[float, float, float]:
    """In a fresh tab: seconds from navigation start to the first rows and to the first chart
    (the page's own marks), then from choosing another metric to its chart of 100 runs drawn."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(url + "/")
    page.wait_for_selector("#runs tbody tr[data-tstamp]", timeout=30_000)
    rows = page.evaluate("() => performance.getEntriesByName('flor-first-rows')[0].startTime") / 1000
    page.wait_for_function("() => performance.getEntriesByName('flor-first-chart').length > 0", timeout=120_000)
    first_chart = page.evaluate("() => performance.getEntriesByName('flor-first-chart')[0].startTime") / 1000
    series = page.eval_on_selector(".panel .chart", "c => Number(c.dataset.series)")
    if series < CHARTED - 1:  # build_store's newest run logs only `loss`: 99 curves of `accuracy`
        raise RuntimeError(f"the first chart has {series} curves, not {CHARTED - 1}")
    began = time.perf_counter()
    page.select_option(".panel select.metric", "loss")
    page.wait_for_function(
        "() => { const c = document.querySelector('.panel .chart'); return c.dataset.drawn === c.dataset.request "
        "&& c.dataset.drawn !== '0' && document.querySelector('.panel').dataset.metric === 'loss'; }", timeout=30_000,
    )
    chart = time.perf_counter() - began
    context.close()
    return rows, first_chart, chart


def write_cost(repeat: int) -> int:
    """What the logs index by run and name (migration 11) costs a recording: ``Store.write_batch``
    of 200 batches of 1,000 plain values into a fresh store, alternately without and with it."""
    from flor.store import Store

    def once(indexed: bool) -> float:
        scratch = Path(tempfile.mkdtemp(prefix="flor-ui-index-"))
        try:
            store = Store.open(scratch / "flor.db")
            if not indexed:
                store.connection.execute("DROP INDEX logs_by_run_name")
            run_id, _ = store.insert_run(tstamp="t", projid="p", filename="t.py", argv=[], cwd=".", started=0.0, args=())
            batches = [[(f"m{k}", 0.5 + i, 1, b * 100 + i) for i in range(100) for k in range(10)] for b in range(200)]
            began = time.perf_counter()
            for logs in batches:
                store.write_batch(run_id, [], logs)
            took = time.perf_counter() - began
            store.close()
            return took
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    load_before = os.getloadavg()[0]
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeat):
        for indexed in (False, True):
            times[indexed].append(once(indexed))
    markdown = "\n".join([
        "## Cost of the logs index by run and name to a recording (issue 32, migration 11)",
        "",
        f"`Store.write_batch` of 200 batches of 1,000 plain values (10 names) into a fresh store, alternately "
        f"without and with `logs_by_run_name`; medians (min-max) of {repeat} repetitions, wall s.",
        "",
        "| store | wall s | per value |",
        "|---|---|---|",
        *[f"| {'with' if indexed else 'without'} the index | {fmt_range(times[indexed], 1, 3)} | "
          f"{sorted(times[indexed])[len(times[indexed]) // 2] / 200_000 * 1e6:.1f} µs |" for indexed in (False, True)],
        "",
        f"Machine: {machine()}; load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after. "
        "Command: `.venv/bin/python benchmarks/ui_scale.py --write-cost`",
    ])
    print(markdown)
    write_section("ui_index_cost", markdown)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--args", type=int, default=5)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 runs, 2 repetitions; RESULTS.md untouched")
    parser.add_argument("--write-cost", action="store_true",
                        help="measure what the logs index costs a recording instead (section ui_index_cost)")
    options = parser.parse_args()
    if options.write_cost:
        return write_cost(options.repeat)
    if options.quick:
        options.runs, options.repeat = 1000, 2

    scratch = Path(tempfile.mkdtemp(prefix="flor-ui-scale-"))
    try:
        # steps=1: build_store's long run, here a single value, keeps the store at runs x metrics x epochs.
        path = build_store(scratch, options.runs, options.args, options.metrics, options.epochs, 1)
        values = sqlite3.connect(str(path)).execute("SELECT COUNT(*) FROM logs").fetchone()[0]
        print(f"store: {options.runs + 1} runs, {values:,} values, {path.stat().st_size / 1e6:.0f} MB", flush=True)
        use_browser = Path(CHROMIUM).exists() and importlib.util.find_spec("playwright") is not None
        load_before = os.getloadavg()[0]
        keys = ("runs_first", "series_early", "loaded", "series_100", "page_rows", "page_first_chart",
                "page_chart_100")
        early_runs = 0  # repetitions whose early series was answered before the pass ended
        timings: dict[str, list[float]] = {k: [] for k in keys}
        with contextlib.ExitStack() as stack:
            browser = stack.enter_context(launched_browser()) if use_browser else None
            for rep in range(options.repeat):
                began = time.perf_counter()
                server = Server(scratch)
                try:
                    seconds, body = server.get("/api/runs?limit=100&sort=tstamp&desc=1")
                    timings["runs_first"].append(seconds)
                    tstamps = [row[0] for row in json.loads(body)["rows"]]
                    seconds, body = server.get(f"/api/series?runs={','.join(tstamps)}&name=accuracy&points=2000")
                    if len(json.loads(body)["series"]) != CHARTED:
                        raise RuntimeError("the early series answer lacks runs")
                    timings["series_early"].append(seconds)
                    early_runs += server.app.config["FLOR_DATA"].table.loading
                    server.app.config["FLOR_DATA"].table.wait_loaded()
                    timings["loaded"].append(time.perf_counter() - began)
                    page = json.loads(server.get("/api/runs?limit=100&sort=tstamp&desc=1")[1])
                    tstamps = [row[0] for row in page["rows"]]
                    seconds, body = server.get(f"/api/series?runs={','.join(tstamps)}&name=accuracy&points=2000")
                    if len(json.loads(body)["series"]) != CHARTED:
                        raise RuntimeError("the series answer lacks runs")
                    timings["series_100"].append(seconds)
                finally:
                    server.close()
                if browser is not None:
                    server = Server(scratch)
                    try:
                        rows, first_chart, chart = page_times(browser, server.url)
                        timings["page_rows"].append(rows)
                        timings["page_first_chart"].append(first_chart)
                        timings["page_chart_100"].append(chart)
                    finally:
                        server.close()
                print(f"repetition {rep + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in timings.items() if v),
                      flush=True)
        labels = {
            "runs_first": "API `/api/runs`, first page of 100, right after the server started",
            "series_early": f"API `/api/series` of `accuracy` over the {CHARTED} runs of the first page, right after "
                            "(the pass over the logs still running)",
            "loaded": "server start -> every run's last logged values read (the background pass over the logs)",
            "series_100": f"API `/api/series` of `accuracy` over the {CHARTED} runs of the first page (not cached)",
            "page_rows": "**browser: navigation start -> first table rows rendered** (fresh server)",
            "page_first_chart": f"**browser: navigation start -> the chart the page opens on ({CHARTED} runs) drawn** "
                                "(no longer waits for the pass over the logs)",
            "page_chart_100": f"**browser: another metric chosen -> its chart of {CHARTED} runs drawn**",
        }
        lines = [
            "## flor ui at scale (issue 32)",
            "",
            f"Store: {options.runs:,} runs with {options.args} args and {options.metrics} metrics each, each metric "
            f"logged at {options.epochs} epochs: {values:,} logged values, {path.stat().st_size / 1e6:.0f} MB. "
            f"Each repetition starts a fresh server; API and browser alternate. Medians (min-max) of "
            f"{options.repeat} repetitions, wall ms. Target: under 1,000 ms. The early series was answered "
            f"before the pass ended in {early_runs} of {options.repeat} repetitions.",
            "",
            "| measurement | wall ms |",
            "|---|---|",
        ]
        lines += [f"| {label} | {fmt_range(timings[key], 1000, 0)} |" for key, label in labels.items() if timings[key]]
        if not use_browser:
            lines.append("| browser timings | skipped: chromium or playwright missing |")
        lines += [
            "",
            f"Headless chromium {chromium_version()} via playwright. Machine: {machine()}; load average "
            f"{load_before:.1f} before and {os.getloadavg()[0]:.1f} after (other work shared the 2 CPUs, so these "
            "are upper bounds). Command: `.venv/bin/python benchmarks/ui_scale.py"
            + "".join(" " + a for a in sys.argv[1:]) + "`",
        ]
        markdown = "\n".join(lines)
        print(markdown)
        if not options.quick:
            write_section("ui_scale", markdown)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
