"""The web console in a real browser: Debian's Chromium, headless, driven by
Playwright against a real ``twistd -n tsnet`` with data pushed over telnet and
HTTP.  Every page must load with no console error, page error or CSP
violation and fetch nothing from another host; the numbers it shows are
those of ``/metrics``; its charts hold exactly what ``/api/query`` answers
(read from uPlot's own data, not from pixels); a READ token limited by a tag
sees only its series.  Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import base64
import json
import math
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.test_console import metrics_text, total
from tsnet.testing.process import TsnetProcess, send_lines, tsnet

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"  # Debian's chromium (tools/install-test-deps)
#: what Chromium needs here: root (no sandbox), no GPU, and no network of its own
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05
auth_refresh = 1

[storage:default]
backend = sqlite

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = metrics opentsdb console

[listener:secure]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
auth = token
apis = console opentsdb

[listener:bare]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = console
"""

HOSTS = ("web01", "web02", "web03")

#: records every CSP violation the page meets (Playwright injects this, outside the CSP)
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
"""


@dataclass
class Site:
    proc: TsnetProcess
    ports: dict[str, int]
    now: int
    tokens: dict[str, dict[str, str]]
    times: dict[str, list[int]] = field(default_factory=dict)

    def url(self, listener: str, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[listener]}{path}"

    def metrics(self) -> dict:
        with urllib.request.urlopen(self.url("http", "/metrics"), timeout=10) as r:
            return metrics_text(r.read().decode())

    def query(self, listener: str, body: Any, secret: str | None = None) -> Any:
        req = urllib.request.Request(self.url(listener, "/api/query"),
                                     data=json.dumps(body).encode(), method="POST")
        if secret:
            req.add_header("Authorization", "Basic " + base64.b64encode(secret.encode()).decode())
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


def put_http(site: Site, secret: str, points: list[dict]) -> None:
    req = urllib.request.Request(site.url("secure", "/api/put"), data=json.dumps(points).encode(),
                                 method="POST")
    req.add_header("Authorization", "Basic " + base64.b64encode(secret.encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def wait_written(site: Site, n: int) -> None:
    deadline = time.monotonic() + 20
    while total(site.metrics(), "tsnet_points_written_total") < n:
        assert time.monotonic() < deadline, "the points were not committed"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """tsnet with three hosts of sys.cpu.user (120 points each in the last half
    hour) and one of sys.cpu.idle in ``default``, two rooms of ``temp`` in the
    token solution ``iot``, and two rejected lines."""
    d = tmp_path_factory.mktemp("console")
    cfg = d / "tsnet.ini"
    cfg.write_text(CONFIG)
    tsnet(cfg, "solution", "create", "iot")
    writer = json.loads(tsnet(cfg, "token", "create", "iot", "--description", "writer").stdout)
    reader = json.loads(tsnet(cfg, "token", "create", "iot", "--tag", "host=web01").stdout)
    proc = TsnetProcess(cfg)
    try:
        ports = proc.wait_bound({"opentsdb", "http", "secure", "bare"})
        now = int(time.time())
        site = Site(proc, ports, now, {"writer": writer, "reader": reader})
        site.times["user"] = [now - 1800 + 15 * i for i in range(120)]
        site.times["idle"] = [now - 1800 + 30 * i for i in range(60)]
        lines = [f"put sys.cpu.user {t} {20 + 10 * k + 8 * math.sin(i / 9 + k):.3f} "
                 f"host={h} cpu=0\n"
                 for k, h in enumerate(HOSTS) for i, t in enumerate(site.times["user"])]
        lines += [f"put sys.cpu.idle {t} {50 + i % 10} host=web01\n"
                  for i, t in enumerate(site.times["idle"])]
        lines += ["put sys.cpu.user nope 1 host=web01\n", "put\n"]
        send_lines(ports["opentsdb"], lines)
        site.times["temp"] = [now - 1800 + 60 * i for i in range(30)]
        put_http(site, writer["write"], [
            {"metric": "temp", "timestamp": t, "value": 20 + r + i / 10, "tags": {"host": h}}
            for r, h in enumerate(("web01", "web02")) for i, t in enumerate(site.times["temp"])])
        wait_written(site, 3 * 120 + 60 + 2 * 30)
        yield site
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page, and what went wrong on it."""

    def __init__(self, browser: Browser, origin: str, **context: Any) -> None:
        self.origin = origin
        self.context = browser.new_context(timezone_id="UTC", locale="en-US", **context)
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.page.add_init_script(WATCH_CSP)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("request", self._request)

    def _console(self, msg: Any) -> None:
        if msg.type in ("error", "warning"):
            self.problems.append(f"console {msg.type}: {msg.text}")

    def _request(self, req: Any) -> None:
        if not req.url.startswith((self.origin + "/", "data:")):
            self.problems.append(f"a request to another host: {req.url}")

    def check(self, allowed: str | None = None) -> None:
        """No problem (but those matching ``allowed``), and no CSP violation."""
        problems = [p for p in self.problems if not (allowed and re.search(allowed, p))]
        assert problems == []
        assert self.page.evaluate("() => window.__csp") == []

    def shot(self, name: str, full: bool = True) -> None:
        """A screenshot in tests/artifacts/ (``full``: the whole page, which
        resizes the window and so hides a tooltip)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=full)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Any]:
    opened: list[Watched] = []

    def open_(url: str, **context: Any) -> Watched:
        origin = re.match(r"http://[^/]+", url).group(0)
        w = Watched(browser, origin, **context)
        opened.append(w)
        w.page.goto(url)
        return w

    yield open_
    for w in opened:
        w.close()


def js(page: Page, body: str) -> Any:
    """Evaluate a function body (a string would be eval'd, which the CSP forbids)."""
    return page.evaluate(f"() => {{ {body} }}")


def wait_js(page: Page, condition: str, timeout: float = 15000) -> None:
    page.wait_for_function(f"() => {condition}", timeout=timeout)


def rows(page: Page, table: str) -> list[list[str]]:
    return js(page, f"return [...document.querySelectorAll('#{table} tbody tr')]"
                    ".map((r) => [...r.cells].map((c) => c.textContent))")


def number(text: str) -> float:
    return float(text.replace(",", ""))


def chart(page: Page) -> dict:
    """What the explore chart's uPlot instance holds: labels and, per series,
    its non-null points as [time, value]."""
    return js(page, """
        const u = tsnetConsole.chart;
        return {labels: u.series.slice(1).map((s) => s.label),
                series: u.data.slice(1).map((ys) => ys.map((v, i) => [u.data[0][i], v])
                                                      .filter((p) => p[1] !== null))};""")


def as_drawn(results: list[dict]) -> list[list[list[float]]]:
    """/api/query results as the chart should hold them."""
    out = []
    for r in results:
        dps = r["dps"] if isinstance(r["dps"], list) else sorted(
            [int(t), v] for t, v in r["dps"].items())
        out.append([[t, v] for t, v in dps if isinstance(v, (int, float))])
    return out


def label(r: dict) -> str:
    tags = ", ".join(f"{k}={v}" for k, v in r["tags"].items())
    return f"{r['metric']}{{{tags}}}" if tags else r["metric"]


def draw(page: Page) -> None:
    page.evaluate("() => { tsnetConsole.chart = null; tsnetConsole.lastResult = null; }")
    page.click("#draw")
    wait_js(page, "tsnetConsole.lastResult !== null && tsnetConsole.chart !== null")


# -- status -----------------------------------------------------------------------------


def test_the_status_page_shows_what_metrics_says_and_updates_live(
        site: Site, open_page: Any) -> None:
    w = open_page(site.url("http"))
    page = w.page
    page.wait_for_selector("#status:not([hidden])")
    wait_js(page, "document.querySelector('#solutions [data-solution=default] .points')"
                  ".textContent === '420'")
    assert rows(page, "solutions") == [["default", "default", "420", ""],
                                       ["iot", "default", "60", ""]]
    m = site.metrics()
    for element, name in (("total-received", "tsnet_points_received_total"),
                          ("total-written", "tsnet_points_written_total"),
                          ("total-rejected", "tsnet_points_rejected_total"),
                          ("queue-items", "tsnet_write_queue_items")):
        shown = page.text_content(f"#{element}")
        assert number(shown) == total(m, name), element
        assert number(page.get_attribute(f"#{element}", "data-value")) == total(m, name)
    assert number(page.text_content("#total-received")) == 480  # (rejects are not received)
    assert number(page.text_content("#total-rejected")) == 2
    assert sorted(rows(page, "rejected")) == sorted(
        [labels["protocol"], labels["reason"], f"{v:,.0f}"]
        for labels, v in m["tsnet_points_rejected_total"] if v)
    endpoints = {labels["listener"]: labels["endpoint"] for labels, _ in m["tsnet_listener_info"]}
    listeners = {r[0]: r for r in rows(page, "listeners")}
    assert {name: r[2] for name, r in listeners.items()} == endpoints == {
        name: f"tcp:127.0.0.1:{port}" for name, port in site.ports.items()}
    for name in ("opentsdb", "secure", "bare"):  # (the page's own connections are on http)
        assert number(listeners[name][4]) == total(m, "tsnet_connections", listener=name) == 0
    assert listeners["secure"][3] == "token"
    assert rows(page, "storages") == [["default", "sqlite", "writing", "0", "0"]]
    assert page.text_content("#queue-state").startswith("inputs flowing")
    w.shot("console-status.png")

    # live: points sent now show up without a reload, with a rate above 0
    before = number(page.get_attribute("#total-received", "data-value"))
    send_lines(site.ports["opentsdb"], [f"put live.m {site.now + i} {i} host=a\n"
                                        for i in range(50)])
    wait_js(page, "parseFloat(document.getElementById('rate-received').textContent) > 0")
    wait_js(page, f"document.getElementById('total-written').dataset.value === '{before + 50:.0f}'")
    assert number(page.text_content("#total-received")) == before + 50
    wait_js(page, "tsnetConsole.rateChart !== null"
                  " && tsnetConsole.rateChart.data[1].some((v) => v > 0)")
    w.check()


def test_a_port_without_the_read_api_says_so(site: Site, open_page: Any) -> None:
    w = open_page(site.url("bare", "/#explore"))
    w.page.wait_for_selector("#explore-off:not([hidden])")
    assert w.page.is_hidden("#query-form")
    w.check()


# -- explore -------------------------------------------------------------------------------


def test_explore_draws_exactly_what_the_query_answers(site: Site, open_page: Any) -> None:
    w = open_page(site.url("opentsdb", "/#explore"),  # the opentsdb port serves it at /
                  viewport={"width": 1280, "height": 1010})
    page = w.page
    metric = page.locator("[name=metric]").first
    metric.press_sequentially("sys.cp", delay=30)  # suggestions as one types
    wait_js(page, "[...document.querySelectorAll('#suggest-metrics option')]"
                  ".map((o) => o.value).join() === 'sys.cpu.idle,sys.cpu.user'")
    metric.fill("sys.cpu.user")
    page.click(".add-filter")
    page.fill("[name=tagk]", "host")
    page.click("#add-query")
    page.locator("[name=metric]").nth(1).fill("sys.cpu.idle")
    draw(page)

    query = json.loads(page.text_content("#query-json"))
    assert query == {"start": "1h-ago", "queries": [
        {"aggregator": "sum", "metric": "sys.cpu.user",
         "filters": [{"type": "wildcard", "tagk": "host", "filter": "*", "groupBy": True}]},
        {"aggregator": "sum", "metric": "sys.cpu.idle"}]}
    answer = site.query("opentsdb", query)
    drawn = chart(page)
    assert len(drawn["series"]) == 4
    assert [len(s) for s in drawn["series"]] == [120, 120, 120, 60]
    assert drawn["labels"] == [f"sys.cpu.user{{cpu=0, host={h}}}" for h in HOSTS] + [
        "sys.cpu.idle{host=web01}"]
    assert drawn["labels"] == [label(r) for r in answer]
    assert drawn["series"] == as_drawn(answer)
    assert [t for t, _ in drawn["series"][0]] == site.times["user"]
    assert page.text_content("#chart-summary") == "4 series, 420 points."
    curl = page.text_content("#query-curl")
    assert curl.startswith(f"curl -s -XPOST '{site.url('opentsdb', '/api/query')}'")

    # the tooltip tells each series' value under the cursor
    over = page.locator("#chart .u-over")
    box = over.bounding_box()
    over.hover(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    page.wait_for_selector("#chart .tooltip:not([hidden])")
    tip = page.text_content("#chart .tooltip")
    assert "sys.cpu.user{cpu=0, host=web01}" in tip and "host=web03" in tip
    w.shot("console-explore.png", full=False)

    # downsampled and as a rate: still exactly the answer
    page.fill("[name=ds-interval]", "5m")
    page.select_option("[name=ds-function]", "max")
    page.check("[name=rate]")
    draw(page)
    query = json.loads(page.text_content("#query-json"))
    assert query["queries"][0]["downsample"] == "5m-max" and query["queries"][0]["rate"] is True
    drawn = chart(page)
    assert drawn["series"] == as_drawn(site.query("opentsdb", query))
    assert 5 <= len(drawn["series"][0]) <= 7  # half an hour in 5-minute buckets, as rates

    # an absolute range (the page's time zone is UTC here)
    page.uncheck("[name=rate]")
    page.fill("[name=ds-interval]", "")
    page.select_option("#range", "absolute")
    start, end = site.now - 900, site.now - 300

    def utc(t: int) -> str:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

    page.fill("#from", utc(start))
    page.fill("#to", utc(end))
    draw(page)
    query = json.loads(page.text_content("#query-json"))
    assert (query["start"], query["end"]) == (start * 1000, end * 1000)
    drawn = chart(page)
    assert [t for t, _ in drawn["series"][0]] == [t for t in site.times["user"]
                                                   if start <= t <= end]
    assert drawn["series"] == as_drawn(site.query("opentsdb", query))
    w.check()


def test_a_query_error_is_shown_not_thrown(site: Site, open_page: Any) -> None:
    w = open_page(site.url("http", "/#explore"))
    page = w.page
    page.fill("[name=metric]", "no.such.metric")
    page.click("#draw")
    page.wait_for_selector("#query-error:not([hidden])")
    assert "No such name for 'metrics'" in page.text_content("#query-error")
    page.fill("[name=metric]", "sys.cpu.user")
    page.click(".add-filter")
    page.fill("[name=tagk]", "host")
    page.select_option("[name=type]", "literal_or")
    page.click("#draw")  # (checked before anything is sent)
    wait_js(page, "document.getElementById('query-error').textContent"
                  " === 'Give the literal_or filter on host a value.'")
    page.click(".remove-filter")
    page.fill("[name=metric]", "sys.cpu.user")
    page.fill("[name=ds-interval]", "5x")
    page.click("#draw")
    wait_js(page, "document.getElementById('query-error').textContent.includes('5x')")
    # (the 400s are the query's answers, logged by Chromium as failed loads)
    w.check(allowed=r"Failed to load resource: the server responded with a status of 400")


# -- tokens --------------------------------------------------------------------------------


def test_a_read_token_limited_by_a_tag_sees_only_its_series(site: Site, open_page: Any) -> None:
    w = open_page(site.url("secure"))
    page = w.page
    page.wait_for_selector("#login:not([hidden])")
    assert page.is_hidden("#status") and page.is_hidden("#tabs")
    page.fill("#token", site.tokens["writer"]["write"])
    page.click("#login-form button")
    wait_js(page, "document.getElementById('login-error').textContent.includes('WRITE token')")
    page.fill("#token", "nobody:nothing-at-all")
    page.click("#login-form button")
    wait_js(page, "document.getElementById('login-error').textContent.includes('not known')")

    page.fill("#token", site.tokens["reader"]["read"])
    page.click("#login-form button")
    page.wait_for_selector("#status:not([hidden])")
    assert page.text_content("#who-text") == "Solution iot · only host=web01"
    assert rows(page, "solutions") == [["iot", "default", "not counted (token tags)", ""]]
    w.shot("console-token-status.png")

    page.click("#tab-explore")
    page.fill("[name=metric]", "temp")
    page.click(".add-filter")
    page.fill("[name=tagk]", "host")
    value = page.locator("[name=filter]")
    value.press_sequentially("web", delay=30)
    wait_js(page, "document.querySelectorAll('#suggest-tagv option').length > 0")
    assert js(page, "return [...document.querySelectorAll('#suggest-tagv option')]"
                    ".map((o) => o.value)") == ["web01"]
    value.fill("")
    draw(page)
    drawn = chart(page)
    assert drawn["labels"] == ["temp{host=web01}"]
    assert [t for t, _ in drawn["series"][0]] == site.times["temp"]
    assert all(r["tags"] == {"host": "web01"} for r in js(page, "return tsnetConsole.lastResult"))
    query = json.loads(page.text_content("#query-json"))
    assert drawn["series"] == as_drawn(site.query("secure", query, site.tokens["reader"]["read"]))
    # the writer's solution holds web02 too: only the token's tag hides it
    assert {label(r) for r in site.query("secure", query, site.tokens["writer"]["read"])} == {
        "temp{host=web01}", "temp{host=web02}"}
    assert '-u "$READ_ID:$READ_KEY"' in page.text_content("#query-curl")
    w.shot("console-token-explore.png")

    page.click("#sign-out")
    page.wait_for_selector("#login:not([hidden])")
    assert page.is_hidden("#status") and page.is_hidden("#explore")
    # the two refused tokens were answered 401 and 403, which Chromium logs
    w.check(allowed=r"Failed to load resource: the server responded with a status of 40[13]")


# -- a phone ----------------------------------------------------------------------------------


def test_on_a_phone_nothing_is_wider_than_the_screen(site: Site, open_page: Any) -> None:
    w = open_page(site.url("http"), viewport={"width": 390, "height": 844},
                  device_scale_factor=2, is_mobile=True, has_touch=True)
    page = w.page
    page.wait_for_selector("#status:not([hidden])")
    wait_js(page, "tsnetConsole.rateChart !== null")
    assert js(page, "return document.documentElement.scrollWidth") <= 390
    w.shot("console-phone-status.png")
    page.click("#tab-explore")
    page.fill("[name=metric]", "sys.cpu.user")
    page.click(".add-filter")
    page.fill("[name=tagk]", "host")
    draw(page)
    assert len(chart(page)["series"]) == 3
    assert js(page, "return document.documentElement.scrollWidth") <= 390
    assert js(page, "return tsnetConsole.chart.width") <= 390
    over = page.locator("#chart .u-over")
    box = over.bounding_box()
    over.tap(position={"x": box["width"] * 0.6, "y": box["height"] * 0.5})
    page.wait_for_selector("#chart .tooltip:not([hidden])")
    page.wait_for_timeout(300)  # (the tap's emulated mouse leave came and went)
    assert page.is_visible("#chart .tooltip")
    w.shot("console-phone-explore.png", full=False)
    w.check()
