"""``tsnet import``: what ``tsnet export`` wrote, loaded back into storage.

The file is read a line at a time and written a batch at a time (`BATCH`
lines, one batch in flight), so memory stays bounded whatever its size.  Each
line is checked as the data model checks items (`tsnet.import_lines`); a bad
line is refused with its number and the import goes on; a write the storage
does not take ends it.  Writes go through `tsnet.ingest.Ingest`, the one write
path: batching, retries while the storage is busy or failing (another
process holding SQLite's write lock, a Redis restart), and the storage's own
upsert rules.

An import is idempotent: it compares every line with what is stored and
writes only what would change it, so importing a file twice, or into the
storage it came from, writes nothing the second time.

- series: a point at a stored (series, millisecond) replaces it as ingest
  would (a later value wins; no value keeps the stored one, no text the stored
  text), and is left alone when that changes nothing;
- properties, metric and entity meta: upserted as ingest merges them; meta
  fields the export filled in as defaults are not written where the stored
  record has none (an implicit registration stays implicit);
- messages, which have no key: a line is imported only if the stored
  messages of its millisecond do not hold it already (counted, so two equal
  lines make two messages).  Lines of one message time are never split
  between batches;
- other kinds belong to a protocol family (`IImportKinds`: ts-store's
  ``store`` and ``record``), which restores them its own way.

Solutions that do not exist are created (in ``--storage``); one that exists
keeps the storage it lives in.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson
from twisted.internet import defer
from zope.interface import implementer

from tsnet.errors import NotFound, StorageUnavailable
from tsnet.export import message_line
from tsnet.export_text import line_text
from tsnet.import_lines import (
    CORE_KINDS,
    NS_PER_MS,
    ImportStep,
    LineError,
    meta_to_write,
    parse_message,
    parse_meta,
    parse_property,
    parse_series,
    same_value,
    solution_of,
)
from tsnet.interfaces import IImporter, IImportKinds
from tsnet.model import Batch, Message, Meta, Property, SampleSet, SeriesKey, Value, anonymous
from tsnet.records import SolutionRecord
from tsnet.storage import rules

#: lines a batch holds (a run of lines of one message time may make it longer)
BATCH = 10_000
#: a longer line is refused (a record of a large ts-store store is the longest)
MAX_LINE = 64 * 1024 * 1024
#: the ingest label of what an import writes (``tsnet_points_written_total``)
PROTOCOL = "import"

Point = tuple[int, Value, "str | None"]
#: a float this big in a series line may be an integer orjson could not hold
_BIG = 2.0**63


class ImportAborted(Exception):
    """The storage did not take a batch: the import stopped there."""


@dataclass
class Counts:
    """What an import did, line by line (blank lines are not counted)."""

    lines: int = 0
    imported: int = 0
    unchanged: int = 0
    rejected: int = 0
    skipped: int = 0  # lines of other solutions than ``--solution``

    def as_dict(self) -> dict:
        return {"lines": self.lines, "imported": self.imported, "unchanged": self.unchanged,
                "rejected": self.rejected, "skipped": self.skipped}


def family_importers(plugins: dict, storages: Any, storage: str) -> dict[str, Any]:
    """kind -> `IImporter` of every installed family that restores kinds."""
    out: dict[str, Any] = {}
    for plugin in plugins.values():
        if IImportKinds.providedBy(plugin):
            importer = plugin.importer(storages, storage)
            for kind in plugin.import_kinds:
                if kind in CORE_KINDS or kind in out:
                    raise ValueError(f"plugin {plugin.name!r} restores kind {kind!r}, "
                                     "which another restores already")
                out[kind] = importer
    return out


def read_lines(source: BinaryIO, max_line: int = MAX_LINE) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) for every line of ``source``; None for a line
    longer than ``max_line`` bytes, which is skipped unread."""
    n = 0
    while True:
        raw = source.readline(max_line + 1)
        if not raw:
            return
        n += 1
        if len(raw) > max_line:
            while raw and not raw.endswith(b"\n"):
                raw = source.readline(1 << 20)
            yield n, None
            continue
        yield n, raw


