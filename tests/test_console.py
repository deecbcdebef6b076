"""The web console over HTTP (tests/test_console_browser.py drives it in
Chromium): its page and files behind a strict CSP, on ``http`` listeners and
on the ``opentsdb`` port; its status built from the metric objects that render
``/metrics``; READ tokens on ``auth = token`` listeners."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import pytest_twisted
import treq

from tests.helpers.clients import connect_line, wait_for
from tests.test_ingest_faults import Lock
from tsnet.console.assets import CSP, load_assets
from tsnet.testing.fixtures import make_token

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_356_998_400

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[storage:default]
backend = sqlite
busy_timeout = 0.05

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
apis = console opentsdb metrics

[listener:bare]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = console
"""


def base(server: Any, listener: str) -> str:
    return f"http://127.0.0.1:{server.port(listener)}"


async def get(url: str, **kw: Any) -> tuple[Any, bytes]:
    resp = await treq.get(url, **kw)
    return resp, await treq.content(resp)


def header(resp: Any, name: str) -> str | None:
    v = resp.headers.getRawHeaders(name)
    return v[0] if v else None


def basic(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}


def metrics_text(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``/metrics`` parsed: sample name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def total(parsed: dict, name: str, **match: str) -> float:
    return sum(v for labels, v in parsed.get(name, ())
               if all(labels.get(k) == want for k, want in match.items()))


# -- the page and its files ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_page_is_served_at_the_root_of_http_and_opentsdb_ports(
        make_server: Any) -> None:
    server = await make_server(CONFIG)
    page = load_assets()["index.html"].body
    for listener in ("http", "opentsdb", "secure"):
        for path in ("/", "/console", "/console/"):
            resp, body = await get(base(server, listener) + path)
            assert resp.code == 200, (listener, path)
            assert body == page
            assert header(resp, "content-type") == "text/html; charset=utf-8"
            assert header(resp, "content-security-policy") == CSP.decode()
            assert header(resp, "x-content-type-options") == "nosniff"
            assert header(resp, "x-frame-options") == "DENY"
            assert header(resp, "referrer-policy") == "no-referrer"


@pytest_twisted.ensureDeferred
async def test_static_files_are_the_packaged_ones_by_name_only(make_server: Any) -> None:
    server = await make_server(CONFIG)
    url = base(server, "http") + "/console/static/"
    for name, kind in (("console.js", "text/javascript; charset=utf-8"),
                       ("console.css", "text/css; charset=utf-8"),
                       ("favicon.svg", "image/svg+xml"),
                       ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
                       ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
                       ("vendor/VENDORED.txt", "text/plain; charset=utf-8")):
        resp, body = await get(url + name)
        assert (resp.code, header(resp, "content-type")) == (200, kind), name
        assert body == (resources.files("tsnet.console") / "static" / name).read_bytes()
        assert header(resp, "content-security-policy") == CSP.decode()
        etag = header(resp, "etag")
        again, empty = await get(url + name, headers={"If-None-Match": etag})
        assert (again.code, empty) == (304, b"")
    for name in ("nope.js", "../plugin.py", "..%2Fplugin.py", "vendor", "", "static/console.js"):
        resp, body = await get(url + name)
        assert resp.code == 404, name
        assert header(resp, "content-type") == "text/plain; charset=utf-8"


@pytest_twisted.ensureDeferred
async def test_the_console_only_reads(make_server: Any) -> None:
    server = await make_server(CONFIG)
    for path in ("/", "/console/api/status", "/console/static/console.js"):
        resp = await treq.post(base(server, "http") + path, data=b"x")
        body = await treq.content(resp)
        assert (resp.code, header(resp, "allow")) == (405, "GET, HEAD"), path
        assert body == b"405 Method Not Allowed: the console only reads\n"
        resp = await treq.head(base(server, "http") + path)
        assert resp.code == 200
        assert await treq.content(resp) == b""


@pytest_twisted.ensureDeferred
async def test_an_opentsdb_listener_can_leave_the_console_out(make_server: Any) -> None:
    server = await make_server(CONFIG.replace(
        "[listener:opentsdb]\n", "[listener:opentsdb]\nconsole = no\n"))
    resp, body = await get(base(server, "opentsdb") + "/")
    assert resp.code == 404
    assert json.loads(body) == {"error": {"code": 404, "message": "Endpoint not found"}}
    resp, _ = await get(base(server, "http") + "/")
    assert resp.code == 200


