"""The live dashboard in a real browser: headless Chromium (the operating system's
package, driven by Selenium) against a real ``streamlog serve`` process on 127.0.0.1 with
the embedded backend.

What a user relies on: the streams table shows the streams and their lengths and keeps
up without a reload; a stream page's live tail shows a newly appended item; item content
is text (an item holding ``<script>`` or ``<img onerror=…>`` is shown, never run); a model
page's chart gains a point for each window a learner commits beside it, and a page opened
after training draws the model's whole history; a stream page opened before its stream
exists goes live when it appears; with ``--token``
the page asks for the token once and then works (cookie, HttpOnly).

With CI set, a missing Chromium or ChromeDriver fails the run; elsewhere the tests skip.
With STREAMLOG_SCREENSHOTS=1 they also save the screenshots of docs/img/dashboard-*.png
(and feed more windows, so the model charts have a story to tell).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, _forget_client, _free_port
from helpers import ROOT, reaped, wait_until

import streamlog
from streamlog.consumers import OnlineKMeans, OnlineLinearRegression

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = os.environ.get("STREAMLOG_SCREENSHOTS", "") not in ("", "0")
IMG = ROOT / "docs" / "img"
WAIT = 15  # seconds: the deadline of every wait in the browser

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")]


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401 - imported only to check that it is installed
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = f"the dashboard browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@contextmanager
def serve(url: str, *args: str, browser=None):
    """``streamlog serve`` on a free loopback port, as a subprocess; yields its base URL
    once ``/healthz`` answers; stopped (and reaped) when the block ends, after ``browser``
    has left its pages (closing their event streams, as a user closing the tab would)."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("STREAMLOG_URL", None)
    log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty server never blocks on it
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlog.cli", "serve", "--url", url, "--port", str(port), *args],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(f"streamlog serve exited with {proc.returncode}: {log.read().decode()}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as answer:
                return answer.status == 200
        except OSError:
            return False

    with log, reaped(proc):
        wait_until(up, timeout=30, interval=0.05, message="streamlog serve to answer /healthz")
        yield base
        if browser is not None:
            browser.get("about:blank")
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (starting one costs a second or two)."""
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860", "--force-device-scale-factor=1", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard')}/streamlog.db"
    streamlog.connect(url)  # create the file before the server opens it
    yield url
    _forget_client(url)


@pytest.fixture(scope="module")
def server(db, browser):
    with serve(db, browser=browser) as base:
        yield base


# -- helpers ---------------------------------------------------------------------------


def wait_for(driver, predicate, message: str):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d):
        try:
            return predicate(d)
        except StaleElementReferenceException:  # a live row replaced under us: look again
            return False

    return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(check, message)


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver, selector: str) -> str | None:
    found = css(driver, selector)
    return found[0].text if found else None


def open_page(driver, base: str, route: str) -> None:
    driver.get(f"{base}/#{route}")


def script_errors(driver) -> list[str]:
    """Errors the page's scripts raised (or the Content-Security-Policy reported) since the
    last call; failed requests (a 401 before the token, say) are the network's, not listed."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and e.get("source") != "network"]


def points(driver, chart: str) -> int:
    found = css(driver, f'[data-testid="chart-{chart}"]')
    return int(found[0].get_attribute("data-points")) if found else 0


def screenshot(driver, name: str) -> None:
    """Save docs/img/dashboard-NAME.png (only with STREAMLOG_SCREENSHOTS=1): the whole page,
    1280 CSS pixels wide, once the rows' highlight of new items has faded."""
    if not SCREENSHOTS:
        return
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(css(driver, "h1")[0]).perform()  # no row highlighted by hover
    wait_for(driver, lambda d: d.execute_script("return document.getAnimations().length === 0"), "a still page")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": 1280, "height": min(height, 2000), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        IMG.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(IMG / f"dashboard-{name}.png"))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def regression_rows(rng, n: int, coef=(2.0, -1.0)) -> list[dict]:
    x = rng.uniform(-1, 1, size=(n, 2))
    y = coef[0] * x[:, 0] + coef[1] * x[:, 1] + 0.5 + rng.normal(scale=0.1, size=n)
    return [{"x1": a, "x2": b, "y": t} for (a, b), t in zip(x.tolist(), y.tolist(), strict=True)]


def learn(url: str, stream: str, model, size: int, group: str = "default") -> int:
    """Run the learner consumer over what is pending (blocking=False: it commits its windows
    and returns), as a cron job beside the server would."""
    return streamlog.streaming(stream, size=size, group=group, blocking=False, url=url).apply(model)


