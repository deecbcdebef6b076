"""Series ids by the identity of key objects (`SeriesRefs`).

A parser hands out the same key object for a series line after line (its
cache of known series), so a write path that meets that object again need
not hash it: a `SeriesKey` is a nested tuple, and at 100 k series hashing
one, through a dict that size, costs a few cache misses a point.  The id of
the object is an int, hashed in a step.  This is the series reference a
scrape cache keeps (Prometheus' ``ref``), kept here on the storage side, so
that no parser needs to know a backend's ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from tsnet.model import SeriesKey


class SeriesRefs:
    """Series id by ``id(key)``, for key objects seen before.

    It holds every key object it maps, so an id() is never reused while it
    is here (that is what makes the identity a safe key).  An equal key in
    another object simply misses, and is learned under its own identity.
    Bounded: past ``limit`` objects it starts again, as the caches of keys do.
    """

    __slots__ = ("_held", "_sids", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sids: dict[int, int] = {}
        self._held: dict[int, SeriesKey] = {}

    def __len__(self) -> int:
        return len(self._sids)

    def lookup(self, keys: Sequence[SeriesKey]) -> list[int | None]:
        """The id of each key object, None for one not learned."""
        return list(map(self._sids.get, map(id, keys)))

    def learn(self, keys: Sequence[SeriesKey], sids: Sequence[int]) -> None:
        """Remember ``sids[i]`` as the id of the object ``keys[i]``."""
        if len(self._sids) + len(keys) > self.limit:
            self.clear()
        refs = list(map(id, keys))
        self._held.update(zip(refs, keys, strict=True))
        self._sids.update(zip(refs, sids, strict=True))

    def clear(self) -> None:
        self._sids.clear()
        self._held.clear()