def test_the_page_has_no_inline_script_style_or_other_host() -> None:
    """What the CSP would block is not there to begin with."""
    found: list[str] = []

    class Check(HTMLParser):
        script_open = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            names = {k for k, _ in attrs}
            if "style" in names or any(k.startswith("on") for k in names):
                found.append(f"<{tag}> has {sorted(names)}")
            if tag == "style":
                found.append("<style>")
            if tag == "script" and "src" not in names:
                found.append("inline <script>")
            for k, v in attrs:
                if k in ("src", "href") and v and not v.startswith(("/console/", "#")):
                    found.append(f"{k}={v}")

    static = resources.files("tsnet.console") / "static"
    Check().feed((static / "index.html").read_text())
    assert found == []
    script = (static / "console.js").read_text()
    assert "innerHTML" not in script and "eval(" not in script
    assert re.search(r"https?://|[`'\"]//", script) is None  # every fetch is of this server


def test_the_vendored_library_is_the_recorded_release() -> None:
    vendor = resources.files("tsnet.console") / "static" / "vendor"
    record = (vendor / "VENDORED.txt").read_text()
    assert "version:  1.6.32" in record and "licence:  MIT" in record
    sums = dict((name, digest) for digest, name in re.findall(r"([0-9a-f]{64})  (\S+)", record))
    assert sorted(sums) == ["uPlot.LICENSE", "uPlot.iife.min.js", "uPlot.min.css"]
    for name, digest in sums.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert (vendor / "uPlot.iife.min.js").read_text().startswith(
        "/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert "MIT License" in (vendor / "uPlot.LICENSE").read_text()


def test_the_package_data_ships_every_static_file() -> None:
    """pyproject's package-data globs cover every file under static/ (a
    non-editable install ships exactly those)."""
    text = (ROOT / "pyproject.toml").read_text()
    globs = json.loads(re.search(r'"tsnet\.console" = (\[.*?\])', text).group(1))
    static = ROOT / "src/tsnet/console"
    shipped = {p for g in globs for p in static.glob(g) if p.is_file()}
    assert shipped == {p for p in (static / "static").rglob("*") if p.is_file()}


# -- status ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_is_what_metrics_says(make_server: Any) -> None:
    server = await make_server(CONFIG)
    c = await connect_line(server.port("opentsdb"))
    c.send("".join(f"put m {T0 + i} {i} host=h{i % 2}\n" for i in range(10)))
    c.send("put m x 1 host=a\nput\n")
    await c.wait_lines(2)
    await wait_for(lambda: server.core.metrics.points_written.labels("opentsdb")._value.get()
                   == 10)
    c.close()
    await c.wait_closed()
    resp, body = await get(base(server, "http") + "/console/api/status")
    assert resp.code == 200
    assert header(resp, "content-type") == "application/json; charset=utf-8"
    assert header(resp, "cache-control") == "no-store"
    status = json.loads(body)
    _, text = await get(base(server, "http") + "/metrics")
    m = metrics_text(text.decode())

    assert status["points"]["received_total"] == total(m, "tsnet_points_received_total") == 10
    assert status["points"]["written_total"] == total(m, "tsnet_points_written_total") == 10
    assert status["points"]["received"] == {"opentsdb": 10}
    rejected = {(r["protocol"], r["reason"]): r["count"] for r in status["rejected"]}
    assert rejected == {(labels["protocol"], labels["reason"]): v
                        for labels, v in m["tsnet_points_rejected_total"] if v}
    assert sum(rejected.values()) == status["points"]["rejected_total"] == 2
    assert status["queue"]["items"] == total(m, "tsnet_write_queue_items") == 0
    assert status["queue"]["paused"] is False and status["queue"]["high_watermark"] == 400000
    endpoints = {labels["listener"]: labels["endpoint"] for labels, _ in m["tsnet_listener_info"]}
    assert {ln["name"]: ln["endpoint"] for ln in status["listeners"]} == endpoints == {
        name: f"tcp:127.0.0.1:{server.port(name)}"
        for name in ("opentsdb", "http", "secure", "bare")}
    listeners = {ln["name"]: ln for ln in status["listeners"]}
    assert listeners["opentsdb"]["connections"] == 0
    assert listeners["http"]["connections"] == total(
        m, "tsnet_connections", listener="http") >= 1
    assert (listeners["secure"]["auth"], listeners["http"]["protocol"]) == ("token", "http")
    assert status["storages"] == [{"name": "default", "backend": "sqlite", "failing": False,
                                   "retry_delay": 0,
                                   "errors": {"unavailable": 0, "bad": 0}}]
    assert status["principal"] == {"solution": "default", "tags": {}, "token": False}
    assert status["version"] and status["poll"] > 0 and status["time"] > 0

    async def counted() -> Any:
        _, body = await get(base(server, "http") + "/console/api/status")
        solutions = json.loads(body)["solutions"]
        return solutions if all(s["counted"] for s in solutions) else None

    solutions = await wait_for(counted)
    assert solutions == [{"name": "default", "storage": "default", "description": "",
                          "points": 10, "counted": True, "read_here": True}]


@pytest_twisted.ensureDeferred
async def test_status_shows_a_failing_storage_and_its_retries(make_server: Any) -> None:
    server = await make_server(CONFIG)
    url = base(server, "http") + "/console/api/status"
    lock = Lock(server)
    try:
        c = await connect_line(server.port("opentsdb"))
        c.send("".join(f"put m {T0 + i} {i} host=a\n" for i in range(5)))

        async def failing() -> Any:
            _, body = await get(url)
            s = json.loads(body)
            return s if s["storages"][0]["failing"] else None

        status = await wait_for(failing)
        storage = status["storages"][0]
        assert storage["retry_delay"] > 0 and storage["errors"]["unavailable"] >= 1
        assert status["queue"]["items"] == 5
    finally:
        lock.release()

    async def writing() -> Any:
        _, body = await get(url)
        s = json.loads(body)
        return s if not s["storages"][0]["failing"] and s["queue"]["items"] == 0 else None

    status = await wait_for(writing)
    assert status["storages"][0]["retry_delay"] == 0
    assert status["points"]["written_total"] == 5
    c.close()


@pytest_twisted.ensureDeferred
async def test_a_token_listener_wants_a_read_token_and_shows_only_its_solution(
        make_server: Any) -> None:
    server = await make_server(CONFIG)
    _, iot = await make_token(server, "iot")
    _, tagged = await make_token(server, "iot", tags={"host": "h1"})
    await make_token(server, "other")
    url = base(server, "secure") + "/console/api/status"

    resp, body = await get(base(server, "secure") + "/console/api/access")
    assert (resp.code, json.loads(body)) == (
        200, {"auth": "token", "listener": "secure", "explore": True})
    resp, body = await get(url)
    assert (resp.code, json.loads(body)) == (401, {"error": "a READ token is needed"})
    assert header(resp, "www-authenticate") == 'Bearer realm="console"'  # (no browser dialog)
    resp, body = await get(url, headers=basic("nobody:nothing-at-all"))
    assert resp.code == 401
    resp, body = await get(url, headers=basic(iot["write"]))
    assert (resp.code, json.loads(body)["error"]) == (
        403, "a READ token is needed, not a WRITE token")

    async def counted(headers: dict) -> Any:
        _, body = await get(url, headers=headers)
        s = json.loads(body)
        return s if all(x["counted"] for x in s["solutions"]) or s["principal"]["tags"] else None

    status = await wait_for(lambda: counted(basic(iot["read"])))
    assert status["principal"] == {"solution": "iot", "tags": {}, "token": True}
    assert [s["name"] for s in status["solutions"]] == ["iot"]
    assert status["solutions"][0]["points"] == 0
    # the key alone as the password (no id), and the other token sources, work too
    resp, _ = await get(url, headers={"Authorization": "Basic " + base64.b64encode(
        (":" + iot["read"]).encode()).decode()})
    assert resp.code == 200
    resp, _ = await get(url, headers={"X-API-Key": iot["read"]})
    assert resp.code == 200

    resp, body = await get(url, headers=basic(tagged["read"]))
    status = json.loads(body)
    assert status["principal"] == {"solution": "iot", "tags": {"host": "h1"}, "token": True}
    # a tag-limited token is not told the solution's total
    assert [(s["name"], s["points"], s["counted"]) for s in status["solutions"]] == [
        ("iot", None, False)]

    # an auth = none listener lists every solution; its own one is the one read there
    _, body = await get(base(server, "http") + "/console/api/status")
    solutions = json.loads(body)["solutions"]
    assert [(s["name"], s["read_here"]) for s in solutions] == [
        ("default", True), ("iot", False), ("other", False)]


@pytest_twisted.ensureDeferred
async def test_access_tells_whether_the_port_answers_queries(make_server: Any) -> None:
    server = await make_server(CONFIG)
    for listener, explore in (("http", True), ("opentsdb", True), ("bare", False)):
        resp, body = await get(base(server, listener) + "/console/api/access")
        assert (resp.code, json.loads(body)) == (
            200, {"auth": "none", "listener": listener, "explore": explore})
