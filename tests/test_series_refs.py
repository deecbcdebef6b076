"""`tsnet.storage.series_refs.SeriesRefs`: series ids by key object."""

from __future__ import annotations

import gc

from tsnet.storage.series_refs import SeriesRefs


def _key(i: int) -> tuple:
    return ("m", None, (("host", f"h{i}"),))


def test_a_key_object_finds_its_id_and_an_equal_other_object_does_not() -> None:
    refs = SeriesRefs(limit=100)
    keys = [_key(i) for i in range(3)]
    assert refs.lookup(keys) == [None, None, None]
    refs.learn(keys, [7, 8, 9])
    assert refs.lookup([keys[2], keys[0], keys[2]]) == [9, 7, 9]
    assert refs.lookup([_key(1)]) == [None]  # (equal, but another object)
    assert len(refs) == 3


def test_an_object_it_maps_stays_alive_so_its_id_is_never_another_objects() -> None:
    """CPython hands a freed tuple's memory to the next tuple of its size, so
    without holding the objects a new key would find the id of a dead one."""
    refs = SeriesRefs(limit=10_000)
    refs.learn([_key(i) for i in range(1000)], list(range(1000)))
    gc.collect()
    fresh = [_key(i) for i in range(1000, 3000)]
    assert set(refs.lookup(fresh)) == {None}


def test_past_its_limit_it_starts_again() -> None:
    refs = SeriesRefs(limit=4)
    first = [_key(i) for i in range(3)]
    refs.learn(first, [1, 2, 3])
    more = [_key(i) for i in range(3, 5)]
    refs.learn(more, [4, 5])
    assert refs.lookup(first) == [None, None, None]
    assert refs.lookup(more) == [4, 5]
    assert len(refs) == 2
