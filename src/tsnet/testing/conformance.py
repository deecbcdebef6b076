"""The storage conformance suite: what every IStorage/ICatalog backend must do.

A backend's test module subclasses `StorageConformance` (the name does not start
with ``Test``, so it is collected only through subclasses) and supplies one fixture::

    from tsnet.testing.conformance import StorageConformance

    class TestSqliteConformance(StorageConformance):
        @pytest.fixture
        def storage_factory(self, tmp_path):
            from twisted.internet import reactor
            return lambda: SqliteStorage("default", str(tmp_path / "db"), reactor)

``storage_factory()`` returns a new, unopened backend over the same underlying
store each time it is called within one test (the reopen tests call it twice).
Every test writes through the public interface only and compares results with
exact values and types, so a new backend passes by behaving, not by resembling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from tsnet import export
from tsnet.errors import Conflict, NotFound, TooManyPoints
from tsnet.interfaces import IBoundedReads, ICatalog, IStorage
from tsnet.model import (
    INT64_MAX,
    INT64_MIN,
    Message,
    Meta,
    Property,
    Record,
    SeriesKey,
    Value,
    WriteBatch,
    series_key,
)
from tsnet.records import Credential, SolutionRecord, TokenRecord, hash_secret

S = "default"
T0 = 1_425_482_080_000_000_000  # 2015-03-04, in ns
MS = 1_000_000
CPU: SeriesKey = series_key("cpu", {"host": "a"})


def make_batch(solution: str = S, samples: Any = (), **items: Any) -> WriteBatch:
    """A WriteBatch from (key, time_ns, value[, text]) tuples and item lists."""
    wb = WriteBatch()
    b = wb.for_solution(solution)
    for sample in samples:
        b.samples.add(*sample)
    for kind, values in items.items():
        getattr(b, kind).extend(values)
    return wb


def typed(values: Any) -> list:
    """Values with their exact type, NaN and -0.0 included, for equality checks."""
    return [(type(v).__name__, repr(v)) for v in values]


async def collect(storage: Any, solution: str | None) -> list[dict]:
    lines: list[dict] = []
    await storage.export(solution, lines.append)
    return lines


class StorageConformance:
    """Subclass and provide the ``storage_factory`` fixture (see module docstring)."""

    @pytest.fixture
    def storage_factory(self) -> Callable[[], Any]:  # pragma: no cover - overridden
        raise NotImplementedError("a backend's test class provides storage_factory")

    @pytest_twisted.async_yield_fixture
    async def storage(self, storage_factory: Callable[[], Any]) -> Any:
        s = storage_factory()
        await s.open()
        yield s
        await s.close()

    @pytest.fixture
    def catalog(self, storage: Any) -> Any:
        if not ICatalog.providedBy(storage):
            pytest.skip("this backend holds no catalog")
        return storage

    # -- interfaces ----------------------------------------------------------

    def test_provides_istorage(self, storage: Any) -> None:
        assert IStorage.providedBy(storage)
        assert isinstance(storage.name, str)

    # -- bounded reads (optional: IBoundedReads) ------------------------------

    @pytest_twisted.ensureDeferred
    async def test_a_bounded_read_stops_past_max_points(self, storage: Any) -> None:
        if not IBoundedReads.providedBy(storage):
            pytest.skip("this backend's reads are counted after they return")
        keys = [series_key("cpu", {"host": f"h{i}"}) for i in range(30)]
        await storage.write(make_batch(samples=[(k, T0 + t, t) for k in keys
                                                for t in range(100)]))
        everything = await storage.read_series(S, "cpu", None, None)
        assert sum(len(r[1]) for r in everything) == 3000
        same = await storage.read_series(S, "cpu", None, None, max_points=3000)
        assert same == everything
        ranged = await storage.read_series(S, "cpu", T0 + 50, T0 + 59, max_points=300)
        assert sum(len(r[1]) for r in ranged) == 300
        with pytest.raises(TooManyPoints) as caught:
            await storage.read_series(S, "cpu", None, None, max_points=2999)
        assert caught.value.limit == 2999
        with pytest.raises(TooManyPoints):
            await storage.read_series(S, "cpu", None, None, max_points=0)

    # -- reads by key and by tag (optional: ISeriesByKey, ITagIndex) -----------

    @staticmethod
    async def _tagged_series(storage: Any) -> list[SeriesKey]:
        """Series of two metrics, with entities and a tag named ``entity``,
        some in two batches (last write wins), and one in another solution."""
        keys = [series_key("cpu", {"host": f"h{i}", "dc": f"d{i % 3}"}) for i in range(9)]
        keys += [series_key("cpu", {"host": "h1"}),
                 series_key("cpu", {"host": "h1"}, entity="srv1"),
                 series_key("cpu", {"entity": "tag", "host": "h2"}, entity="srv2"),
                 series_key("cpu", {}, entity="h1"),
                 series_key("mem", {"host": "h1", "dc": "d1"}),
                 series_key("cpu.idle", {"host": "H1"})]
        await storage.write(make_batch(samples=[(k, T0 + t * MS, t) for k in keys
                                                for t in range(20)]))
        await storage.write(make_batch(samples=[(k, T0 + 5 * MS, -1) for k in keys[1::2]]))
        await storage.write(make_batch("other", samples=[(keys[0], T0, 1)]))
        return keys

    @pytest_twisted.ensureDeferred
    async def test_read_series_of_reads_the_series_it_names(self, storage: Any) -> None:
        """ISeriesByKey (optional): what `read_series` has of those series, in
        its order, bounded as it is; unknown and repeated keys change nothing."""
        from tsnet.interfaces import ISeriesByKey

        if not ISeriesByKey.providedBy(storage):
            pytest.skip("this backend reads series by metric only")
        verifyObject(ISeriesByKey, storage)
        keys = await self._tagged_series(storage)
        unknown = series_key("cpu", {"host": "nowhere"})
        for lo, hi in ((None, None), (T0 + 3 * MS, T0 + 7 * MS), (T0 + 30 * MS, None)):
            everything = await storage.read_series(S, None, lo, hi)
            for wanted in ([], keys, [*keys[::-3], unknown, keys[1], keys[1]],
                           [keys[-1], keys[-2], keys[10]]):
                got = await storage.read_series_of(S, wanted, lo, hi)
                assert typed_series(got) == typed_series(
                    [r for r in everything if r[0] in wanted])
        # tags in any order name the same series
        [(key, times, values, _)] = await storage.read_series_of(
            S, [("mem", None, (("host", "h1"), ("dc", "d1")))], None, None)
        assert key == keys[-2] and len(times) == 20 and values[5] == -1
        assert [r[0] for r in await storage.read_series_of("other", keys, None, None)] == [
            keys[0]]
        assert await storage.read_series_of("nothing", keys, None, None) == []
        assert len(await storage.read_series_of(S, keys[:3], None, None, max_points=60)) == 3
        with pytest.raises(TooManyPoints) as caught:
            await storage.read_series_of(S, keys[:3], None, None, max_points=59)
        assert caught.value.limit == 59

    @pytest_twisted.ensureDeferred
    async def test_list_series_where_matches_literal_tags(self, storage: Any) -> None:
        """ITagIndex (optional): exactly the series of the metric whose
        OpenTSDB tags (entity as ``entity``) hold every key with one of its
        values, in `list_series` order; kept across a reopen."""
        from tsnet.interfaces import ITagIndex
        from tsnet.model import series_tags

        if not ITagIndex.providedBy(storage):
            pytest.skip("this backend has no tag index")
        verifyObject(ITagIndex, storage)
        await self._tagged_series(storage)
        cases = [{}, {"host": frozenset({"h1"})}, {"host": frozenset({"h1", "h4", "x"})},
                 {"host": frozenset({"h1"}), "dc": frozenset({"d1"})},
                 {"dc": frozenset({"d0", "d2"}), "host": frozenset({"h0", "h2", "h3"})},
                 {"entity": frozenset({"srv1", "srv2", "tag", "h1"})},
                 {"entity": frozenset({"srv1"}), "host": frozenset({"h1"})},
                 {"host": frozenset()}, {"nokey": frozenset({"h1"})},
                 {"host": frozenset({"H1", "h1 "})}]
        for metric in ("cpu", "mem", "cpu.idle", "none"):
            every = await storage.list_series(S, metric)
            for tags in cases:
                want = [k for k in every if all(series_tags(k).get(t) in v
                                                for t, v in tags.items())]
                assert await storage.list_series_where(S, metric, tags) == want, (metric, tags)
        assert await storage.list_series_where("other", "cpu", {"host": frozenset({"h0"})}) \
            == [series_key("cpu", {"host": "h0", "dc": "d0"})]
        assert await storage.list_series_where("other", "cpu", {"host": frozenset({"h1"})}) == []

    @pytest_twisted.ensureDeferred
    async def test_suggest_names_by_prefix(self, storage: Any) -> None:
        """ITagIndex (optional): the sorted distinct metric names, tag keys or
        tag values (as written: no entity) with a prefix, the first ``limit``."""
        from tsnet.interfaces import ITagIndex

        if not ITagIndex.providedBy(storage):
            pytest.skip("this backend has no tag index")
        keys = await self._tagged_series(storage)
        await storage.write(make_batch(samples=[(series_key("ü", {"é": "ß\u2603"}), T0, 1)]))
        every = await storage.list_series(S)
        names = {"metrics": {k[0] for k in every}, "tagk": {t for k in every for t, _ in k[2]},
                 "tagv": {v for k in every for _, v in k[2]}}
        assert "srv1" not in names["tagv"]
        for kind, have in names.items():
            for prefix in ("", "h", "h1", "cpu", "cpu.", "d", "ü", "é", "ß", "zzz", "\U0010ffff"):
                for limit in (0, 1, 2, 25):
                    want = sorted(n for n in have if n.startswith(prefix))[:limit]
                    got = await storage.suggest_names(S, kind, prefix, limit)
                    assert got == want, (kind, prefix, limit)
        assert await storage.suggest_names("other", "tagk", "", 25) == ["dc", "host"]
        assert await storage.suggest_names("nothing", "metrics", "", 25) == []
        with pytest.raises(ValueError):
            await storage.suggest_names(S, "tags", "", 25)
        # a solution's index goes with its data
        await storage.delete_solution_data("other")
        assert await storage.suggest_names("other", "tagv", "", 25) == []
        assert await storage.list_series_where("other", "cpu", {"host": frozenset({"h0"})}) \
            == []
        assert await storage.suggest_names(S, "tagv", "h1", 25) == ["h1"]
        assert len(await storage.list_series_where(S, "cpu", {"host": frozenset({"h1"})})) \
            == len([k for k in keys if k[0] == "cpu" and ("host", "h1") in k[2]])

    @pytest_twisted.ensureDeferred
    async def test_tag_index_survives_a_reopen(self, storage_factory: Callable[[], Any]
                                               ) -> None:
        from tsnet.interfaces import ITagIndex

        first = storage_factory()
        await first.open()
        try:
            if not ITagIndex.providedBy(first):
                pytest.skip("this backend has no tag index")
            await first.write(make_batch(samples=[(CPU, T0, 1)]))
        finally:
            await first.close()
        again = storage_factory()
        await again.open()
        try:
            assert await again.list_series_where(S, "cpu", {"host": frozenset({"a"})}) == [CPU]
            assert await again.suggest_names(S, "tagv", "", 5) == ["a"]
        finally:
            await again.close()

    # -- samples: values -----------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_ints_round_trip_exactly(self, storage: Any) -> None:
        values = [0, 1, -1, 2**53 + 1, INT64_MAX, INT64_MIN, 42]
        await storage.write(make_batch(samples=[(CPU, T0 + i, v) for i, v in enumerate(values)]))
        [(key, times, got, texts)] = await storage.read_series(S, "cpu", None, None)
        assert key == CPU
        assert times == [T0 + i for i in range(len(values))]
        assert typed(got) == typed(values)
        assert texts is None

    @pytest_twisted.ensureDeferred
    async def test_floats_and_nan_round_trip(self, storage: Any) -> None:
        values = [72.5, 0.1, -0.0, 1e300, 5e-324, float("nan"), 3.0]
        await storage.write(make_batch(samples=[(CPU, T0 + i, v) for i, v in enumerate(values)]))
        [(_, _, got, _)] = await storage.read_series(S, "cpu", None, None)
        assert typed(got) == typed(values)
        assert math.isnan(got[5])

    @pytest_twisted.ensureDeferred
    async def test_mixed_values_texts_and_none(self, storage: Any) -> None:
        key = series_key("temp", {}, entity="srv1")
        samples = [
            (key, T0, 1),
            (key, T0 + 1, 1.5, "warm"),
            (key, T0 + 2, None, "text only"),
            (key, T0 + 3, float("nan"), ""),
            (key, T0 + 4, INT64_MAX),
        ]
        await storage.write(make_batch(samples=samples))
        [(got_key, times, values, texts)] = await storage.read_series(S, None, None, None)
        assert got_key == ("temp", "srv1", ())
        assert times == [T0 + i for i in range(5)]
        assert typed(values) == typed([1, 1.5, None, float("nan"), INT64_MAX])
        assert texts == [None, "warm", "text only", "", None]

    @pytest_twisted.ensureDeferred
    async def test_unicode_texts(self, storage: Any) -> None:
        key = series_key("note", {}, entity="e")
        text = 'ünïcode "quoted"\nnew line; \u2603 \U0001f600'
        await storage.write(make_batch(samples=[(key, T0, None, text)]))
        [(_, _, values, texts)] = await storage.read_series(S, "note", None, None)
        assert values == [None]
        assert texts == [text]

    @pytest_twisted.ensureDeferred
    async def test_unsorted_tags_are_the_same_series(self, storage: Any) -> None:
        unsorted = ("cpu", None, (("z", "1"), ("a", "2")))
        await storage.write(make_batch(samples=[(unsorted, T0, 1)]))
        await storage.write(make_batch(samples=[(series_key("cpu", {"a": "2", "z": "1"}), T0, 2)]))
        [(key, times, values, _)] = await storage.read_series(S, "cpu", None, None)
        assert key == ("cpu", None, (("a", "2"), ("z", "1")))
        assert (times, values) == ([T0], [2])

    # -- samples: last write wins --------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_last_write_wins_within_a_batch(self, storage: Any) -> None:
        samples = [(CPU, T0 + 2, 1), (CPU, T0, 10), (CPU, T0 + 2, 2.5), (CPU, T0, 11)]
        await storage.write(make_batch(samples=samples))
        [(_, times, values, _)] = await storage.read_series(S, "cpu", None, None)
        assert times == [T0, T0 + 2]
        assert typed(values) == typed([11, 2.5])
        assert await storage.count_points(S) == 2

    @pytest_twisted.ensureDeferred
    async def test_last_write_wins_across_batches(self, storage: Any) -> None:
        await storage.write(make_batch(samples=[(CPU, T0 + i, i) for i in range(10)]))
        await storage.write(make_batch(samples=[(CPU, T0 + 5, 500.0), (CPU, T0 + 20, 20)]))
        await storage.write(make_batch(samples=[(CPU, T0 + 5, -5), (CPU, T0 + 9, float("nan"))]))
        [(_, times, values, _)] = await storage.read_series(S, "cpu", None, None)
        assert times == [T0 + i for i in range(10)] + [T0 + 20]
        assert typed(values) == typed([0, 1, 2, 3, 4, -5, 6, 7, 8, float("nan"), 20])
        assert await storage.count_points(S) == 11

    @pytest_twisted.ensureDeferred
    async def test_later_value_keeps_earlier_text_and_vice_versa(self, storage: Any) -> None:
        """ATSD §4.1: a numeric-only sample keeps the text stored at that time; a
        text-only sample (value None) keeps the value."""
        key = series_key("m", {}, entity="e")
        await storage.write(make_batch(samples=[(key, T0, 1.0, "first"), (key, T0 + 1, 7)]))
        await storage.write(make_batch(samples=[(key, T0, 2.0), (key, T0 + 1, None, "note")]))
        [(_, times, values, texts)] = await storage.read_series(S, "m", None, None)
        assert times == [T0, T0 + 1]
        assert typed(values) == typed([2.0, 7])
        assert texts == ["first", "note"]
        await storage.write(make_batch(samples=[(key, T0, None, "second")]))
        [(_, _, values, texts)] = await storage.read_series(S, "m", None, None)
        assert typed(values) == typed([2.0, 7])
        assert texts == ["second", "note"]

    # -- samples: selection --------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_many_series_sorted_by_key_then_time(self, storage: Any) -> None:
        keys = [series_key(f"m{i % 3}", {"host": f"h{i:03d}"}) for i in range(300)]
        keys.append(series_key("m0", {}, entity="e1"))
        keys.append(series_key("m0", {}, entity="e0"))
        wb = make_batch(samples=[(k, T0 + 100 - j, j) for k in keys for j in range(3)])
        await storage.write(wb)
        got = await storage.read_series(S, None, None, None)
        assert len(got) == len(keys)
        got_keys = [g[0] for g in got]
        assert got_keys[:3] == [
            ("m0", None, (("host", "h000"),)),
            ("m0", None, (("host", "h003"),)),
            ("m0", None, (("host", "h006"),)),
        ]
        assert got_keys[100:102] == [("m0", "e0", ()), ("m0", "e1", ())]
        assert [g[0][0] for g in got] == sorted(g[0][0] for g in got)
        for _, times, values, _ in got:
            assert times == [T0 + 98, T0 + 99, T0 + 100]
            assert values == [2, 1, 0]
        m1 = await storage.read_series(S, "m1", None, None)
        assert [g[0] for g in m1] == sorted(k for k in keys if k[0] == "m1")
        assert await storage.read_series(S, "nope", None, None) == []
        assert await storage.count_points(S) == 3 * len(keys)

    @pytest_twisted.ensureDeferred
    async def test_time_range_is_inclusive(self, storage: Any) -> None:
        await storage.write(make_batch(samples=[(CPU, T0 + i * MS, i) for i in range(10)]))
        await storage.write(make_batch(samples=[(CPU, T0 + i * MS, i * 10) for i in range(10, 20)]))
        other = series_key("cpu", {"host": "b"})
        await storage.write(make_batch(samples=[(other, T0 + 100 * MS, 1)]))

        async def times(start: int | None, end: int | None) -> dict:
            got = await storage.read_series(S, "cpu", start, end)
            return {k[2][0][1]: [(t - T0) // MS for t in ts] for k, ts, _, _ in got}

        assert await times(T0 + 3 * MS, T0 + 5 * MS) == {"a": [3, 4, 5]}
        assert await times(T0 + 8 * MS, T0 + 11 * MS) == {"a": [8, 9, 10, 11]}
        assert await times(None, T0 + 1 * MS) == {"a": [0, 1]}
        assert await times(T0 + 19 * MS, None) == {"a": [19], "b": [100]}
        assert await times(T0 + 20 * MS, T0 + 99 * MS) == {}
        assert await times(T0 + 3 * MS + 1, T0 + 4 * MS - 1) == {}
        [(_, _, values, _)] = await storage.read_series(S, "cpu", T0 + 9 * MS, T0 + 10 * MS)
        assert values == [9, 100]

    @pytest_twisted.ensureDeferred
    async def test_list_series(self, storage: Any) -> None:
        """Series keys without samples: what suggest and lookup list from."""
        keys = [
            series_key("temp", {"room": "b", "device": "d1"}),
            series_key("temp", {"room": "a"}),
            series_key("cpu", {"host": "a"}),
            series_key("cpu", {}, entity="srv1"),
            series_key("cpu", {"host": "a"}, entity="srv0"),
        ]
        wb = make_batch(samples=[(k, T0 + i, i) for i, k in enumerate(keys)])
        wb.for_solution("other").samples.add(series_key("secret", {"x": "y"}), T0, 1)
        await storage.write(wb)
        await storage.write(make_batch(samples=[(keys[1], T0 + 99, 1.5)]))  # no new series
        assert await storage.list_series(S) == [
            ("cpu", None, (("host", "a"),)),
            ("cpu", "srv0", (("host", "a"),)),
            ("cpu", "srv1", ()),
            ("temp", None, (("device", "d1"), ("room", "b"))),
            ("temp", None, (("room", "a"),)),
        ]
        assert await storage.list_series(S, "temp") == [
            ("temp", None, (("device", "d1"), ("room", "b"))),
            ("temp", None, (("room", "a"),)),
        ]
        assert await storage.list_series(S, "nope") == []
        assert await storage.list_series("other") == [("secret", None, (("x", "y"),))]
        assert await storage.list_series("nobody") == []
        assert [k for k, *_ in await storage.read_series(S, None, None, None)] == \
            await storage.list_series(S)
        await storage.delete_solution_data(S)
        assert await storage.list_series(S) == []

    @pytest_twisted.ensureDeferred
    async def test_solutions_are_separate(self, storage: Any) -> None:
        wb = make_batch("one", samples=[(CPU, T0, 1), (CPU, T0 + 1, 2)])
        wb.for_solution("two").samples.add(CPU, T0, 3.0)
        await storage.write(wb)
        [(_, _, values, _)] = await storage.read_series("two", "cpu", None, None)
        assert typed(values) == typed([3.0])
        assert await storage.count_points("one") == 2
        assert await storage.count_points("two") == 1
        assert await storage.count_points(None) == 3
        assert await storage.count_points("three") == 0

    @pytest_twisted.ensureDeferred
    async def test_writes_queued_together_all_commit_in_order(self, storage: Any) -> None:
        from twisted.internet import defer

        ds = [storage.write(make_batch(samples=[(CPU, T0, i)])) for i in range(20)]
        await defer.gatherResults(ds)
        [(_, _, values, _)] = await storage.read_series(S, "cpu", None, None)
        assert values == [19]

    @pytest_twisted.ensureDeferred
    async def test_empty_batch(self, storage: Any) -> None:
        await storage.write(WriteBatch())
        await storage.write(make_batch())
        assert await storage.count_points(None) == 0
        assert not await storage.solution_has_data(S)

    @pytest_twisted.ensureDeferred
    async def test_columns_filled_directly_are_written(self, storage: Any) -> None:
        """Hot parsers append to ``SampleSet.columns`` without keeping ``count``."""
        from tsnet.model import Column

        col = Column()
        col.times.extend([T0, T0 + 1])
        col.values.extend([1, 2])
        wb = WriteBatch()
        wb.for_solution(S).samples.columns[CPU] = col
        await storage.write(wb)
        assert await storage.count_points(S) == 2

    @pytest_twisted.ensureDeferred
    async def test_failed_batch_commits_nothing(self, storage: Any) -> None:
        wb = make_batch(
            samples=[(CPU, T0, 1)],
            messages=[Message("e", T0, "m")],
            records=[Record(T0, b"{}")],
        )
        wb.for_solution(S).samples.add(series_key("bad", {}), T0, 2**64)  # beyond int64
        with pytest.raises((ValueError, OverflowError)):
            await storage.write(wb)
        assert not await storage.solution_has_data(S)
        await storage.write(make_batch(samples=[(CPU, T0, 1)]))
        assert await storage.count_points(S) == 1

    # -- export --------------------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_export_series_lines(self, storage: Any) -> None:
        atsd = series_key("cpu", {"host": "a"}, entity="srv1")
        samples = [
            (atsd, T0, 72.0, "optional"),
            (atsd, T0 + 1 * MS, float("nan")),
            (atsd, T0 + 2 * MS, None, "only text"),
            (CPU, T0 + 123_456, 7),
        ]
        await storage.write(make_batch(samples=samples))
        lines = [ln for ln in await collect(storage, S) if ln["kind"] == "series"]
        assert lines == [
            {
                "kind": "series",
                "solution": "default",
                "metric": "cpu",
                "tags": {"host": "a"},
                "time_ms": 1425482080000,
                "value": 7,
            },
            {
                "kind": "series",
                "solution": "default",
                "metric": "cpu",
                "entity": "srv1",
                "tags": {"host": "a"},
                "time_ms": 1425482080000,
                "value": 72.0,
                "text": "optional",
            },
            {
                "kind": "series",
                "solution": "default",
                "metric": "cpu",
                "entity": "srv1",
                "tags": {"host": "a"},
                "time_ms": 1425482080001,
                "value": "NaN",
            },
            {
                "kind": "series",
                "solution": "default",
                "metric": "cpu",
                "entity": "srv1",
                "tags": {"host": "a"},
                "time_ms": 1425482080002,
                "text": "only text",
            },
        ]
        assert isinstance(lines[0]["value"], int)
        assert isinstance(lines[1]["value"], float)
        assert export.dumps(lines[1]) == (
            '{"kind":"series","solution":"default","metric":"cpu","entity":"srv1",'
            '"tags":{"host":"a"},"time_ms":1425482080000,"value":72.0,"text":"optional"}'
        )

    @pytest_twisted.ensureDeferred
    async def test_export_property_merges_tags(self, storage: Any) -> None:
        p1 = Property("srv1", "disk", {"mount": "/"}, {"fs": "ext4", "status": "Err"}, T0)
        p2 = Property("srv1", "disk", {"mount": "/"}, {"status": "OK", "fs": ""}, T0 + MS)
        other = Property("srv1", "disk", {"mount": "/home"}, {"fs": "xfs"}, T0)
        await storage.write(make_batch(properties=[p1, other]))
        await storage.write(make_batch(properties=[p2]))
        lines = [ln for ln in await collect(storage, S) if ln["kind"] == "property"]
        assert lines == [
            {
                "kind": "property",
                "solution": "default",
                "entity": "srv1",
                "type": "disk",
                "key": {"mount": "/"},
                "tags": {"status": "OK"},
                "time_ms": 1425482080001,
            },
            {
                "kind": "property",
                "solution": "default",
                "entity": "srv1",
                "type": "disk",
                "key": {"mount": "/home"},
                "tags": {"fs": "xfs"},
                "time_ms": 1425482080000,
            },
        ]

    @pytest_twisted.ensureDeferred
    async def test_export_message_lines(self, storage: Any) -> None:
        full = Message("srv1", T0, "text", "security", "auth", "WARNING", {"k": "v"})
        bare = Message("srv1", T0 + MS, tags={"only": "tags"})
        await storage.write(make_batch(messages=[full, bare, full]))
        lines = [ln for ln in await collect(storage, S) if ln["kind"] == "message"]
        expected_full = {
            "kind": "message",
            "solution": "default",
            "entity": "srv1",
            "type": "security",
            "source": "auth",
            "severity": "WARNING",
            "tags": {"k": "v"},
            "message": "text",
            "time_ms": 1425482080000,
        }
        assert lines == [
            expected_full,
            expected_full,
            {
                "kind": "message",
                "solution": "default",
                "entity": "srv1",
                "tags": {"only": "tags"},
                "time_ms": 1425482080001,
            },
        ]

    @pytest_twisted.ensureDeferred
    async def test_export_meta_lines_upsert_and_implicit(self, storage: Any) -> None:
        await storage.write(
            make_batch(
                meta=[
                    Meta("metric", "cpu", {"data_type": "INTEGER", "label": "CPU", "units": "%"}),
                    Meta("entity", "srv1", {"label": "Server", "tags": {"dc": "x", "rack": "1"}}),
                ]
            )
        )
        await storage.write(
            make_batch(
                samples=[(series_key("mem", {}, entity="srv2"), T0, 1)],
                meta=[
                    Meta("metric", "cpu", {"label": None, "enabled": False, "max_value": 100}),
                    Meta("entity", "srv1", {"tags": {"rack": "", "row": "2"}}),
                ],
            )
        )
        lines = [ln for ln in await collect(storage, S) if ln["kind"] in ("metric", "entity")]
        assert lines == [
            {
                "kind": "metric",
                "solution": "default",
                "metric": "cpu",
                "data_type": "integer",
                "enabled": False,
                "units": "%",
                "max_value": 100,
            },
            {
                "kind": "metric",
                "solution": "default",
                "metric": "mem",
                "data_type": "float",
                "enabled": True,
            },
            {
                "kind": "entity",
                "solution": "default",
                "entity": "srv1",
                "enabled": True,
                "label": "Server",
                "tags": {"dc": "x", "row": "2"},
            },
            {
                "kind": "entity",
                "solution": "default",
                "entity": "srv2",
                "enabled": True,
                "tags": {},
            },
        ]

    @pytest_twisted.ensureDeferred
    async def test_properties_and_messages_register_entities(self, storage: Any) -> None:
        await storage.write(
            make_batch(
                properties=[Property("e1", "t", {}, {"a": "b"}, T0)],
                messages=[Message("e2", T0, "hi")],
            )
        )
        lines = [ln for ln in await collect(storage, S) if ln["kind"] == "entity"]
        assert [ln["entity"] for ln in lines] == ["e1", "e2"]

    @pytest_twisted.ensureDeferred
    async def test_entity_tags_property_sets_entity_tags(self, storage: Any) -> None:
        await storage.write(
            make_batch(properties=[Property("e1", "$entity_tags", {}, {"loc": "here"}, T0)])
        )
        lines = await collect(storage, S)
        assert lines == [
            {
                "kind": "entity",
                "solution": "default",
                "entity": "e1",
                "enabled": True,
                "tags": {"loc": "here"},
            }
        ]

    @pytest_twisted.ensureDeferred
    async def test_export_record_lines(self, storage: Any) -> None:
        records = [
            Record(T0 + 2, b"plain text", "text"),
            Record(T0, b'{"temp": 72.5}', "json"),
            Record(T0 + 1, b"\x00\xff\x10", "binary"),
            Record(T0 + 3, b'{"1":72.5}', "schema"),
        ]
        await storage.write(make_batch("my-store", records=records))
        assert await collect(storage, "my-store") == [
            {
                "kind": "record",
                "solution": "my-store",
                "time_ns": T0,
                "size": 14,
                "data": {"temp": 72.5},
            },
            {
                "kind": "record",
                "solution": "my-store",
                "time_ns": T0 + 1,
                "size": 3,
                "data": "AP8Q",
                "encoding": "base64",
            },
            {
                "kind": "record",
                "solution": "my-store",
                "time_ns": T0 + 2,
                "size": 10,
                "data": "plain text",
            },
            {
                "kind": "record",
                "solution": "my-store",
                "time_ns": T0 + 3,
                "size": 10,
                "data": {"1": 72.5},
            },
        ]

    # -- records (ts-store) -----------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_records_read_back_with_block_and_range(self, storage: Any) -> None:
        recs = [Record(T0 + i, b'{"i":%d}' % i, "json", block=i // 2) for i in range(6)]
        await storage.write(make_batch("st", records=recs[3:]))
        await storage.write(make_batch("st", records=recs[:3]))
        got = await storage.read_records("st")
        assert got == recs
        assert [(r.block, r.size) for r in got] == [(i // 2, 7) for i in range(6)]
        assert type(got[0].data) is bytes
        assert await storage.read_records("st", T0 + 1, T0 + 3) == recs[1:4]
        assert await storage.read_records("st", start_ns=T0 + 4) == recs[4:]
        assert await storage.read_records("st", end_ns=T0) == recs[:1]
        assert await storage.read_records("st", limit=2) == recs[:2]
        assert await storage.read_records("st", descending=True, limit=2) == [recs[5], recs[4]]
        assert await storage.read_records("st", T0 + 1, T0 + 4, descending=True) == \
            recs[4:0:-1]
        assert await storage.read_records("st", limit=0) == []
        assert await storage.read_records("other") == []
        with pytest.raises(ValueError):
            await storage.read_records("st", limit=-1)

    @pytest_twisted.ensureDeferred
    async def test_records_keep_bytes_and_types(self, storage: Any) -> None:
        recs = [Record(T0, b"\x00\xff", "binary", 4), Record(T0 + 1, b"", "text", 2**32 - 1),
                Record(T0 + 2, b'{"1":72.5}', "schema")]
        await storage.write(make_batch("st", records=recs))
        assert await storage.read_records("st") == recs

    @pytest_twisted.ensureDeferred
    async def test_record_soft_delete_hides_it_from_reads_and_export(self, storage: Any) -> None:
        recs = [Record(T0 + i, b"%d" % i, "json", i) for i in range(3)]
        await storage.write(make_batch("st", records=recs))
        assert await storage.delete_record("st", T0 + 1) is True
        assert await storage.delete_record("st", T0 + 1) is False
        assert await storage.delete_record("st", T0 + 9) is False
        assert await storage.delete_record("nobody", T0) is False
        assert await storage.read_records("st") == [recs[0], recs[2]]
        assert await storage.read_records("st", limit=2) == [recs[0], recs[2]]
        every = await storage.read_records("st", include_deleted=True)
        assert [(r.time_ns, r.deleted) for r in every] == [
            (T0, False), (T0 + 1, True), (T0 + 2, False)]
        assert [ln["time_ns"] for ln in await collect(storage, "st")] == [T0, T0 + 2]
        await storage.write(make_batch("st", records=[Record(T0 + 3, b"3")]))
        assert len(await storage.read_records("st", include_deleted=True)) == 4

    @pytest_twisted.ensureDeferred
    async def test_record_reclaim_removes_the_oldest_after_the_batch(self, storage: Any) -> None:
        await storage.write(make_batch("st", records=[Record(T0 + i, b"x") for i in range(3)]))
        await storage.delete_record("st", T0 + 1)
        wb = make_batch("st", records=[Record(T0 + 3, b"y"), Record(T0 + 4, b"z")])
        wb.for_solution("st").reclaim_ns = T0 + 3  # a record of this batch reclaimed too
        await storage.write(wb)
        assert await storage.read_records("st", include_deleted=True) == [Record(T0 + 4, b"z")]
        assert [ln["time_ns"] for ln in await collect(storage, "st")] == [T0 + 4]
        await storage.write(make_batch("other", records=[Record(T0, b"o")]))
        assert len(await storage.read_records("other")) == 1
        wb = make_batch("st", records=[Record(T0 + 5, b"w")])
        wb.for_solution("st").reclaim_ns = T0 + 10
        await storage.write(wb)
        assert await storage.read_records("st") == []
        assert len(await storage.read_records("other")) == 1

    @pytest_twisted.ensureDeferred
    async def test_records_survive_reopen_and_reset(self, storage_factory: Any) -> None:
        storage = storage_factory()
        await storage.open()
        await storage.write(make_batch("st", records=[Record(T0, b"1", "json", 7)]))
        await storage.delete_record("st", T0)
        await storage.write(make_batch("st", records=[Record(T0 + 1, b"2", "json", 8)]))
        await storage.close()
        again = storage_factory()
        await again.open()
        try:
            assert await again.read_records("st", include_deleted=True) == [
                Record(T0, b"1", "json", 7, True), Record(T0 + 1, b"2", "json", 8)]
            await again.delete_solution_data("st")
            assert await again.read_records("st", include_deleted=True) == []
        finally:
            await again.close()

    @pytest_twisted.ensureDeferred
    async def test_export_order_and_all_solutions(self, storage: Any) -> None:
        wb = make_batch(
            "b",
            samples=[(CPU, T0, 1)],
            properties=[Property("e", "t", {}, {"a": "1"}, T0)],
            messages=[Message("e", T0, "m")],
            meta=[Meta("metric", "cpu", {})],
            records=[Record(T0, b"1")],
        )
        wb.for_solution("a").samples.add(CPU, T0, 2)
        await storage.write(wb)
        lines = await collect(storage, None)
        assert [(ln["solution"], ln["kind"]) for ln in lines] == [
            ("a", "series"),
            ("b", "series"),
            ("b", "property"),
            ("b", "message"),
            ("b", "metric"),
            ("b", "entity"),
            ("b", "record"),
        ]
        assert [ln["solution"] for ln in await collect(storage, "a")] == ["a"]
        assert await collect(storage, "nothing") == []
        for ln in lines:
            export.dumps(ln)  # every line is strict JSON

    @pytest_twisted.ensureDeferred
    async def test_export_many_lines(self, storage: Any) -> None:
        keys = [series_key("m", {"i": str(i)}) for i in range(50)]
        await storage.write(make_batch(samples=[(k, T0 + j, j) for k in keys for j in range(300)]))
        lines = await collect(storage, S)
        assert len(lines) == 50 * 300
        assert lines[0]["tags"] == {"i": "0"} and lines[-1]["tags"] == {"i": "9"}

    @pytest_twisted.ensureDeferred
    async def test_export_text_is_the_export_as_text(self, storage: Any) -> None:
        """IExportText (optional): byte for byte the lines `export` emits, as
        ``tsnet export`` prints them, whatever the values (orjson's floats are
        not Python's in the exponent range) and however long the series."""
        from tsnet.export_text import SLICE, line_text
        from tsnet.interfaces import IExportText

        if not IExportText.providedBy(storage):
            pytest.skip("this backend has no text export")
        odd = [0.0, -0.0, 1e16, 1e-5, 1e-4, 9.999e15, 5e-324, -1.5e300, math.nan, math.inf,
               -math.inf, 0.1, 123456.789]
        ent = series_key("m", {"z": "1", "a": "é\"\\\n"}, entity="srv%1")
        await storage.write(make_batch(
            samples=[(CPU, T0 + i * MS, v) for i, v in enumerate(odd)]
            + [(series_key("ints", {}), T0 + i, v) for i, v in enumerate((0, -1, INT64_MAX,
                                                                         INT64_MIN, 7))]
            + [(ent, T0, 1.5, "first"), (ent, T0 + 1, None, "text only"), (ent, T0 + 2, 3)],
            properties=[Property("e", "t", {"k": "v"}, {"a": "1"}, T0)],
            messages=[Message("e", T0, "hello", "type", tags={"x": "y"})],
            meta=[Meta("metric", "cpu", {"label": "CPU", "max_value": 99.5})],
            records=[Record(T0, b'{"a":1}')],
        ))
        await storage.write(make_batch(samples=[(CPU, T0 + 3 * MS, 42), (ent, T0 + 1, 2.0)]))
        long = series_key("long", {})
        await storage.write(make_batch(
            "other", samples=[(long, T0 + i, i * 0.5) for i in range(SLICE + 10)]))
        for solution in (None, S, "other", "nothing"):
            texts: list[str] = []
            await storage.export_text(solution, texts.append)
            want = "".join(line_text(ln) for ln in await collect(storage, solution))
            assert "".join(texts) == want
            assert all(t.endswith("\n") for t in texts)

    # -- read-back: properties, messages, meta ---------------------------------

    @pytest_twisted.ensureDeferred
    async def test_read_properties_sorted_and_filtered(self, storage: Any) -> None:
        """By entity, type, then key as sorted compact JSON: ``{}`` sorts after
        ``{"...``, and a key's own order does not count.  Filters are exact."""
        wb = make_batch(
            properties=[
                Property("srv2", "disk", {"mount": "/"}, {"fs": "xfs"}, T0 + 3),
                Property("srv1", "nic", {}, {"speed": "1g"}, T0 + 2),
                Property("srv1", "disk", {}, {"total": "3"}, T0 + 1),
                Property("srv1", "disk", {"mount": "/home"}, {"fs": "ext4"}, T0),
                Property("srv1", "disk", {"z": "1", "a": "2"}, {"n": "1"}, T0 + 4),
                Property("srv1", "disk", {"mount": "/"}, {"fs": "ext4"}, T0 + 5),
                Property("srv1", "$entity_tags", {}, {"dc": "x"}, T0 + 6),
            ]
        )
        wb.for_solution("other").properties.append(
            Property("srv1", "disk", {"mount": "/"}, {"fs": "zfs"}, T0))
        await storage.write(wb)
        srv1_disk = [
            Property("srv1", "disk", {"a": "2", "z": "1"}, {"n": "1"}, T0 + 4),
            Property("srv1", "disk", {"mount": "/"}, {"fs": "ext4"}, T0 + 5),
            Property("srv1", "disk", {"mount": "/home"}, {"fs": "ext4"}, T0),
            Property("srv1", "disk", {}, {"total": "3"}, T0 + 1),
        ]
        srv1_nic = Property("srv1", "nic", {}, {"speed": "1g"}, T0 + 2)
        srv2_disk = Property("srv2", "disk", {"mount": "/"}, {"fs": "xfs"}, T0 + 3)
        got = await storage.read_properties(S)
        assert got == [*srv1_disk, srv1_nic, srv2_disk]
        assert all(type(p.time_ns) is int for p in got)
        assert await storage.read_properties(S, entity="srv1") == [*srv1_disk, srv1_nic]
        assert await storage.read_properties(S, type="disk") == [*srv1_disk, srv2_disk]
        assert await storage.read_properties(S, "srv1", "disk") == srv1_disk
        assert await storage.read_properties(S, entity="srv2", type="nic") == []
        assert await storage.read_properties(S, entity="SRV1") == []
        assert await storage.read_properties(S, type="$entity_tags") == []
        assert await storage.read_properties("other") == [
            Property("srv1", "disk", {"mount": "/"}, {"fs": "zfs"}, T0)]
        assert await storage.read_properties("nobody") == []
        got[0].tags["n"] = "changed"  # the caller owns what it read
        got[0].key.clear()
        assert (await storage.read_properties(S))[0] == srv1_disk[0]

    @pytest_twisted.ensureDeferred
    async def test_read_properties_tags_merged(self, storage: Any) -> None:
        """Read back as merged (ATSD §4.2), with the last write's time."""
        p1 = Property("srv1", "disk", {"mount": "/"}, {"fs": "ext4", "status": "Err"}, T0)
        p2 = Property("srv1", "disk", {"mount": "/"}, {"status": "OK", "fs": ""}, T0 + MS)
        p3 = Property("srv1", "disk", {"mount": "/"}, {"mode": "rw"}, T0 + 2 * MS)
        await storage.write(make_batch(properties=[p1]))
        await storage.write(make_batch(properties=[p2, p3]))
        assert await storage.read_properties(S, "srv1", "disk") == [
            Property("srv1", "disk", {"mount": "/"}, {"mode": "rw", "status": "OK"}, T0 + 2 * MS)
        ]

    @pytest_twisted.ensureDeferred
    async def test_read_messages(self, storage: Any) -> None:
        """Time order, ties in write order (across and within batches); start
        inclusive, end exclusive; ``limit`` keeps the first (oldest) N."""
        a = Message("srv1", T0 + MS, "a", "security", "auth", "WARNING", {"k": "v"})
        b = Message("srv2", T0, "b", "app")
        c = Message("srv1", T0, "c")
        d = Message("srv1", T0, "d", "security")
        e = Message("srv2", T0 + 2 * MS, "e", "security", tags={"x": "y"})
        wb = make_batch(messages=[a, b])
        wb.for_solution("other").messages.append(Message("srv1", T0, "secret"))
        await storage.write(wb)
        await storage.write(make_batch(messages=[c, d, e]))

        async def read(**kw: Any) -> list[str]:
            return [m.message for m in await storage.read_messages(S, **kw)]

        got = await storage.read_messages(S)
        assert got == [b, c, d, a, e]
        assert got[0] == Message("srv2", T0, "b", "app", None, None, {})
        assert await read(entity="srv1") == ["c", "d", "a"]
        assert await read(type="security") == ["d", "a", "e"]
        assert await read(entity="srv1", type="security") == ["d", "a"]
        assert await read(entity="SRV1") == []
        assert await read(type="Security") == []
        assert await read(start_ns=T0 + MS) == ["a", "e"]
        assert await read(end_ns=T0 + MS) == ["b", "c", "d"]
        assert await read(start_ns=T0 + MS, end_ns=T0 + 2 * MS) == ["a"]
        assert await read(start_ns=T0 + MS, end_ns=T0 + 2 * MS + 1) == ["a", "e"]
        assert await read(start_ns=T0, end_ns=T0 + 1) == ["b", "c", "d"]
        assert await read(start_ns=T0 + 1, end_ns=T0 + MS) == []
        assert await read(start_ns=T0 + MS, end_ns=T0 + MS) == []
        assert await read(end_ns=T0) == []
        assert await read(start_ns=T0 + 2 * MS + 1) == []
        assert await read(limit=2) == ["b", "c"]
        assert await read(limit=0) == []
        assert await read(limit=99) == ["b", "c", "d", "a", "e"]
        assert await read(entity="srv1", start_ns=T0 + 1, limit=1) == ["a"]
        assert await read(type="security", end_ns=T0 + 2 * MS, limit=5) == ["d", "a"]
        assert await storage.read_messages("other") == [Message("srv1", T0, "secret")]
        assert await storage.read_messages("nobody") == []
        with pytest.raises(ValueError):
            await storage.read_messages(S, limit=-1)

    @pytest_twisted.ensureDeferred
    async def test_read_meta(self, storage: Any) -> None:
        """Fields as stored (merged, no export defaults), implicit records as
        ``{}``, ``$entity_tags`` as the entity's tags, sorted by name."""
        await storage.write(
            make_batch(
                meta=[
                    Meta("metric", "mem", {"data_type": "INTEGER", "units": "%", "label": "M"}),
                    Meta("entity", "srv1", {"label": "Server", "tags": {"dc": "x", "rack": "1"}}),
                ]
            )
        )
        await storage.write(
            make_batch(
                samples=[
                    (series_key("mem", {"host": "a"}, entity="srv2"), T0, 1),
                    (series_key("cpu", {}, entity="srv1"), T0, 2),
                    (series_key("no_entity", {"host": "a"}), T0, 3),
                ],
                properties=[
                    Property("srv3", "disk", {}, {"a": "1"}, T0),
                    Property("srv1", "$entity_tags", {}, {"rack": "", "row": "2"}, T0),
                    Property("srv9", "$entity_tags", {}, {"loc": "here"}, T0),
                ],
                messages=[Message("srv4", T0, "hi")],
                meta=[Meta("metric", "mem", {"label": None, "enabled": False,
                                             "max_value": 100, "min_value": 0.5})],
            )
        )
        mem = Meta("metric", "mem", {"data_type": "INTEGER", "units": "%", "enabled": False,
                                     "max_value": 100, "min_value": 0.5})
        assert await storage.read_meta(S, "metric") == [Meta("metric", "cpu", {}), mem]
        [got] = await storage.read_meta(S, "metric", "mem")
        assert got == mem
        assert [type(got.fields[f]) for f in ("enabled", "max_value", "min_value")] == [
            bool, int, float]
        srv1 = Meta("entity", "srv1", {"label": "Server", "tags": {"dc": "x", "row": "2"}})
        srv9 = Meta("entity", "srv9", {"tags": {"loc": "here"}})
        assert await storage.read_meta(S, "entity") == [
            srv1,
            Meta("entity", "srv2", {}),
            Meta("entity", "srv3", {}),
            Meta("entity", "srv4", {}),
            srv9,
        ]
        assert await storage.read_meta(S, "entity", "srv9") == [srv9]
        assert await storage.read_meta(S, "entity", "srv1") == [srv1]
        assert await storage.read_meta(S, "metric", "no_entity") == []
        assert await storage.read_meta(S, "metric", "srv1") == []  # kinds apart
        assert await storage.read_meta(S, "entity", "SRV1") == []
        # an implicit record made explicit, then seen again in a new series, keeps its fields
        await storage.write(make_batch(meta=[Meta("entity", "srv2", {"label": "Two"})]))
        await storage.write(make_batch(samples=[(series_key("disk", {}, entity="srv2"), T0, 1)]))
        assert await storage.read_meta(S, "entity", "srv2") == [
            Meta("entity", "srv2", {"label": "Two"})]
        assert [m.name for m in await storage.read_meta(S, "metric")] == ["cpu", "disk", "mem"]
        with pytest.raises(ValueError):
            await storage.read_meta(S, "series")

    @pytest_twisted.ensureDeferred
    async def test_reads_keep_solutions_apart(self, storage: Any) -> None:
        def items(solution: str, tag: str) -> WriteBatch:
            return make_batch(
                solution,
                samples=[(series_key("cpu", {}, entity=f"e-{tag}"), T0, 1)],
                properties=[Property("e", "t", {"k": tag}, {"v": tag}, T0)],
                messages=[Message("e", T0, tag)],
                meta=[Meta("metric", "cpu", {"label": tag})],
            )

        async def reads(solution: str) -> tuple:
            return (
                await storage.read_properties(solution),
                await storage.read_messages(solution),
                await storage.read_meta(solution, "metric"),
                await storage.read_meta(solution, "entity"),
            )

        nothing = ([], [], [], [])
        assert await reads(S) == nothing  # an empty store
        await storage.write(items("one", "1"))
        await storage.write(items("two", "2"))
        await storage.write(make_batch("plain", samples=[(CPU, T0, 1)]))
        for solution, tag in (("one", "1"), ("two", "2")):
            assert await reads(solution) == (
                [Property("e", "t", {"k": tag}, {"v": tag}, T0)],
                [Message("e", T0, tag)],
                [Meta("metric", "cpu", {"label": tag})],
                [Meta("entity", "e", {}), Meta("entity", f"e-{tag}", {})],
            )
        assert await reads("plain") == nothing  # series without an entity register nothing
        assert await reads("nobody") == nothing
        await storage.delete_solution_data("one")
        assert await reads("one") == nothing
        assert (await reads("two"))[0] == [Property("e", "t", {"k": "2"}, {"v": "2"}, T0)]

    # -- data lifecycle ------------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_delete_solution_data(self, storage: Any) -> None:
        def everything(solution: str) -> WriteBatch:
            return make_batch(
                solution,
                samples=[(CPU, T0, 1), (series_key("x", {}, entity="e"), T0, 1)],
                properties=[Property("e", "t", {}, {"a": "1"}, T0)],
                messages=[Message("e", T0, "m")],
                meta=[Meta("metric", "cpu", {"label": "L"})],
                records=[Record(T0, b"1")],
            )

        await storage.write(everything("gone"))
        await storage.write(everything("kept"))
        assert await storage.solution_has_data("gone")
        kept_before = await collect(storage, "kept")
        await storage.delete_solution_data("gone")
        assert not await storage.solution_has_data("gone")
        assert await collect(storage, "gone") == []
        assert await storage.count_points("gone") == 0
        assert await collect(storage, "kept") == kept_before
        # the solution can be written again afterwards
        await storage.write(make_batch("gone", samples=[(CPU, T0 + 5, 2)]))
        [(key, times, values, _)] = await storage.read_series("gone", None, None, None)
        assert (key, times, values) == (CPU, [T0 + 5], [2])
        await storage.delete_solution_data("never-existed")

    @pytest_twisted.ensureDeferred
    async def test_solution_has_data_for_each_kind(self, storage: Any) -> None:
        kinds = {
            "samples": make_batch("s1", samples=[(CPU, T0, 1)]),
            "properties": make_batch("s2", properties=[Property("e", "t", {}, {"a": "1"}, T0)]),
            "messages": make_batch("s3", messages=[Message("e", T0, "m")]),
            "meta": make_batch("s4", meta=[Meta("entity", "e", {})]),
            "records": make_batch("s5", records=[Record(T0, b"x")]),
        }
        for wb in kinds.values():
            await storage.write(wb)
        for i in range(1, 6):
            assert await storage.solution_has_data(f"s{i}")
        assert not await storage.solution_has_data("s6")

    @pytest_twisted.ensureDeferred
    async def test_reopen_keeps_everything(self, storage_factory: Callable[[], Any]) -> None:
        first = storage_factory()
        await first.open()
        wb = make_batch(
            samples=[
                (CPU, T0, 1),
                (CPU, T0 + 1, 2.5),
                (series_key("t", {}, entity="e"), T0, None, "x"),
            ],
            properties=[Property("e", "t", {"k": "v"}, {"a": "1"}, T0)],
            messages=[Message("e", T0, "m", severity="MAJOR")],
            meta=[Meta("metric", "cpu", {"units": "%"})],
            records=[Record(T0, b'{"a":1}')],
        )
        await first.write(wb)
        catalog = ICatalog.providedBy(first)
        if catalog:
            await first.create_solution(SolutionRecord("kept", "desc", attributes={"x": 1}))
            await first.save_token(_token("tok", "kept"))
        before = await collect(first, None)
        series_before = await first.read_series(S, None, None, None)
        await first.close()
        await first.close()  # closing twice is harmless

        second = storage_factory()
        await second.open()
        try:
            assert await collect(second, None) == before
            assert typed_series(await second.read_series(S, None, None, None)) == typed_series(
                series_before
            )
            await second.write(make_batch(samples=[(CPU, T0, 9)]))
            [cpu, _] = await second.read_series(S, None, None, None)
            assert cpu[2] == [9, 2.5]
            if catalog:
                rec = await second.get_solution("kept")
                assert (rec.description, rec.attributes) == ("desc", {"x": 1})
                assert (await second.get_token("tok")).credentials == _token(
                    "tok", "kept"
                ).credentials
        finally:
            await second.close()

    @pytest_twisted.ensureDeferred
    async def test_calls_after_close_fail(self, storage_factory: Callable[[], Any]) -> None:
        s = storage_factory()
        await s.open()
        await s.close()
        with pytest.raises(Exception):  # noqa: B017 - any error, as long as it is not silent
            await s.count_points(None)

    # -- catalog -------------------------------------------------------------

    @pytest_twisted.ensureDeferred
    async def test_solution_crud(self, catalog: Any) -> None:
        assert await catalog.get_solution("s") is None
        assert await catalog.list_solutions() == []
        await catalog.create_solution(SolutionRecord("s", "first", "default", 5, {"type": "json"}))
        await catalog.create_solution(SolutionRecord("a-store", storage="other"))
        got = await catalog.get_solution("s")
        assert got == SolutionRecord("s", "first", "default", 5, {"type": "json"})
        names = [r.name for r in await catalog.list_solutions()]
        assert names == ["a-store", "s"]
        other = await catalog.get_solution("a-store")
        assert other.storage == "other" and other.created_ns > 0
        with pytest.raises(Conflict):
            await catalog.create_solution(SolutionRecord("s", "again"))
        assert (await catalog.get_solution("s")).description == "first"
        await catalog.delete_solution("s")
        assert await catalog.get_solution("s") is None
        with pytest.raises(NotFound):
            await catalog.delete_solution("s")
        await catalog.create_solution(SolutionRecord("s", "reborn"))
        assert (await catalog.get_solution("s")).description == "reborn"

    @pytest_twisted.ensureDeferred
    async def test_tokens(self, catalog: Any) -> None:
        await catalog.create_solution(SolutionRecord("s"))
        tok = _token("t1", "s", created_ns=1)
        await catalog.save_token(tok)
        single = TokenRecord(
            "key1",
            "s",
            [Credential("key1", frozenset(("read", "write")), hash_secret("tsstore_x"))],
            created_ns=2,
        )
        await catalog.save_token(single)
        assert await catalog.get_token("t1") == tok
        assert await catalog.get_token("nope") is None
        assert [t.id for t in await catalog.list_tokens("s")] == ["t1", "key1"]
        assert await catalog.list_tokens("other") == []

        tok.description = "changed"
        tok.expires_ns = T0
        tok.tags = {"host": "h"}
        tok.revoked = True
        await catalog.save_token(tok)
        got = await catalog.get_token("t1")
        assert got == tok
        assert got.credential("t1r").scopes == frozenset(("read",))

        with pytest.raises(NotFound):
            await catalog.save_token(_token("t2", "no-such-solution"))
        clash = _token("t3", "s")
        clash.credentials[0].secret_hash = tok.credentials[0].secret_hash
        with pytest.raises(Conflict):
            await catalog.save_token(clash)
        assert await catalog.get_token("t1") == tok

        await catalog.delete_solution("s")
        assert await catalog.get_token("t1") is None
        assert await catalog.find_credential(None, hash_secret("t1w:write-secret-0001")) is None

    @pytest_twisted.ensureDeferred
    async def test_find_credential(self, catalog: Any) -> None:
        await catalog.create_solution(SolutionRecord("s"))
        tok = _token("t1", "s", created_ns=1)
        await catalog.save_token(tok)
        w = hash_secret("t1w:write-secret-0001")
        r = hash_secret("t1r:read-secret-00001")
        assert await catalog.find_credential("t1w", w) == tok
        assert await catalog.find_credential("t1r", r) == tok
        assert await catalog.find_credential(None, w) == tok
        assert await catalog.find_credential(None, r) == tok
        assert await catalog.find_credential("t1w", r) is None  # another credential's hash
        assert await catalog.find_credential("t1w", hash_secret("wrong")) is None
        assert await catalog.find_credential("t1w", w[:-1]) is None
        assert await catalog.find_credential("nope", w) is None
        assert await catalog.find_credential(None, hash_secret("wrong")) is None

    @pytest_twisted.ensureDeferred
    async def test_catalog_generation_moves_on_each_change(self, catalog: Any) -> None:
        seen = [await catalog.catalog_generation()]

        async def changed() -> None:
            gen = await catalog.catalog_generation()
            assert isinstance(gen, int)
            assert gen not in seen
            seen.append(gen)

        await catalog.create_solution(SolutionRecord("s"))
        await changed()
        tok = _token("t1", "s")
        await catalog.save_token(tok)
        await changed()
        tok.revoked = True
        await catalog.save_token(tok)
        await changed()
        await catalog.delete_solution("s")
        await changed()
        await catalog.create_solution(SolutionRecord("x"))
        await changed()
        # failed changes, reads and data writes leave it alone
        gen = await catalog.catalog_generation()
        with pytest.raises(Conflict):
            await catalog.create_solution(SolutionRecord("x"))
        await catalog.get_solution("x")
        await catalog.write(make_batch(samples=[(CPU, T0, 1)]))
        assert await catalog.catalog_generation() == gen


def _token(token_id: str, solution: str, created_ns: int = 0) -> TokenRecord:
    """A READ/WRITE pair whose secrets are '<id>r:read-secret-00001' and so on."""
    return TokenRecord(
        token_id,
        solution,
        [
            Credential(
                f"{token_id}r", frozenset(("read",)), hash_secret(f"{token_id}r:read-secret-00001")
            ),
            Credential(
                f"{token_id}w",
                frozenset(("write",)),
                hash_secret(f"{token_id}w:write-secret-0001"),
            ),
        ],
        description="pair",
        created_ns=created_ns,
    )


def typed_series(got: list[tuple[SeriesKey, list[int], list[Value], Any]]) -> list:
    return [(k, t, typed(v), x) for k, t, v, x in got]