def decode(raw: bytes) -> Any:
    """One line's JSON: orjson, fast, for series lines (the bulk of a file);
    the standard library for the others, and where orjson cannot be exact:
    it reads an integer beyond 64 bits as a float (a record's data may hold
    one, and a series value that big must be refused as one).  ValueError if
    it is not JSON."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw, parse_constant=_not_json)
    if isinstance(line, dict) and line.get("kind") == "series":
        v, t = line.get("value"), line.get("time_ms")
        if not ((v.__class__ is float and abs(v) >= _BIG) or t.__class__ is float):
            return line
    return json.loads(raw, parse_constant=_not_json)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (the export writes \"{name}\")")


def _same_instant(a: dict, b: dict) -> bool:
    """Two message lines of one solution and millisecond (kept in one batch,
    so that equal messages of one time are counted against the store once)."""
    return (a.get("kind") == b.get("kind") == "message" and a.get("solution") == b.get("solution")
            and a.get("time_ms") == b.get("time_ms"))


class Importer:
    """One run of ``tsnet import`` over opened storages, writing through
    ``ingest`` (one file: what it learns of the stored state, such as the
    series that existed before it began, holds for that run only)."""

    def __init__(self, storages: Any, ingest: Any, storage: str = "default",
                 only: str | None = None, families: dict[str, Any] | None = None,
                 batch: int = BATCH, now_ns: Callable[[], int] | None = None,
                 report: Callable[[int, str, bool], object] | None = None) -> None:
        """``report(line number, message, refused)`` is told of every line
        refused, and of every note on a line imported with a caveat."""
        if storage not in storages.backends:
            raise NotFound(f"no [storage:{storage}] in the config "
                           f"(have: {', '.join(storages.backends)})")
        self.storages = storages
        self.ingest = ingest
        self.only = only
        self.batch = batch
        self.counts = Counts()
        self._core = CoreKinds(storages, storage, now_ns or (lambda: 0))
        self._families = families or {}
        self._report = report or (lambda n, msg, refused: None)
        #: what to report, held until the lines before it are looked at, so
        #: that reports come in line order
        self._reports: list[tuple[int, str, bool]] = []

    def _reject(self, lineno: int, message: str) -> None:
        self.counts.rejected += 1
        self._reports.append((lineno, message, True))

    def _say(self) -> None:
        for report in sorted(self._reports, key=lambda r: r[0]):
            self._report(*report)
        self._reports = []

    async def run(self, source: BinaryIO) -> Counts:
        """Import every line of ``source`` (binary); raises ImportAborted when a
        write fails (the counts say how far it got)."""
        run: list[tuple[int, dict]] = []
        handler: Any = None
        for lineno, raw in read_lines(source):
            if raw is not None:
                raw = raw.strip()
                if not raw:
                    continue
            self.counts.lines += 1
            line, why = self._line(raw)
            if why is not None:
                self._reject(lineno, why)
                if len(self._reports) >= self.batch:  # (bounded: say them now)
                    if run:
                        await self._load(handler, run)
                        run = []
                    self._say()
                continue
            owner = self._core if line["kind"] in CORE_KINDS else self._families[line["kind"]]
            if self.only is not None and line.get("solution") != self.only:
                self.counts.skipped += 1
                continue
            if run and (owner is not handler or (
                    len(run) >= self.batch and not _same_instant(run[-1][1], line))):
                await self._load(handler, run)
                run = []
            handler = owner
            run.append((lineno, line))
        if run:
            await self._load(handler, run)
        self._say()
        return self.counts

    def _line(self, raw: bytes | None) -> tuple[Any, str | None]:
        """The decoded line, or why it is refused: not JSON, no known kind."""
        if raw is None:
            return None, f"longer than {MAX_LINE} bytes"
        try:
            line = decode(raw)
        except (ValueError, RecursionError) as e:
            return None, f"not JSON ({e})"
        if not isinstance(line, dict):
            return None, "not a JSON object"
        kind = line.get("kind")
        if not isinstance(kind, str):
            return None, "'kind' is missing or not a string"
        if kind not in CORE_KINDS and kind not in self._families:
            known = sorted(CORE_KINDS | set(self._families))
            return None, f"unknown kind {kind!r} (known: {', '.join(known)})"
        return line, None

    async def _load(self, handler: Any, run: list[tuple[int, dict]]) -> None:
        step = ImportStep(*(await handler.load(run)))
        for lineno, message in step.refused:
            self._reject(lineno, message)
        self._reports.extend((lineno, message, False) for lineno, message in step.notes)
        self._say()
        writes = [self.ingest.submit(b, anonymous(solution), PROTOCOL)
                  for solution, b in step.batches]
        try:
            await defer.gatherResults(writes, consumeErrors=True)
        except defer.FirstError as e:
            f = e.subFailure
            why = ("the storage did not commit them in time, it is failing or busy"
                   if f.check(StorageUnavailable) else f.getErrorMessage())
            raise ImportAborted(
                f"lines {run[0][0]} to {run[-1][0]} may not be written ({why}); importing "
                "the file again goes on where it stopped") from None
        self.counts.unchanged += step.unchanged
        self.counts.imported += len(run) - step.unchanged - len(step.refused)


@dataclass
class _Lines:
    """One solution's lines of a batch, parsed."""

    points: dict[SeriesKey, list[Point]] = field(default_factory=dict)
    properties: list[Property] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    meta: list[Meta] = field(default_factory=list)


