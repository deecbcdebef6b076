"""The storage backends of one server, and which solution lives in which.

The ``default`` storage also holds the catalog (solutions and tokens), so every
node configured with the same default storage shares tokens and revocations.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from tsnet.config import Config, StorageConfig
from tsnet.errors import ConfigError, NotFound
from tsnet.interfaces import IStorages
from tsnet.records import SolutionRecord
from tsnet.retained import RetainedReader
from tsnet.retention import Retention

log = Logger(namespace="tsnet.storage")


def make_backend(sc: StorageConfig, reactor: Any) -> Any:
    """Build (not open) the backend a [storage:NAME] section describes, with the
    `IStorageBackend` plugin that config loading found for it."""
    if sc.plugin is None:
        raise ConfigError(f"[storage:{sc.name}] backend: {sc.backend!r} is not installed")
    return sc.plugin.makeStorage(sc, reactor)


@implementer(IStorages)
class Storages:
    """Named backends plus a cache of solution -> storage name."""

    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.backends = {n: make_backend(sc, reactor) for n, sc in config.storages.items()}
        self.catalog = self.backends["default"]
        self._solutions: dict[str, SolutionRecord] = {}
        self._views: list[Any] = []
        #: the retention rule ([tsnet] retention, each solution's, each metric's)
        self.retention = Retention(config.retention, reactor, self.solution)
        #: each storage as reads see it: retention applied (`backend_for`)
        self._read_sides = {n: RetainedReader(b, b, self.retention,
                                              lambda n=n: self.solutions_in(n))
                            for n, b in self.backends.items()}

    @defer.inlineCallbacks
    def open(self) -> Any:
        for b in self.backends.values():
            yield b.open()
        yield self.refresh()

    @defer.inlineCallbacks
    def close(self) -> Any:
        for b in reversed(list(self.backends.values())):
            try:
                yield b.close()
            except Exception:
                log.failure("closing storage failed")

    @defer.inlineCallbacks
    def refresh(self) -> Any:
        """Reload the solution list (called when the catalog generation moves)."""
        records = yield self.catalog.list_solutions()
        self._solutions = {r.name: r for r in records}

    def backend(self, name: str) -> Any:
        """The storage itself (writes, upkeep): no retention applied."""
        return self.backends[name]

    def retained(self, name: str) -> Any:
        """Storage ``name`` as reads see it: its reads and its export leave out
        what retention expired (`tsnet.retained`)."""
        return self._read_sides[name]

    def solutions_in(self, name: str) -> list[str]:
        """The solutions of the catalog that live in storage ``name``, sorted."""
        return sorted(n for n, r in self._solutions.items() if r.storage == name)

    def solution(self, name: str) -> SolutionRecord | None:
        return self._solutions.get(name)

    def solutions(self) -> list[SolutionRecord]:
        """Every solution this node knows, by name (reloaded when the catalog
        changes, within ``auth_refresh``): no catalog read per call."""
        return [self._solutions[n] for n in sorted(self._solutions)]

    def storage_name_for(self, solution: str) -> str:
        rec = self._solutions.get(solution)
        if rec is None:
            raise NotFound(f"no solution {solution!r}")
        if rec.storage not in self.backends:
            raise NotFound(f"solution {solution!r} lives in unknown storage {rec.storage!r}")
        return rec.storage

    def backend_for(self, solution: str) -> Any:
        """The read side of the storage holding ``solution`` (`retained`)."""
        return self._read_sides[self.storage_name_for(solution)]

    def add_series_view(self, view: Any) -> None:
        """Let a family show its own items as series to the read APIs (see
        `series_reader`): ``view(solution_record, backend)`` returns a reader,
        or None for a solution it has nothing to show of."""
        self._views.append(view)

    def series_reader(self, solution: str) -> Any:
        """What series reads of ``solution`` go to: its backend, or a family's
        view over it (ts-store's records as ``<store>.<field>`` series).  It
        has `list_series` and `read_series` as `IStorage` does; raises NotFound."""
        backend = self.backend_for(solution)  # (a view reads its own series through it)
        rec = self._solutions[solution]
        for view in self._views:
            reader = view(rec, backend)
            if reader is not None:
                return reader
        return backend

    @defer.inlineCallbacks
    def ensure_solution(self, name: str, description: str = "", now_ns: int = 0) -> Any:
        """Create the solution in the default storage unless it exists."""
        rec = yield self.catalog.get_solution(name)
        if rec is None:
            rec = SolutionRecord(name=name, description=description, created_ns=now_ns)
            yield self.catalog.create_solution(rec)
            log.info("created solution {solution}", solution=name)
        self._solutions[name] = rec
        return rec
