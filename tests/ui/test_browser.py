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

pytestmark = pytest.mark.slow  # every test trains or launches processes


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
    expect(page.locator("#count")).to_have_text("1 of 4 runs match")
    assert visible_tstamps(page) == [recorded.tstamps[3]]
    page.fill("#filter", "__import__('os')")
    page.press("#filter", "Enter")
    expect(page.locator("#filter-error")).to_contain_text("function call is not allowed")
    page.fill("#filter", "")
    page.press("#filter", "Enter")
    expect(page.locator("#count")).to_have_text("4 runs")


def test_sort_by_a_column_and_hide_one(page):
    page.click("#runs thead th[data-column='accuracy']")
    page.wait_for_selector("#runs thead th.sorted[data-column='accuracy']")
    page.click("#runs thead th[data-column='accuracy']")
    page.wait_for_selector("#runs thead th.sorted.desc[data-column='accuracy']")
    index = page.eval_on_selector_all("#runs thead th", "ths => ths.findIndex(th => th.dataset.column === 'accuracy')")
    values = page.eval_on_selector_all(
        "#runs tbody tr", f"rows => rows.map(r => Number(r.children[{index}].title))")
    assert values == sorted(values, reverse=True)
    page.click("#columns-button")
    page.locator("#columns-list label", has_text="optimizer").locator("input").uncheck()
    expect(page.locator("#runs thead th[data-column='optimizer']")).to_have_count(0)
    page.locator("#columns-list label", has_text="optimizer").locator("input").check()


def series_pixels(page, color=(9, 105, 218)) -> int:
    """How many pixels of the chart's canvas have the first run's colour."""
    return page.evaluate("""([r, g, b]) => {
        const canvas = document.querySelector('#chart canvas');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4)
            if (Math.abs(data[i] - r) < 40 && Math.abs(data[i + 1] - g) < 40 && Math.abs(data[i + 2] - b) < 40) n++;
        return n;
    }""", list(color))


def test_chart_draws_a_curve_for_a_selected_run(page, recorded):
    page.select_option("#metric", "loss")
    row = page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[0]}']")
    row.locator("input.pick").check()
    page.wait_for_function("() => { const c = document.querySelector('#chart'); "
                           "return Number(c.dataset.points) === 60 && c.dataset.drawn === c.dataset.request; }")
    assert series_pixels(page) > 100
    expect(page.locator("#chart-note")).to_contain_text("loss against step (counted across epoch): 60 values")
    # A second run overlaid, and the comparison of the two.
    page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[1]}'] input.pick").check()
    page.wait_for_function("() => Number(document.querySelector('#chart').dataset.points) === 160")
    expect(page.locator("#compare-section")).to_be_visible()
    expect(page.locator("#compare")).to_contain_text("adam")
    expect(page.locator("#chart .u-legend")).to_contain_text(recorded.tstamps[1])


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
    page.select_option("#metric", "loss")
    page.locator(f"#runs tbody tr[data-tstamp='{recorded.tstamps[0]}'] input.pick").check()
    page.wait_for_function("() => Number(document.querySelector('#chart').dataset.points) === 60")
    with page.expect_request(lambda request: "/api/series" in request.url and "xmin=" in request.url):
        box = page.locator("#chart .u-over").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + 40)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 40, steps=4)
        page.mouse.up()
    expect(page.locator("#chart-note")).to_contain_text("in the zoomed range")
    page.click("#reset-zoom")
    expect(page.locator("#chart-note")).not_to_contain_text("zoomed")


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
