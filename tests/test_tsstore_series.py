"""A store's numeric fields read as series through OpenTSDB's /api/query and
/api/suggest (what Grafana's OpenTSDB data source calls), with the store key."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
import treq

from tests.helpers.tsstore import tsstore_config
from tsnet.plugin import Record
from tsnet.protocols.tsstore.series import columns

CONFIG = tsstore_config("tsstore opentsdb", "auth = token")

S = 1_000_000_000


def test_columns_take_numbers_only() -> None:
    recs = [Record(1, b'{"t": 1, "h": 2.5, "ok": true, "s": "x", "n": {"a": 1}}'),
            Record(2, b'{"t": 3}'), Record(3, b"[1, 2]"), Record(4, b"nope")]
    assert columns("st", "json", None, recs) == {"st.t": ([1, 2], [1, 3]),
                                                 "st.h": ([1], [2.5])}
    assert columns("st", "json", None, recs, "st.t") == {"st.t": ([1, 2], [1, 3])}
    assert columns("st", "json", None, recs, "other.t") == {}
    fields = [{"index": 1, "name": "temp", "type": "float64"}]
    assert columns("sc", "schema", fields, [Record(5, b'{"1":7.5}')]) == {
        "sc.temp": ([5], [7.5])}


@pytest_twisted.ensureDeferred
async def test_grafana_draws_a_store(make_server: Any) -> None:
    server = await make_server(CONFIG)
    base = f"http://127.0.0.1:{server.port('http')}"
    stores = server.core.plugins["tsstore"].stores_for(server.core)
    store, key, _ = await stores.create("plant", data_type="schema")
    store.schema = store.schema.evolve([{"index": 1, "name": "temp", "type": "float64"},
                                        {"index": 2, "name": "site", "type": "string"}])
    await stores.save(store)
    _, other_key, _ = await stores.create("other")
    for i in range(5):
        body = json.dumps({"timestamp": (1_700_000_000 + 60 * i) * S,
                           "data": {"temp": 20 + i, "site": "a"}}).encode()
        resp = await treq.post(f"{base}/api/stores/plant/data", data=body, headers={
            "X-API-Key": key, "Content-Type": "application/json"})
        assert resp.code == 201, await treq.content(resp)
    url = f"{base}/api/query?start=1700000000&end=1700000300&m=sum:plant.temp"
    resp = await treq.get(url, headers={"X-API-Key": key})
    body = json.loads(await treq.content(resp))
    assert resp.code == 200, body
    assert body[0]["metric"] == "plant.temp"
    assert body[0]["dps"] == {str(1_700_000_000 + 60 * i): 20 + i for i in range(5)}
    resp = await treq.get(f"{base}/api/suggest?type=metrics&q=plant", headers={
        "X-API-Key": key})
    assert json.loads(await treq.content(resp)) == ["plant.temp"]
    # the key of another store sees nothing of this one
    resp = await treq.get(url, headers={"X-API-Key": other_key})
    assert resp.code == 400
    await treq.content(resp)