# -- the tests -----------------------------------------------------------------------------


def test_page_and_assets_are_served_by_streamlog_with_a_strict_policy(sqlite_url):
    """No browser needed: the page, its scripts and the vendored chart library come from the
    package (no CDN), under a Content-Security-Policy that allows nothing inline; with a
    token the page still loads (it holds no data) while the API answers 401."""
    from fastapi.testclient import TestClient

    from streamlog.serve.app import create_app

    with TestClient(create_app(sqlite_url)) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
        assert 'src="static/js/app.js"' in page.text and "http" not in page.text.split("<body>")[0]
        for asset, kind in (("js/app.js", "javascript"), ("vendor/uplot/uPlot.iife.min.js", "javascript"),
                            ("vendor/uplot/uPlot.min.css", "text/css"), ("vendor/uplot/LICENSE", "")):
            answer = http.get(f"/static/{asset}")
            assert answer.status_code == 200 and kind in answer.headers["content-type"], asset
            assert answer.headers["x-content-type-options"] == "nosniff"
        assert http.get("/static/%2e%2e/dashboard.py").status_code == 404  # nothing outside static/
        assert http.head("/").status_code == 200
    with TestClient(create_app(sqlite_url, token="t0ken")) as http:
        assert http.get("/").status_code == 200 and http.get("/static/js/app.js").status_code == 200
        assert http.get("/streams").status_code == 401




def test_stream_page_tails_new_items_as_text(browser, server, db):
    stream = streamlog.connect(db).stream("tail.s")
    stream.extend([{"n": i} for i in range(5)])
    open_page(browser, server, "/streams/tail.s")
    rows = '[data-testid="tail-row"]'
    wait_for(browser, lambda d: len(css(d, rows)) == 5, "the 5 items already there")
    assert [r.get_attribute("data-offset") for r in css(browser, rows)] == ["4", "3", "2", "1", "0"]  # newest first

    offset = stream.append({"n": 42, "note": "appended while the page is open"})
    wait_for(browser, lambda d: css(d, rows)[0].get_attribute("data-offset") == str(offset), "the new item")
    assert '"n": 42' in css(browser, rows)[0].text

    script = "<script>window.__pwned = 'script'</script>"
    img = "<img src=x onerror=\"window.__pwned = 'img'\">"
    evil = stream.append({"html": script, "img": img})
    wait_for(browser, lambda d: css(d, rows)[0].get_attribute("data-offset") == str(evil), "the <script> item")
    shown = css(browser, rows)[0].text
    assert "<script>window.__pwned = 'script'</script>" in shown  # as text, exactly
    assert "<img src=x onerror=" in shown
    assert browser.execute_script("return window.__pwned") is None  # nothing ran
    assert css(browser, "main script, main img") == []  # and no element was made from it
    assert len(css(browser, rows)) == 7  # nothing skipped, nothing twice

    pause = css(browser, '[data-testid="pause"]')[0]
    pause.click()  # closes the live tail; Resume follows on from the newest item shown
    assert pause.get_attribute("aria-pressed") == "true"
    missed = stream.extend([{"n": 100}, {"n": 101}])
    pause.click()
    wait_for(browser, lambda d: len(css(d, rows)) == 9, "the items appended while paused")
    shown = [int(r.get_attribute("data-offset")) for r in css(browser, rows)]
    assert shown == list(range(missed[-1], -1, -1))  # every offset once, newest first
    wait_for(browser, lambda d: text_of(d, '[data-testid="length"]') == "9", "the item count to keep up")
    assert script_errors(browser) == []
    screenshot(browser, "stream")


