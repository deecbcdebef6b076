"""Grafana's OpenTSDB data source as the client: its exact requests, replayed.

Read in grafana/grafana (the requests below are copied from these files):

- ``public/app/plugins/datasource/opentsdb/datasource.ts`` at commit
  05b6b75d9b7fb1e05e3ce78bf8a8195cd8de360e: the browser-side data source of
  the "==2.3" version setting (``tsdbVersion`` 3).  ``performTimeSeriesQuery``
  POSTs ``/api/query`` with ``{start, queries, msResolution, globalAnnotations,
  showQuery: true}`` (``end`` only for absolute ranges; times in epoch ms);
  ``mapMetricsToTargets`` maps each result to its panel target by
  ``result.query.index``; ``transformMetricData`` turns ``dps`` keys (seconds)
  into ``[value, key * 1000]``; ``_saveTagKeys`` keeps ``tags`` keys plus
  ``aggregateTags``.  ``metricFindQuery`` sends ``GET /api/suggest?type=...
  &q=...&max=<lookupLimit, 1000>`` and, for tag keys and values,
  ``GET /api/search/lookup?m=<metric>&limit=1000`` and
  ``m=<metric>{<key>=*[,<k>=<v>...]}&limit=1000``, reading
  ``results[].tags``; ``getAggregators`` ``GET /api/aggregators``,
  ``getFilterTypes`` ``GET /api/config/filters`` (the keys).
- ``pkg/tsdb/opentsdb/utils.go`` at commit
  04e4a7485abf5a515df3a83a0af4b10670af4218 and the data source's Go
  ``QueryData``/``CallResource``/``CheckHealth`` (current Grafana, where the
  browser goes through the Grafana server): ``BuildMetric`` makes one sub-query
  (``downsample`` ``<interval>-<agg>[-<fill>]``, ``filters`` or ``tags``,
  ``rate``/``rateOptions``), ``CreateRequest`` POSTs ``api/query`` with
  ``Content-Type: application/json`` and ``{start, end, queries}`` in epoch
  seconds, adding ``?arrays=true`` for version 4 (2.4), whose ``dps`` it reads
  as ``[][]float64``, else ``map[string]float64``.  Resource calls:
  ``GET api/suggest`` with the browser's query string, ``GET
  api/search/lookup?limit=1000&m=<metric>`` (tag keys) and
  ``?limit=<lookupLimit>&m=<metric>{<key>=*}`` (tag values; Go's
  ``url.Values.Encode`` sorts and escapes), ``GET api/aggregators``, ``GET
  /api/config/filters``; the health check is ``GET api/suggest?q=cpu&type=metrics``.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer

from tests.helpers.clients import connect_line
from tsnet.testing.fixtures import BASE_CONFIG

BROWSER_HEADERS = {  # what Angular/fetch send through Grafana's proxy
    "Accept": "application/json, text/plain, */*",
    "Content-Type": "application/json;charset=utf-8",
}
GO_HEADERS = {"Content-Type": "application/json", "User-Agent": "Grafana/11.0.0",
              "Accept-Encoding": "gzip"}


@pytest.fixture
def storage_config(each_backend: str) -> str:
    """Every test here on SQLite and on Redis."""
    return each_backend


@defer.inlineCallbacks
def replay(method: str, server: Any, path: str, body: Any = None,
           headers: dict | None = None) -> Any:
    """Send exactly ``path`` (already encoded, as the client encodes it)."""
    target = f"http://127.0.0.1:{server.port('opentsdb')}{path}".encode("ascii")
    data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
    resp = yield treq.request(method, target, data=data,
                              headers={k: [v] for k, v in (headers or {}).items()})
    content = yield resp.content()
    return resp.code, json.loads(content)


@defer.inlineCallbacks
def seed(server: Any, now: int, auth: str | None = None) -> Any:
    """Ten minutes of two hosts in lga and one in nyc, pushed as a device would."""
    start = now - now % 60 - 600
    lines = [f"auth {auth}\n"] if auth else []
    for i in range(60):
        t = start + 10 * i
        lines.append(f"put sys.cpu.user {t} {i} host=web01 dc=lga\n")
        lines.append(f"put sys.cpu.user {t} {i * 2} host=web02 dc=lga\n")
        lines.append(f"put sys.cpu.user {t} {100 + i} host=web03 dc=nyc\n")
    lines.append(f"put sys.mem {start} 512 host=web01\n")
    c = yield connect_line(server.port("opentsdb"))
    c.send("".join(lines) + "exit\n")
    yield c.wait_closed()
    yield server.flush()
    return start


# -- what Grafana does with the answers, in Python --------------------------------------


def frontend_series(results: list, targets: list[str]) -> dict:
    """datasource.ts (version 3): result -> (target refId, label tags, datapoints)."""
    out = {}
    for md in results:
        index = md["query"]["index"]  # mapMetricsToTargets, tsdbVersion === 3
        datapoints = [[v, int(k) * 1000] for k, v in md["dps"].items()]
        assert all(isinstance(v, (int, float)) or v is None for v, _ in datapoints)
        tag_keys = [*md["tags"].keys(), *md["aggregateTags"]]
        out.setdefault(targets[index], []).append((md["tags"], tag_keys, datapoints))
    return out


def go_frames(results: list, version: int) -> list[tuple]:
    """utils.go ParseResponse: [][]float64 for version 4, map[string]float64 else."""
    frames = []
    for md in results:
        assert isinstance(md["metric"], str) and isinstance(md["tags"], dict)
        assert all(isinstance(v, str) for v in md["tags"].values())
        assert isinstance(md["aggregateTags"], list)
        if version == 4:
            rows = [(int(p[0]), p[1]) for p in md["dps"]]
        else:
            rows = [(int(k), md["dps"][k]) for k in sorted(md["dps"])]  # sort.Strings
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in rows)
        frames.append((md["metric"], md["tags"], rows))
    return frames


# -- the replays -----------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_browser_metric_and_tag_suggestions(server: Any) -> None:
    yield seed(server, int(time.time()))
    # testDatasource / metricFindQuery('metrics(sys)') / suggest_tagk / suggest_tagv
    cases = [
        ("/api/suggest?type=metrics&q=cpu&max=1000", []),
        ("/api/suggest?type=metrics&q=sys&max=1000", ["sys.cpu.user", "sys.mem"]),
        ("/api/suggest?type=metrics&q=&max=1000", ["sys.cpu.user", "sys.mem"]),
        ("/api/suggest?type=tagk&q=&max=1000", ["dc", "host"]),
        ("/api/suggest?type=tagv&q=web&max=1000", ["web01", "web02", "web03"]),
    ]
    for path, expected in cases:
        code, got = yield replay("GET", server, path, headers=BROWSER_HEADERS)
        assert (path, code, got) == (path, 200, expected)
    # getAggregators: sorted list; getFilterTypes: the keys of the object
    code, aggs = yield replay("GET", server, "/api/aggregators", headers=BROWSER_HEADERS)
    assert code == 200 and sorted(aggs) == aggs
    assert {"avg", "sum", "min", "max", "dev", "zimsum", "mimmin", "mimmax"} <= set(aggs)
    code, filters = yield replay("GET", server, "/api/config/filters", headers=BROWSER_HEADERS)
    assert sorted(filters) == ["iliteral_or", "iwildcard", "literal_or", "not_iliteral_or",
                               "not_key", "not_literal_or", "regexp", "wildcard"]


@pytest_twisted.inlineCallbacks
def test_browser_tag_keys_and_values_lookups(server: Any) -> None:
    yield seed(server, int(time.time()))
    # _performMetricKeyLookup('sys.cpu.user'): every tagk of results[].tags
    code, got = yield replay("GET", server, "/api/search/lookup?m=sys.cpu.user&limit=1000",
                             headers=BROWSER_HEADERS)
    assert code == 200
    tagks: list[str] = []
    for r in got["results"]:
        tagks += [k for k in r["tags"] if k not in tagks]
    assert sorted(tagks) == ["dc", "host"]
    # _performMetricKeyValueLookup('sys.cpu.user', 'host') and ('...', 'host, dc=lga')
    for path, expected in [
        ("/api/search/lookup?m=sys.cpu.user%7Bhost%3D*%7D&limit=1000",
         ["web01", "web02", "web03"]),
        ("/api/search/lookup?m=sys.cpu.user%7Bhost%3D*%2Cdc%3Dlga%7D&limit=1000",
         ["web01", "web02"]),
    ]:
        code, got = yield replay("GET", server, path, headers=BROWSER_HEADERS)
        tagvs: list[str] = []
        for r in got["results"]:
            if r["tags"]["host"] not in tagvs:
                tagvs.append(r["tags"]["host"])
        assert (code, tagvs) == (200, expected)


@pytest_twisted.inlineCallbacks
def test_browser_graph_query_version_2_3(server: Any) -> None:
    now = int(time.time())
    start = yield seed(server, now)
    # "Last 1 hour": relative, so no `end`; two targets of one panel
    body = {
        "start": (now - 3600) * 1000,
        "queries": [
            {"metric": "sys.cpu.user", "aggregator": "sum", "downsample": "1m-avg",
             "filters": [{"type": "wildcard", "tagk": "host", "filter": "*", "groupBy": True},
                         {"type": "literal_or", "tagk": "dc", "filter": "lga",
                          "groupBy": False}]},
            {"metric": "sys.cpu.user", "aggregator": "max", "downsample": "5m-max-null",
             "tags": {"dc": "nyc"}},
        ],
        "msResolution": False,
        "globalAnnotations": True,
        "showQuery": True,
    }
    code, got = yield replay("POST", server, "/api/query", body, BROWSER_HEADERS)
    assert code == 200
    series = frontend_series(got, ["A", "B"])
    a = series["A"]
    assert [(tags, keys) for tags, keys, _ in a] == [
        ({"dc": "lga", "host": "web01"}, ["dc", "host"]),
        ({"dc": "lga", "host": "web02"}, ["dc", "host"])]
    web01 = a[0][2]
    assert [v for v, _ in web01] == [2.5 + 6 * i for i in range(10)]  # avg of each minute
    assert [ts for _, ts in web01] == [(start + 60 * i) * 1000 for i in range(10)]
    assert [v for v, _ in a[1][2]] == [5.0 + 12 * i for i in range(10)]
    [(tags, _, b)] = series["B"]
    assert tags == {"dc": "nyc", "host": "web03"}
    # 5m buckets with the null fill: empty buckets from the hour's start are null
    filled = [v for v, _ in b if v is not None]
    assert filled == [max(100 + i for i in range(60) if (start + 10 * i) // 300 == bucket)
                      for bucket in sorted({(start + 10 * i) // 300 for i in range(60)})]
    assert any(v is None for v, _ in b)


@pytest_twisted.inlineCallbacks
def test_go_backend_queries(server: Any) -> None:
    now = int(time.time())
    start = yield seed(server, now)
    # BuildMetric + CreateRequest: one sub-query per request, epoch seconds
    metric = {"aggregator": "sum", "downsample": "1m-avg",
              "filters": [{"filter": "web01|web02", "groupBy": True, "tagk": "host",
                           "type": "literal_or"}],
              "metric": "sys.cpu.user"}
    body = {"start": now - 3600, "end": now, "queries": [metric]}
    for version, path in ((3, "/api/query"), (4, "/api/query?arrays=true")):
        code, got = yield replay("POST", server, path, body, GO_HEADERS)
        assert code == 200
        frames = go_frames(got, version)
        assert [(m, t["host"], rows[0]) for m, t, rows in frames] == [
            ("sys.cpu.user", "web01", (start, 2.5)), ("sys.cpu.user", "web02", (start, 5.0))]
        assert all(len(rows) == 10 for _, _, rows in frames)
    # rate with the Go defaults (dropResets when no counterMax/resetValue), old tags form
    rated = {"aggregator": "sum", "downsample": "1m-max", "metric": "sys.cpu.user",
             "rate": True, "rateOptions": {"counter": False, "dropResets": True},
             "tags": {"host": "web03"}}
    code, got = yield replay("POST", server, "/api/query?arrays=true",
                             {"start": now - 3600, "end": now, "queries": [rated]}, GO_HEADERS)
    [(_, tags, rows)] = go_frames(got, 4)
    assert tags == {"dc": "nyc", "host": "web03"}
    assert {v for _, v in rows} == {0.1}  # +6 per minute


@pytest_twisted.inlineCallbacks
def test_go_backend_resource_calls(server: Any) -> None:
    yield seed(server, int(time.time()))
    cases = [
        ("/api/suggest?q=cpu&type=metrics", []),  # CheckHealth: any 200 is healthy
        ("/api/suggest?max=1000&q=sys.c&type=metrics", ["sys.cpu.user"]),
    ]
    for path, expected in cases:
        code, got = yield replay("GET", server, path, headers=GO_HEADERS)
        assert (code, got) == (200, expected)
    # HandleKeyLookup / HandleKeyValueLookup: url.Values.Encode() of limit and m
    code, got = yield replay("GET", server, "/api/search/lookup?limit=1000&m=sys.cpu.user",
                             headers=GO_HEADERS)
    assert sorted({k for r in got["results"] for k in r["tags"]}) == ["dc", "host"]
    for limit in ("1000", "0"):  # an unset lookupLimit is sent as 0: no limit
        code, got = yield replay(
            "GET", server, f"/api/search/lookup?limit={limit}&m=sys.cpu.user%7Bhost%3D%2A%7D",
            headers=GO_HEADERS)
        assert sorted({r["tags"]["host"] for r in got["results"]}) == ["web01", "web02",
                                                                        "web03"]
    code, got = yield replay("GET", server, "/api/aggregators", headers=GO_HEADERS)
    assert "sum" in got
    code, got = yield replay("GET", server, "/api/config/filters", headers=GO_HEADERS)
    assert "literal_or" in got


@pytest_twisted.inlineCallbacks
def test_basic_auth_with_a_read_token(make_server: Any) -> None:
    """The data source's "Basic auth" setting with a READ token's id and key: the
    token's tags narrow every answer Grafana gets."""
    from tsnet.auth import mint_token
    from tsnet.records import SolutionRecord

    server = yield make_server(BASE_CONFIG.replace(
        "endpoint = tcp:0:interface=127.0.0.1\n\n[listener:http]",
        "endpoint = tcp:0:interface=127.0.0.1\nauth = token\n\n[listener:http]"))
    yield server.core.catalog.create_solution(SolutionRecord(name="iot"))
    yield server.core.storages.refresh()
    writer, w = mint_token("iot")
    reader, r = mint_token("iot", tags={"dc": "lga"})
    yield server.core.catalog.save_token(writer)
    yield server.core.catalog.save_token(reader)
    now = int(time.time())
    yield seed(server, now, auth=w["write"])
    token_id, _, key = r["read"].partition(":")
    auth = "Basic " + base64.b64encode(f"{token_id}:{key}".encode()).decode()
    headers = {**BROWSER_HEADERS, "Authorization": auth}
    code, got = yield replay("GET", server, "/api/suggest?type=tagv&q=&max=1000",
                             headers=headers)
    assert (code, got) == (200, ["lga", "web01", "web02"])
    body = {"start": (now - 3600) * 1000, "queries": [
        {"metric": "sys.cpu.user", "aggregator": "sum", "downsample": "10m-count",
         "filters": [{"type": "wildcard", "tagk": "host", "filter": "*", "groupBy": True}]}],
        "msResolution": False, "globalAnnotations": True, "showQuery": True}
    code, got = yield replay("POST", server, "/api/query", body, headers)
    assert code == 200
    assert [tags["host"] for tags, _, _ in frontend_series(got, ["A"])["A"]] == [
        "web01", "web02"]
    code, got = yield replay("POST", server, "/api/query", body, BROWSER_HEADERS)
    assert (code, got) == (401, {"error": {"code": 401, "message": "Unauthorized"}})