@implementer(IImporter)
class CoreKinds:
    """The `IImporter` of the core's kinds: series, property, message, metric, entity."""

    def __init__(self, storages: Any, storage: str, now_ns: Callable[[], int]) -> None:
        self.storages = storages
        self.storage = storage
        self.now_ns = now_ns
        self._ready: set[str] = set()
        #: the series each solution had when the import first met it: only
        #: those can hold a point that an imported line would meet
        self._stored: dict[str, set[SeriesKey]] = {}

    async def _solution(self, name: str) -> None:
        """Make sure the solution exists (created in the import's storage)."""
        if self.storages.solution(name) is None:
            if await self.storages.catalog.get_solution(name) is None:
                await self.storages.catalog.create_solution(SolutionRecord(
                    name=name, storage=self.storage, created_ns=self.now_ns()))
            await self.storages.refresh()
        try:
            self.storages.backend_for(name)
        except NotFound as e:
            raise LineError(str(e)) from None
        self._ready.add(name)

    async def load(self, lines: list[tuple[int, dict]]) -> ImportStep:
        refused: list[tuple[int, str]] = []
        by_solution: dict[str, _Lines] = {}
        for lineno, line in lines:
            kind = line["kind"]
            try:
                solution = line.get("solution")
                if solution.__class__ is not str or solution not in self._ready:
                    solution = solution_of(line)
                    await self._solution(solution)
                if kind == "series":
                    key, t, v, x = parse_series(line)
                    item: Any = (key, (t, v, x))
                elif kind == "property":
                    item = parse_property(line)
                elif kind == "message":
                    item = parse_message(line)
                else:
                    item = parse_meta(line)
            except LineError as e:
                refused.append((lineno, f"{kind}: {e}"))
                continue
            got = by_solution.get(solution)
            if got is None:
                got = by_solution[solution] = _Lines()
            if kind == "series":
                got.points.setdefault(item[0], []).append(item[1])
            elif kind == "property":
                got.properties.append(item)
            elif kind == "message":
                got.messages.append(item)
            else:
                got.meta.append(item)
        unchanged = 0
        batches = []
        for solution, got in by_solution.items():
            backend = self.storages.backend_for(solution)
            batch = Batch()
            unchanged += await self._series(backend, solution, got.points, batch.samples)
            unchanged += await self._properties(backend, solution, got.properties, batch)
            unchanged += await self._messages(backend, solution, got.messages, batch)
            unchanged += await self._meta(backend, solution, got.meta, batch)
            if batch.item_count():
                batches.append((solution, batch))
        return ImportStep(batches, unchanged, refused)

    async def _series(self, backend: Any, solution: str, points: dict[SeriesKey, list[Point]],
                      out: SampleSet) -> int:
        """Add to ``out`` the points that change what is stored; returns how
        many are stored as they are."""
        stored_keys = self._stored.get(solution)
        if stored_keys is None:
            stored_keys = self._stored[solution] = set(await backend.list_series(solution))
        by_metric: dict[str, list[SeriesKey]] = {}
        for key in points:
            if key in stored_keys:
                by_metric.setdefault(key[0], []).append(key)
        stored: dict[SeriesKey, tuple] = {}
        for metric, keys in by_metric.items():
            times = [t for key in keys for t, _, _ in points[key]]
            wanted = set(keys)
            for key, t, v, x in await backend.read_series(
                    solution, metric, min(times), max(times) + NS_PER_MS - 1):
                if key in wanted:
                    stored[key] = (t, v, x)
        unchanged = 0
        for key, pts in points.items():
            have = stored.get(key)
            if have is None:
                for t, v, x in pts:
                    out.add(key, t, v, x)
                continue
            at: dict[int, collections.deque] = {}  # millisecond -> stored points in it
            ts, vs, xs = have
            for i, t in enumerate(ts):
                at.setdefault(t // NS_PER_MS, collections.deque()).append(
                    (t, vs[i], xs[i] if xs is not None else None))
            for t, v, x in pts:
                slot = at.get(t // NS_PER_MS)
                if not slot:
                    out.add(key, t, v, x)
                    continue
                t0, v0, x0 = slot.popleft()
                if same_value(v0 if v is None else v, v0) and (x0 if x is None else x) == x0:
                    unchanged += 1
                else:
                    out.add(key, t0, v, x)  # at the stored time: it replaces that point
        return unchanged

    async def _properties(self, backend: Any, solution: str, props: list[Property],
                          batch: Batch) -> int:
        unchanged = 0
        stored: dict[tuple[str, str], list[Property]] = {}
        for p in props:
            if p.type == rules.ENTITY_TAGS:  # (entity meta; never exported as a property)
                batch.properties.append(p)
                continue
            group = stored.get((p.entity, p.type))
            if group is None:
                group = stored[(p.entity, p.type)] = await backend.read_properties(
                    solution, p.entity, p.type)
            old = next((s for s in group if s.key == p.key), None)
            if (old is not None and rules.merge_tags(old.tags, p.tags) == old.tags
                    and old.time_ns // NS_PER_MS == p.time_ns // NS_PER_MS):
                unchanged += 1
            else:
                batch.properties.append(p)
        return unchanged

    async def _messages(self, backend: Any, solution: str, msgs: list[Message],
                        batch: Batch) -> int:
        if not msgs:
            return 0
        lo = min(m.time_ns for m in msgs)
        hi = max(m.time_ns for m in msgs) + NS_PER_MS
        have = collections.Counter(
            line_text(message_line(solution, m))
            for m in await backend.read_messages(solution, start_ns=lo, end_ns=hi))
        unchanged = 0
        for m in msgs:
            text = line_text(message_line(solution, m))
            if have[text]:
                have[text] -= 1
                unchanged += 1
            else:
                batch.messages.append(m)
        return unchanged

    async def _meta(self, backend: Any, solution: str, metas: list[Meta], batch: Batch) -> int:
        unchanged = 0
        for m in metas:
            found = await backend.read_meta(solution, m.kind, m.name)
            stored = found[0].fields if found else None
            fields = meta_to_write(m, stored)
            if stored is not None and rules.merge_meta_fields(stored, fields) == stored:
                unchanged += 1
            else:
                batch.meta.append(Meta(m.kind, m.name, fields))
        return unchanged
