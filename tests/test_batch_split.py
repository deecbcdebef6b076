"""A long queue written in parts: the cut keeps every item once, in the order a
storage writes them, and a server writes a long queue in parts that commit one
by one, with the last write of a point still winning."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.clients import wait_for
from tsnet import batch_split, ingest, isolate
from tsnet.model import Batch, Meta, WriteBatch, anonymous, series_key

_point = st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5), st.integers(-3, 3))
_solution = st.tuples(
    st.lists(_point, max_size=8),  # columns
    st.lists(_point, max_size=8),  # rows, after the columns
    st.integers(0, 2),  # meta records
    st.booleans(),  # a reclaim
)


def _batch(cols: list[tuple], rows: list[tuple], meta: int, reclaim: bool) -> Batch:
    b = Batch()
    for host, t, v in cols:
        b.samples.add(series_key("m", {"host": host}), t, v)
    for host, t, v in rows:
        b.samples.keys.append(series_key("m", {"host": host}))
        b.samples.times.append(t)
        b.samples.values.append(v)
    b.samples.recount()
    b.meta = [Meta(kind="metric", name=f"x{i}", fields={}) for i in range(meta)]
    b.reclaim_ns = 7 if reclaim else None
    return b


def _writes(parts: list[WriteBatch]) -> dict[str, dict[Any, list[tuple]]]:
    """Per solution and series, the points in the order storage writes them:
    part after part, in each its columns, then its rows."""
    out: dict[str, dict[Any, list[tuple]]] = {}
    for wb in parts:
        for solution, b in wb.by_solution.items():
            for key, t, v, _x in isolate._raw_points(b.samples):
                out.setdefault(solution, {}).setdefault(key, []).append((t, v))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(_solution, min_size=1, max_size=3), st.integers(1, 12))
def test_the_parts_hold_every_item_once_in_the_order_storage_writes_it(
    solutions: list[tuple], most: int,
) -> None:
    wb = WriteBatch({f"s{i}": _batch(*s) for i, s in enumerate(solutions)})
    expected = _writes([wb])
    lists = {name: (b.meta[:], b.reclaim_ns) for name, b in wb.by_solution.items()}
    total = sum(isolate.kinds(wb))
    longest = max((len(c.times) for b in wb.by_solution.values()
                   for c in b.samples.columns.values()), default=0)

    parts = batch_split.cut(wb, most)

    assert _writes(parts) == expected
    assert sum(sum(isolate.kinds(p)) for p in parts) == total
    assert all(p.item_count() for p in parts) or total == 0
    for p in parts:  # (a part passes the most by one column's points at most)
        assert sum(isolate.kinds(p)) <= most + max(longest, 2) + 2
        for b in p.by_solution.values():  # counts kept
            assert b.samples.count == (sum(len(c.times) for c in b.samples.columns.values())
                                       + len(b.samples.keys))
    for name, (meta, reclaim) in lists.items():  # lists go with the first part of theirs
        mine = [p.by_solution[name] for p in parts if name in p.by_solution]
        if not mine:  # (only a solution with nothing at all is left out)
            assert not meta and reclaim is None and name not in expected
            continue
        first = mine[0]
        assert first.meta == meta and first.reclaim_ns == reclaim
        assert all(not p.by_solution[name].meta and p.by_solution[name].reclaim_ns is None
                   for p in parts if name in p.by_solution and p.by_solution[name] is not first)
    if total > most + longest + 2:
        assert len(parts) > 1


def test_a_part_s_counts_are_taken_from_the_protocols_in_order() -> None:
    counts = {"telnet": [5, 0, 0, 1, 0], "udp": [3, 2, 0, 0, 0]}
    taken = batch_split.take(counts, [6, 1, 0, 1, 0])
    assert taken == {"telnet": [5, 0, 0, 1, 0], "udp": [1, 1, 0, 0, 0]}
    assert counts == {"telnet": [0, 0, 0, 0, 0], "udp": [2, 1, 0, 0, 0]}
    assert batch_split.take(counts, [2, 1, 0, 0, 0]) == {"udp": [2, 1, 0, 0, 0]}


def _pending_rows(server: Any) -> int:
    """Writes committed so far: each adds a row to the pending log (none is
    folded in this test: far below the fold's size)."""
    path = server.core.config.storages["default"].path
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM pending").fetchone()[0]


@pytest_twisted.inlineCallbacks
def test_a_long_queue_is_written_in_parts_and_the_last_write_still_wins(
    make_server: Any, monkeypatch: Any,
) -> None:
    monkeypatch.setattr(ingest, "PART_MIN", 50)
    monkeypatch.setattr(ingest, "PART_SECONDS", 1e-9)  # every write: PART_MIN items
    server = yield make_server()
    ing = server.core.ingest
    sent = 0
    for value in (1, 2):  # the same 300 points twice: the second value must win
        b = Batch()
        for i in range(300):
            b.samples.keys.append(series_key("parts", {"host": f"h{i}"}))
            b.samples.times.append(1_356_998_400 * 10**9)
            b.samples.values.append(value)
        b.samples.recount()
        assert ing.offer(b, anonymous("default"), "splittest")
        sent += 300
    yield server.flush()
    written = server.core.metrics.points_written.labels("splittest")._value.get()
    assert written == sent
    assert _pending_rows(server) >= sent // 50  # one commit a part, not one for all
    rows = yield server.export()
    values = {r["tags"]["host"]: r["value"] for r in rows if r["metric"] == "parts"}
    assert len(values) == 300 and set(values.values()) == {2}


@pytest_twisted.inlineCallbacks
def test_an_acked_write_is_answered_after_the_parts_before_it(
    make_server: Any, monkeypatch: Any,
) -> None:
    """Parts come first; a submit queued behind them is answered when its own
    write commits, and what it wrote wins over the parts' older points."""
    monkeypatch.setattr(ingest, "PART_MIN", 20)
    monkeypatch.setattr(ingest, "PART_SECONDS", 1e-9)
    server = yield make_server()
    ing = server.core.ingest
    b = Batch()
    key = series_key("acked", {"host": "h"})
    for i in range(200):
        b.samples.add(series_key("acked", {"host": f"h{i}"}), 10**18, 1)
    b.samples.add(key, 10**18, 1)
    assert ing.offer(b, anonymous("default"), "splittest")
    late = Batch()
    late.samples.add(key, 10**18, 5)
    yield ing.submit(late, anonymous("default"), "acked")
    yield wait_for(lambda: ing.queued == 0)
    rows = yield server.export()
    mine = [r["value"] for r in rows if r["metric"] == "acked" and r["tags"]["host"] == "h"]
    assert mine == [5]