def test_model_chart_gains_a_point_per_committed_window(browser, server, db):
    rng = np.random.default_rng(7)
    client = streamlog.connect(db)
    stream = client.stream("ml.sensors")
    windows = 24 if SCREENSHOTS else 3
    model = OnlineLinearRegression(features=["x1", "x2"], target="y", halflife=60)
    open_page(browser, server, "/models/ml.sensors/default/OnlineLinearRegression")  # before it exists
    wait_for(browser, lambda d: css(d, '[data-testid="model-waiting"]'), "the wait for a first checkpoint")

    stream.extend(regression_rows(rng, 60))
    learn(db, "ml.sensors", model, 60)  # the first checkpoint: the model appears
    wait_for(browser, lambda d: points(d, "coef") == 1, "the chart's first point")
    assert css(browser, '[data-testid="model-waiting"]') == []
    assert points(browser, "error") == 0  # the first window is learned, not scored: no error yet
    for n in range(2, windows + 1):  # each committed window → one more point, no reload
        stream.extend(regression_rows(rng, 60, (2.0, -1.0) if n <= windows // 2 else (-1.0, 3.0)))
        learn(db, "ml.sensors", model, 60)
        wait_for(browser, lambda d, n=n: points(d, "coef") == n, f"point {n} on the coefficients chart")
    wait_for(browser, lambda d: points(d, "error") >= windows - 1, "the error chart's points")
    assert text_of(browser, '[data-testid="model-seq"]') == str(windows)
    assert text_of(browser, '[data-testid="model-n-seen"]') == f"{60 * windows:,}"
    legend = text_of(browser, '[data-testid="chart-coef"]')
    assert "x1" in legend and "x2" in legend and "intercept" in legend
    assert script_errors(browser) == []
    screenshot(browser, "model")


def chart_attr(driver, chart: str, name: str) -> str | None:
    found = css(driver, f'[data-testid="chart-{chart}"]')
    return found[0].get_attribute(f"data-{name}") if found else None


def integer_ticks(driver, chart: str) -> bool:
    """Whether every tick of the chart's x axis (window number) is a whole number."""
    ticks = (chart_attr(driver, chart, "ticks") or "").split()
    return bool(ticks) and all(float(t).is_integer() for t in ticks)


def test_model_page_opened_after_training_draws_the_whole_history(browser, server, db):
    """Issue 17: a page opened late drew one dot per series (only the newest checkpoint),
    with fractional window ticks. Now it draws every window learned — more windows than the
    store keeps full checkpoints of — as a line on whole-number ticks, then goes on live."""
    rng = np.random.default_rng(11)
    stream = streamlog.connect(db).stream("late.sensors")
    model = OnlineLinearRegression(features=["x1", "x2"], target="y", name="late")
    windows = 8
    for _ in range(windows):
        stream.extend(regression_rows(rng, 30))
    assert learn(db, "late.sensors", model, 30) == windows
    open_page(browser, server, "/models/late.sensors/default/late")
    wait_for(browser, lambda d: points(d, "coef") == windows, f"the {windows} windows learned before the page opened")
    assert (chart_attr(browser, "coef", "first"), chart_attr(browser, "coef", "last")) == ("1", str(windows))
    wait_for(browser, lambda d: points(d, "error") == windows - 1, "the error of every window but the first")
    assert integer_ticks(browser, "coef"), chart_attr(browser, "coef", "ticks")
    stream.extend(regression_rows(rng, 30))  # and live from there
    learn(db, "late.sensors", model, 30)
    wait_for(browser, lambda d: points(d, "coef") == windows + 1, "the next window, live")
    assert chart_attr(browser, "coef", "last") == str(windows + 1)
    assert script_errors(browser) == []


def test_a_one_window_chart_has_whole_window_ticks(browser, server, db):
    stream = streamlog.connect(db).stream("one.sensors")
    stream.extend(regression_rows(np.random.default_rng(5), 30))
    learn(db, "one.sensors", OnlineLinearRegression(features=["x1", "x2"], target="y"), 30)
    open_page(browser, server, "/models/one.sensors/default/OnlineLinearRegression")
    wait_for(browser, lambda d: points(d, "coef") == 1 and chart_attr(d, "coef", "ticks"), "the one window's chart")
    assert integer_ticks(browser, "coef"), chart_attr(browser, "coef", "ticks")


def test_stream_page_opened_before_its_stream_goes_live_when_it_appears(browser, server, db):
    """Issue 17: the page said "offline" (the server is up) and stayed on "waiting for
    items…" until a reload. Now it waits for the stream and goes live by itself."""
    open_page(browser, server, "/streams/early.s")
    wait_for(browser, lambda d: css(d, '[data-testid="stream-waiting"]'), "the wait for the stream")
    status = '[id="status"]'
    wait_for(browser, lambda d: text_of(d, status) == "waiting for the stream", "the status: waiting, not offline")
    assert css(browser, status)[0].get_attribute("data-state") == "live"
    assert css(browser, '[data-testid="error"]') == []
    stream = streamlog.connect(db).stream("early.s")  # created, still empty
    wait_for(browser, lambda d: css(d, '[data-testid="stream-waiting"]') == [], "the stream, without a reload")
    assert text_of(browser, '[data-testid="tail-count"]') == "waiting for items…"
    stream.extend([{"n": i} for i in range(3)])
    rows = '[data-testid="tail-row"]'
    wait_for(browser, lambda d: len(css(d, rows)) == 3, "the items, without a reload")
    offset = stream.append({"n": 3})
    wait_for(browser, lambda d: css(d, rows)[0].get_attribute("data-offset") == str(offset), "a newer item")
    wait_for(browser, lambda d: text_of(d, status) == "live", "the status: live")
    stream.drop()  # dropped while the page is open: waited for again, and its new tail starts over
    wait_for(browser, lambda d: css(d, '[data-testid="stream-waiting"]'), "the wait for the dropped stream")
    streamlog.connect(db).stream("early.s").extend([{"again": True}])
    wait_for(browser, lambda d: [r.get_attribute("data-offset") for r in css(d, rows)] == ["0"], "the new tail")
    assert '"again": true' in css(browser, rows)[0].text
    assert script_errors(browser) == []


def test_kmeans_model_page_charts_centres_and_counts(browser, server, db):
    rng = np.random.default_rng(3)
    stream = streamlog.connect(db).stream("ml.points")
    windows = 16 if SCREENSHOTS else 2
    model = OnlineKMeans(k=3, features=["x", "y", "z"], halflife=120)
    means = np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 0.0], [0.0, 3.0, 3.0]])

    def batch(n: int) -> list[dict]:
        moved = means.copy()
        moved[2] += min(n, windows // 2) * np.array([0.25, -0.1, 0.0])  # one cluster drifts
        pts = np.concatenate([rng.normal(loc=m, scale=0.3, size=(size, 3))
                              for m, size in zip(moved, (30, 20, 10), strict=True)])
        rng.shuffle(pts)
        return [{"x": a, "y": b, "z": c} for a, b, c in pts.tolist()]

    stream.extend(batch(1))
    learn(db, "ml.points", model, 60, group="clusters")
    open_page(browser, server, "/models/ml.points/clusters/OnlineKMeans")
    wait_for(browser, lambda d: points(d, "centres") == 1 and points(d, "counts") == 1, "the first centres")
    for n in range(2, windows + 1):
        stream.extend(batch(n))
        learn(db, "ml.points", model, 60, group="clusters")
        wait_for(browser, lambda d, n=n: points(d, "centres") == n, f"point {n} on the centres chart")
    assert len(css(browser, '[data-testid="centres-table"] tbody tr')) == 3  # one row per centre
    assert script_errors(browser) == []
    screenshot(browser, "kmeans")


def test_streams_table_shows_each_stream_and_keeps_up(browser, server, db):
    client = streamlog.connect(db)
    client.stream("sensors").extend([{"t": i} for i in range(3)])
    client.stream("orders").extend([{"id": i} for i in range(4)])
    streamlog.streaming("sensors", size=2, group="audit", blocking=False, url=db).apply(lambda w: None)

    def bill(window):
        if any(order["id"] == 2 for order in window.data):
            raise ValueError("order 2 cannot be billed")

    streamlog.streaming("orders", size=1, group="billing", max_retries=0, blocking=False, url=db).apply(bill)
    open_page(browser, server, "/")

    def cell(stream: str, column: str) -> str | None:
        return text_of(browser, f'[data-testid="stream-row"][data-key="{stream}"] [data-col="{column}"]')

    wait_for(browser, lambda d: cell("sensors", "length") == "3", "the sensors row with 3 items")
    assert cell("orders", "length") == "4"
    assert "audit 1" in cell("sensors", "pending")
    # no badge for a group no consumer ever took a window from (issue 17: "default 3" read as a lag)
    assert "default" not in cell("sensors", "pending") and "default" not in cell("orders", "pending")
    client.stream("sink.only").extend([{"v": 1}, {"v": 2}])  # what a sink= writes: nobody consumes it
    wait_for(browser, lambda d: cell("sink.only", "pending") == "no consumers yet", "no pending badge")
    assert cell("orders", "dead") == "1"  # the order that failed went to the dead letters
    headers = [th.text for th in css(browser, '[data-testid="streams-table"] thead th')]
    assert headers == ["STREAM", "ITEMS", "ITEMS/S", "NEWEST", "PENDING PER GROUP", "DEAD LETTERS"]

    client.stream("sensors").extend([{"t": i} for i in range(3, 10)])  # no reload: the table keeps up
    wait_for(browser, lambda d: cell("sensors", "length") == "10", "the sensors row to show 10 items")
    wait_for(browser, lambda d: "audit 8" in cell("sensors", "pending"), "8 pending for audit")
    models = [row.get_attribute("data-key") for row in css(browser, '[data-testid="model-row"]')]
    ml = [key for key in models if key.startswith("ml.")]  # other tests of the module add models of their own
    assert ml == ["ml.points/clusters/OnlineKMeans", "ml.sensors/default/OnlineLinearRegression"]
    css(browser, '[data-testid="model-row"][data-key^="ml.sensors/"] a')[0].click()  # to the model page
    wait_for(browser, lambda d: points(d, "coef") >= 1, "the model page from the front page's link")
    open_page(browser, server, "/")
    wait_for(browser, lambda d: cell("orders", "length") == "4", "the front page again")
    assert script_errors(browser) == []
    screenshot(browser, "streams")


def test_token_form_then_the_dashboard(browser, tmp_path):
    url = f"sqlite:///{tmp_path}/streamlog.db"
    streamlog.connect(url).stream("secret.s").extend([{"v": 1}, {"v": 2}])
    try:
        with serve(url, "--token", "s3cret-token", browser=browser) as base:
            open_page(browser, base, "/")
            form = '[data-testid="login"]'
            wait_for(browser, lambda d: css(d, form), "the token form")
            assert css(browser, '[data-testid="streams-table"]') == []  # nothing shown without it

            def submit(token: str) -> None:
                field = css(browser, '[data-testid="token"]')[0]
                field.clear()
                field.send_keys(token)
                css(browser, f'{form} button[type="submit"]')[0].click()

            submit("wrong")
            wait_for(browser, lambda d: "not accepted" in (text_of(d, '[data-testid="login-error"]') or ""),
                     "the wrong token refused")
            submit("s3cret-token")
            length = '[data-testid="stream-row"][data-key="secret.s"] [data-col="length"]'
            wait_for(browser, lambda d: text_of(d, length) == "2", "the streams table after login")
            session = {c["name"]: c for c in browser.get_cookies()}["streamlog_session"]
            assert session["httpOnly"] and session["value"] != "s3cret-token"
            assert "streamlog_session" not in browser.execute_script("return document.cookie")  # no script reads it

            open_page(browser, base, "/streams/secret.s")  # SSE follows with the cookie too
            wait_for(browser, lambda d: len(css(d, '[data-testid="tail-row"]')) == 2, "the tail behind the token")
            assert script_errors(browser) == []
    finally:
        browser.delete_all_cookies()
        _forget_client(url)


def test_the_dashboard_on_a_mongodb_backend(browser, mongo_server):
    """The same pages against FerretDB (the server's watcher polls there instead of
    sleeping on a file watch): the table, a live tail and a model chart keep up."""
    import pymongo

    database = f"dash{os.getpid()}"
    url = f"{mongo_server}/{database}"
    client = streamlog.connect(url)
    try:
        stream = client.stream("m.sensors")
        rng = np.random.default_rng(3)
        stream.extend(regression_rows(rng, 40))
        model = OnlineLinearRegression(features=["x1", "x2"], target="y")
        learn(url, "m.sensors", model, 40)
        with serve(url, browser=browser) as base:
            open_page(browser, base, "/")
            row = '[data-testid="stream-row"][data-key="m.sensors"] [data-col="length"]'
            wait_for(browser, lambda d: text_of(d, row) == "40", "the m.sensors row with 40 items")
            open_page(browser, base, "/streams/m.sensors")
            rows = '[data-testid="tail-row"]'
            wait_for(browser, lambda d: len(css(d, rows)) == 40, "the 40 items in the tail")
            offset = stream.append({"x1": 0.5, "x2": 0.5, "y": 1.0, "note": "<b>live</b>"})
            wait_for(browser, lambda d: css(d, rows)[0].get_attribute("data-offset") == str(offset), "the new item")
            assert "<b>live</b>" in css(browser, rows)[0].text
            open_page(browser, base, "/models/m.sensors/default/OnlineLinearRegression")
            wait_for(browser, lambda d: points(d, "coef") == 1, "the first checkpoint's point")
            stream.extend(regression_rows(rng, 39))
            learn(url, "m.sensors", model, 40)
            wait_for(browser, lambda d: points(d, "coef") == 2, "a point for the committed window")
            assert script_errors(browser) == []
    finally:
        _forget_client(url)
        pymongo.MongoClient(mongo_server, serverSelectionTimeoutMS=2000).drop_database(database)
