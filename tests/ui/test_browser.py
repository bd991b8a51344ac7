"""The page in a real headless browser: Debian's chromium driven by playwright.

Skipped when chromium or the playwright package is missing; `.ci/ui-setup.sh` installs both.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed (run .ci/ui-setup.sh)", allow_module_level=True)
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    pytest.skip("the playwright package is not installed (run .ci/ui-setup.sh)", allow_module_level=True)
pytest.importorskip("flask")

from flor.ui.server import make_server  # noqa: E402

# Every test here drives a real browser: seconds each.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url(recorded):
    server, app = make_server(recorded.db, recorded.root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    app.config["FLOR_DATA"].close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(10_000)
    page.goto(url + "/")
    page.wait_for_selector("#runs tbody tr[data-tstamp]")
    yield page
    context.close()
    assert not errors, errors


def visible_tstamps(page) -> list[str]:
    return page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.tstamp)")


def test_table_renders_the_runs(page, recorded):
    assert visible_tstamps(page) == list(reversed(recorded.tstamps))  # newest first
    headers = page.eval_on_selector_all("#runs thead th", "ths => ths.map(th => th.textContent)")
    assert headers[1].startswith("tstamp") and {"lr", "epochs", "loss", "accuracy", "status"} <= set(headers)
    failed = page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[2]}'] td.status-failed")
    expect(failed).to_have_text("failed")
    # A logged string is shown as text, never as markup.
    assert page.locator("#runs tbody b").count() == 0
    expect(page.locator("#runs tbody").get_by_text("<b>not markup</b>").first).to_be_visible()
    expect(page.locator("#count")).to_have_text("4 runs")


def test_filter_narrows_the_table_and_reports_errors(page, recorded):
    page.fill("#filter", "accuracy > 0.9 and lr < 0.01")
    page.press("#filter", "Enter")
    expect(page.locator("#count")).to_have_text('1 of 4 runs match "accuracy > 0.9 and lr < 0.01"')
    assert visible_tstamps(page) == [recorded.tstamps[3]]
    page.fill("#filter", "__import__('os')")
    page.press("#filter", "Enter")
    expect(page.locator("#filter-error")).to_contain_text("function call is not allowed")
    # '=' for '==': the error says the fix, and the count says which filter the rows shown match.
    page.fill("#filter", "lr=0.01")
    page.press("#filter", "Enter")
    expect(page.locator("#filter-error")).to_contain_text("did you mean `lr == 0.01`?")
    expect(page.locator("#count")).to_have_text(
        '1 of 4 runs match "accuracy > 0.9 and lr < 0.01" (not "lr=0.01": see below)')
    assert visible_tstamps(page) == [recorded.tstamps[3]]
    page.fill("#filter", "")
    page.press("#filter", "Enter")
    expect(page.locator("#count")).to_have_text("4 runs")
    expect(page.locator("#filter-error")).to_be_hidden()


def test_sort_by_a_column_and_hide_one(page):
    page.click("#runs thead th[data-column='accuracy']")
    page.wait_for_selector("#runs thead th.sorted[data-column='accuracy']")
    page.click("#runs thead th[data-column='accuracy']")
    page.wait_for_selector("#runs thead th.sorted.desc[data-column='accuracy']")
    index = page.eval_on_selector_all("#runs thead th", "ths => ths.findIndex(th => th.dataset.column === 'accuracy')")
    values = page.eval_on_selector_all(
        "#runs tbody tr", f"rows => rows.map(r => parseFloat(r.children[{index}].title))")
    assert values == sorted(values, reverse=True)
    page.click("#columns-button")
    page.locator("#columns-list label", has_text="optimizer").locator("input").uncheck()
    expect(page.locator("#runs thead th[data-column='optimizer']")).to_have_count(0)
    page.locator("#columns-list label", has_text="optimizer").locator("input").check()


def series_pixels(page, color=(9, 105, 218), panel=0) -> int:
    """How many pixels of a chart's canvas have the first run's colour."""
    return page.evaluate("""([r, g, b, panel]) => {
        const canvas = document.querySelectorAll('.panel canvas')[panel];
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4)
            if (Math.abs(data[i] - r) < 40 && Math.abs(data[i + 1] - g) < 40 && Math.abs(data[i + 2] - b) < 40) n++;
        return n;
    }""", [*color, panel])


def wait_drawn(page, points=None, panel=0):
    """Wait until a panel drew its newest request (with ``points`` values, when given)."""
    check = "" if points is None else f" && Number(c.dataset.points) === {points}"
    page.wait_for_function(f"() => {{ const c = document.querySelectorAll('.panel .chart')[{panel}]; "
                           f"return c && c.dataset.drawn === c.dataset.request && c.dataset.drawn !== '0'{check}; }}")


def test_chart_opens_on_the_visible_runs_and_draws_a_selected_run(page, recorded):
    # Nothing ticked: the first logged name over every run the table shows, on whole-number ticks.
    wait_drawn(page, 60 + 100 + 20 + 270)
    expect(page.locator(".chart-note").first).to_contain_text("over the 4 run(s) shown in the table")
    ticks = page.eval_on_selector(".panel .chart", "c => c.dataset.xticks.split(',').map(Number)")
    assert ticks and all(t == int(t) for t in ticks)
    row = page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[0]}']")
    row.locator("input.pick").check()
    wait_drawn(page, 60)
    assert series_pixels(page) > 100
    expect(page.locator(".chart-note").first).to_contain_text("loss against step (counted across epoch)")
    expect(page.locator(".chart-note").first).to_contain_text("1 selected run(s): 60 values")
    # A second run overlaid, and the comparison of the two.
    page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[1]}'] input.pick").check()
    wait_drawn(page, 160)
    expect(page.locator("#compare-section")).to_be_visible()
    expect(page.locator("#compare")).to_contain_text("adam")
    expect(page.locator(".panel .u-legend").first).to_contain_text(recorded.tstamps[1])


def test_state_in_the_url_survives_a_reload(page, recorded):
    page.fill("#filter", "lr < 0.01")
    page.press("#filter", "Enter")
    expect(page.locator("#count")).to_have_text('2 of 4 runs match "lr < 0.01"')
    page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[1]}'] input.pick").check()
    page.select_option("#add-panel", "accuracy")
    page.select_option("#x-mode", "step")
    page.fill("#smooth", "0.6")
    page.select_option("#scatter-y", "loss")
    page.wait_for_function("() => location.search.includes('smooth=0.6')")
    for part in ("where=lr", "sel=", "charts=loss%2Caccuracy", "x=step", "sy=loss"):
        assert part in page.url
    shared = page.url
    page.reload()
    page.wait_for_selector("#runs tbody tr[data-tstamp]")
    expect(page.locator("#filter")).to_have_value("lr < 0.01")
    expect(page.locator("#count")).to_have_text('2 of 4 runs match "lr < 0.01"')
    expect(page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[1]}'] input.pick")).to_be_checked()
    expect(page.locator(".panel")).to_have_count(2)
    expect(page.locator("#x-mode")).to_have_value("step")
    expect(page.locator("#scatter-y")).to_have_value("loss")
    wait_drawn(page, 5, panel=1)  # accuracy of the selected run: one value per epoch
    note = page.locator(".chart-note").nth(1)
    expect(note).to_contain_text("accuracy against step (step counted across epoch) over 1 selected run(s)")
    expect(note).to_contain_text("smoothed 0.6")
    assert page.url == shared


def test_group_by_an_arg_and_a_single_point_is_drawn(page, recorded):
    page.select_option("#group-by", "optimizer")
    page.wait_for_function("() => document.querySelector('.panel .chart').dataset.series === '6'")
    expect(page.locator(".chart-note").first).to_contain_text("in 2 group(s) by optimizer")
    expect(page.locator(".panel .u-legend").first).to_contain_text("optimizer=adam mean of 1")
    expect(page.locator(".panel .u-legend").first).to_contain_text("optimizer=sgd mean of 3")
    page.select_option("#group-by", "")
    # The failed run logged accuracy once: one value, drawn as a marker (a line needs two).
    page.select_option(".panel select.metric", "accuracy")
    page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[2]}'] input.pick").check()
    wait_drawn(page, 1)
    assert page.evaluate("() => { const u = state.views[0].chart; return u.series[1].points.show(u, 1); }") is True
    assert series_pixels(page) > 10


def test_parallel_coordinates_brush_filters_the_table(page, recorded):
    page.wait_for_function("() => document.querySelector('#parallel').dataset.lines === '4'")
    box = page.locator("#parallel").bounding_box()
    # Brush the upper half of the epochs axis (3..9): only the run of 9 epochs is inside.
    x, top, middle = page.evaluate("""() => { const a = state.pcAxes, k = a.axes.findIndex(x => x.name === 'epochs');
        return [a.xOf(k), a.yOf(1) - 2, a.yOf(0.55)]; }""")
    page.mouse.move(box["x"] + x, box["y"] + top)
    page.mouse.down()
    page.mouse.move(box["x"] + x, box["y"] + middle, steps=4)
    page.mouse.up()
    expect(page.locator("#count")).to_have_text("1 of 4 runs match within the brushed range")
    assert visible_tstamps(page) == [recorded.tstamps[3]]
    assert "brush=epochs" in page.url
    expect(page.locator("#parallel")).to_have_attribute("data-selected", "1")
    page.mouse.click(box["x"] + x, box["y"] + middle)  # a click on the axis clears its brush
    expect(page.locator("#count")).to_have_text("4 runs")


def test_run_page_shows_error_code_and_diff(page, recorded):
    page.locator("#runs").get_by_role("link", name=recorded.tstamps[2], exact=True).click()
    expect(page.locator("#run-error")).to_contain_text("boom at epoch 0")
    expect(page.locator("#run-title")).to_contain_text("failed")
    expect(page.locator("#run-args")).to_contain_text("fail")
    page.click("#show-code")
    expect(page.locator("#run-code")).to_contain_text('flor.loop("step", range(20))')
    page.goto(page.url.split("#")[0] + f"#run={recorded.tstamps[3]}")
    expect(page.locator("#run-title")).to_contain_text(recorded.tstamps[3])
    page.select_option("#diff-against", recorded.tstamps[0])
    page.click("#show-diff")
    expect(page.locator("#run-code .add")).to_contain_text("range(30)")
    expect(page.locator("#run-code .del")).to_contain_text("range(20)")


def test_run_page_shows_what_the_run_printed_searchable(page, recorded):
    page.goto(page.url.split("#")[0] + f"#run={recorded.tstamps[0]}")
    expect(page.locator("#run-output")).to_contain_text("epoch 0 done, accuracy 0.4900")
    expect(page.locator("#run-output-note")).to_contain_text("3 captured")
    page.fill("#output-grep", "epoch [12] done")
    expect(page.locator("#run-output-note")).to_contain_text("2 of 2 matching")
    expect(page.locator("#run-output")).not_to_contain_text("epoch 0 done")
    expect(page.locator("#run-output .line").first).to_have_attribute("title", re.compile(r"^stdout epoch=1 \+"))
    page.fill("#output-grep", "(")
    expect(page.locator("#output-error")).to_contain_text("not a regular expression")


def test_dragging_zooms_and_fetches_the_range_again(page, recorded):
    page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[0]}'] input.pick").check()
    wait_drawn(page, 60)
    with page.expect_request(lambda request: "/api/series" in request.url and "xmin=" in request.url):
        box = page.locator(".panel .u-over").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + 40)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 40, steps=4)
        page.mouse.up()
    expect(page.locator(".chart-note").first).to_contain_text("in the zoomed range")
    page.click(".panel .reset-zoom")
    expect(page.locator(".chart-note").first).not_to_contain_text("zoomed")


def test_hindsight_values_are_labelled_and_the_table_downloads_as_csv(browser, recorded, tmp_path):
    import shutil

    from flor.logged import LoggedValue
    from flor.store import Store

    root = tmp_path / "hindsight"
    shutil.copytree(recorded.root, root)
    store = Store.open(root / ".flor" / "flor.db")
    run_id, = store._read("SELECT run_id FROM runs WHERE tstamp = ?", (recorded.tstamps[0],))[0]
    (epoch_loop,), = store._read("SELECT ctx_id FROM contexts WHERE run_id = ? AND loop_name = 'epoch'", (run_id,))
    store.write_replayed(run_id, [], [LoggedValue("grad_norm", 2.0 + i, "float", epoch_loop, i) for i in range(3)])
    # The longer run's epoch 3 withheld (as drift would): a gap in its curve, not a line across.
    later, = store._read("SELECT run_id FROM runs WHERE tstamp = ?", (recorded.tstamps[3],))[0]
    (later_loop,), = store._read("SELECT ctx_id FROM contexts WHERE run_id = ? AND loop_name = 'epoch'", (later,))
    store.write_replayed(later, [], [LoggedValue("grad_norm", 1.0 + i, "float", later_loop, i) for i in (0, 1, 2, 4, 5)])
    store.close()
    server, app = make_server(root / ".flor" / "flor.db", root)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = browser.new_context(accept_downloads=True)
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{server.server_port}/?sort=lr&desc=0")
        cell = page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[0]}'] td.src-replay")
        expect(cell).to_have_attribute("title", "4 (replayed)")
        recorded_cell = page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[0]}'] td[title$='(recorded)']")
        assert recorded_cell.count() >= 2  # loss and accuracy: their own record
        for t in recorded.tstamps[:2]:
            page.locator(f"#runs tbody tr[data-tstamp='{t}'] input.pick").check()
        expect(page.locator("#compare td.src-replay")).to_have_attribute("title", "4 (replayed)")
        expect(page.locator("#compare")).to_contain_text("grad_norm")
        with page.expect_download() as download:
            page.click("#csv")
        lines = Path(download.value.path()).read_text().splitlines()
        header = lines[0].split(",")
        assert header[:3] == ["tstamp", "filename", "status"] and header[-1] == "hindsight"
        assert len(lines) == 5 and lines[1].split(",")[0] == recorded.tstamps[3]  # sorted by lr, ascending
        # By the whole tstamp: runs recorded within one second have tstamps that start alike.
        first = next(line for line in lines if line.split(",")[0] == recorded.tstamps[0])
        assert first.endswith("grad_norm=replay")
        page.goto(f"http://127.0.0.1:{server.server_port}/?charts=grad_norm&sel={recorded.tstamps[3]}")
        wait_drawn(page, 5)
        expect(page.locator(".chart-note").first).to_contain_text("1 gap(s) where iterations have no value")
        drawn = page.evaluate("() => { const u = state.views[0].chart; return [u.data[0], u.data[1], u.series[1].spanGaps]; }")
        assert drawn == [[0, 1, 2, 3, 4, 5], [1, 2, 3, None, 5, 6], False]  # a null at the gap: the line stops there
    finally:
        context.close()
        server.shutdown()
        app.config["FLOR_DATA"].close()


def test_new_runs_appear_without_reloading(browser, recorded, tmp_path):
    import shutil

    root = tmp_path / "live"
    shutil.copytree(recorded.root, root)
    server, app = make_server(root / ".flor" / "flor.db", root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{server.server_port}/")
        expect(page.locator("#count")).to_have_text("4 runs")
        type(recorded)(root, []).record("lr=0.5", "epochs=1")
        expect(page.locator("#count")).to_have_text("5 runs", timeout=15_000)  # the page polls every 2 s
        expect(page.locator("#runs tbody tr")).to_have_count(5)
    finally:
        context.close()
        server.shutdown()
        app.config["FLOR_DATA"].close()


def test_runs_are_named_and_archived_behind_a_path_prefix_with_the_edit_token(browser, recorded, tmp_path):
    import shutil

    from flor.store import Store

    root = tmp_path / "editable"
    shutil.copytree(recorded.root, root)
    Store.open(root / ".flor" / "flor.db").close()  # as serve_project does with --allow-edit
    server, app = make_server(root / ".flor" / "flor.db", root, allow_edit=True, base_path="/proxy/8080")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        # Without the trailing slash: redirected, and every URL of the page stays under the prefix.
        seen: list[str] = []
        page.on("request", lambda request: seen.append(request.url))
        page.goto(f"http://127.0.0.1:{server.server_port}/proxy/8080")
        page.wait_for_selector("#runs tbody tr[data-tstamp]")
        assert seen[0].endswith("/proxy/8080") and all("/proxy/8080/" in url for url in seen[1:]), seen
        # The run's page answers late (a loaded machine): what is typed meanwhile must not be lost to
        # its notes arriving after (the form waits, disabled, until they have).
        page.evaluate("""() => { const real = window.fetch;
            window.fetch = (u, o) => /api\\/runs\\/[^\\/?]+$/.test(String(u))
                ? new Promise((r) => setTimeout(r, 800)).then(() => real(u, o)) : real(u, o); }""")
        page.locator("#runs").get_by_role("link", name=recorded.tstamps[2], exact=True).click()
        page.fill("#note-name", "the failed one")
        page.wait_for_timeout(1200)  # the user pauses; the late answer lands in the meantime
        page.fill("#note-tags", "broken, look")
        page.fill("#note-text", "raised on purpose")
        page.check("#note-archived")
        page.click("#note-save")
        expect(page.locator("#note-status")).to_have_text("saved")
        # A request without the token (what a forged one would be) is refused.
        status = page.evaluate("""(t) => fetch('api/runs/' + t + '/annotations', {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: 'forged'})}).then(r => r.status)""",
                               recorded.tstamps[2])
        assert status == 403
        page.click("text=← all runs")
        expect(page.locator("#count")).to_have_text("3 runs (1 archived not shown)")
        page.check("#show-archived")
        expect(page.locator("#count")).to_have_text("4 runs")
        row = page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[2]}']")
        expect(row).to_contain_text("the failed one")
        expect(row).to_contain_text("broken, look")
        page.reload()  # the archived toggle is in the URL too
        expect(page.locator("#show-archived")).to_be_checked()
        expect(page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[2]}']")).to_contain_text("the failed one")
    finally:
        context.close()
        server.shutdown()
        app.config["FLOR_DATA"].close()
