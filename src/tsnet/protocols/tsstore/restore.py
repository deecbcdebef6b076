"""ts-store's export lines restored by ``tsnet import``: stores and their records.

A ``store`` line recreates the store's catalog entry (type, sizes, schema
versions, outbound connections) when there is none; a store that exists
keeps its settings, and a line that disagrees with them is refused (its
records would not be placed as the line's store placed them).  A store made
by an import has no API key yet: ``tsnet store key regenerate NAME`` makes one.

A ``record`` line is placed in its store's block ring (`Ring`, replayed from
what the store holds), exactly as a write at that time would be, so reads
answer ts-store's ``block_num`` and a full store reclaims its oldest blocks.
Records are keyed by time, as in ts-store: a line whose time the store holds
is already imported (or refused, when the stored record differs), and one
older than the store's newest record is refused with ts-store's own text.

The line has the record's data as JSON (json and schema stores) or text, not
its bytes, so the bytes are rebuilt: the first of the likely encodings
(compact, Python's default separators, Go's ``json.Marshal``, ...) whose
export line is the line itself, byte for byte, size included; data that was
not compact JSON is padded with spaces to its size if need be, which JSON
ignores.  Only when none fits (text that was not UTF-8) is the record stored
as near as it can be, with a note.

A server that has the store open keeps its own ring: records imported while
it runs are read at once, and counted in its blocks once it opens the store
again (a restart).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from typing import Any

from zope.interface import implementer

from tsnet.errors import NotFound
from tsnet.export import record_line
from tsnet.export_text import line_text
from tsnet.import_lines import ImportStep, LineError, check_keys, int_field, solution_of
from tsnet.interfaces import IImporter
from tsnet.model import INT64_MAX, Batch, Record
from tsnet.protocols.tsstore.gojson import GoJSONError, go_marshal
from tsnet.protocols.tsstore.ring import Ring, RingError, valid_block_size
from tsnet.protocols.tsstore.schema import SchemaError, SchemaSet
from tsnet.protocols.tsstore.stores import ATTRIBUTE, STORE_TYPES
from tsnet.records import SolutionRecord

KINDS = frozenset(("store", "record"))
_STORE_KEYS = ("kind", "solution", "type", "num_blocks", "data_block_size",
               "index_block_size", "schema", "connections")
_STORE_KEY_SET = frozenset(_STORE_KEYS)
_RECORD_KEYS = frozenset(("kind", "solution", "time_ns", "size", "data", "encoding"))


def store_attributes(line: dict) -> dict:
    """The catalog attributes a ``store`` line describes, checked as a store's
    creation checks them, in the order a store keeps them."""
    check_keys(line, _STORE_KEY_SET)
    kind = line.get("type")
    if kind not in STORE_TYPES:
        raise LineError(f"'type' must be one of {', '.join(STORE_TYPES)}, not {kind!r}")
    attrs: dict[str, Any] = {"type": kind, "num_blocks": int_field(line, "num_blocks", 1)}
    for name in ("data_block_size", "index_block_size"):
        size = int_field(line, name, 1)
        if not valid_block_size(size):
            raise LineError(f"{name!r} must be a power of 2 and at least 64, not {size}")
        attrs[name] = size
    if "schema" in line:
        try:
            schema = SchemaSet.from_json(line["schema"])
        except SchemaError as e:
            raise LineError(f"'schema': {e}") from None
        if not schema.current_version:
            raise LineError("'schema' has no current version")
        attrs["schema"] = schema.to_json()
    if "connections" in line:
        conns = line["connections"]
        if not isinstance(conns, list) or not all(isinstance(c, dict) for c in conns):
            raise LineError("'connections' must be a list of objects")
        attrs["connections"] = [dict(c) for c in conns]
    return attrs


def _short_float(f: float) -> str:
    """The shortest JSON text that reads back as the float ``f`` (``1e5``
    for 100000.0, ``1e-7``), where ``repr`` is one of the longer ones."""
    r = repr(f)
    if not math.isfinite(f) or f == 0:
        return r
    mant, _, exp = r.partition("e")
    sign = "-" if mant.startswith("-") else ""
    ip, _, fp = mant.lstrip("-").partition(".")
    digits = (ip + fp).strip("0")
    if ip.strip("0"):  # the value is 0.DIGITS times 10 to the power ``point``
        point = len(ip.lstrip("0"))
    else:
        point = len(fp.lstrip("0")) - len(fp)
    e = point - 1 + (int(exp) if exp else 0)
    sci = f"{sign}{digits[0]}{'.' + digits[1:] if len(digits) > 1 else ''}e{e}"
    return min((r, sci), key=len)


def _short_json(value: Any) -> str:
    """The shortest JSON text of a decoded value (compact, strings as they
    are, floats by `_short_float`): no text that reads back as it is shorter."""
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _short_json(v)
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(_short_json, value)) + "]"
    if value.__class__ is float:
        return _short_float(value)
    return json.dumps(value, ensure_ascii=False)


def _json_candidates(data: Any) -> list[bytes]:
    """The likely bytes of a json or schema record whose data is ``data``."""
    out = []
    for encode in (
        lambda d: json.dumps(d, separators=(",", ":"), ensure_ascii=False),
        lambda d: json.dumps(d, ensure_ascii=False),
        lambda d: go_marshal(d).decode("utf-8"),
        lambda d: json.dumps(d, separators=(",", ":")),
        json.dumps,
    ):
        try:
            out.append(encode(data).encode("utf-8"))
        except (GoJSONError, ValueError, TypeError, RecursionError):
            continue
    if isinstance(data, str):  # (bytes that were not JSON are exported as text)
        out.append(data.encode("utf-8"))
    return out


def record_bytes(solution: str, line: dict, data_type: str) -> tuple[bytes, bool]:
    """The bytes of a record line for a store of ``data_type``, and whether
    they give the line back exactly (see the module docstring)."""
    size = int_field(line, "size", 0)
    if "data" not in line:
        raise LineError("'data' is missing")
    data = line["data"]
    encoding = line.get("encoding")
    if encoding is not None:
        if encoding != "base64" or data_type in ("json", "schema") or not isinstance(data, str):
            raise LineError(f"'encoding' {encoding!r} is not one a {data_type} store exports")
        try:
            candidates = [base64.b64decode(data, validate=True)]
        except (binascii.Error, ValueError):
            raise LineError("'data' is not base64") from None
    elif data_type in ("json", "schema"):
        candidates = _json_candidates(data)
    elif isinstance(data, str):
        candidates = [data.encode("utf-8")]
    else:
        raise LineError(f"'data' of a {data_type} record must be a string")
    if not candidates:
        raise LineError("'data' cannot be encoded as JSON")
    if data_type in ("json", "schema"):
        try:
            short = _short_json(data).encode("utf-8")
        except RecursionError:
            short = candidates[0]
        if len(short) <= size:  # (JSON ignores the spaces that make up the size)
            candidates.append(short + b" " * (size - len(short)))
    want = line_text(line)
    time_ns = line["time_ns"]
    for raw in candidates:
        if line_text(record_line(solution, Record(time_ns, raw, data_type))) == want:
            return raw, True
    return candidates[0], False


@implementer(IImporter)
class StoreImporter:
    """The `IImporter` of ``store`` and ``record`` lines, for one import run."""

    def __init__(self, storages: Any, storage: str) -> None:
        self.storages = storages
        self.storage = storage
        #: store -> (its attributes, its ring as this import has placed records)
        self._rings: dict[str, tuple[dict, Ring]] = {}

    async def load(self, lines: list[tuple[int, dict]]) -> ImportStep:
        refused: list[tuple[int, str]] = []
        notes: list[tuple[int, str]] = []
        unchanged = 0
        records: dict[str, list[tuple[int, dict]]] = {}
        for lineno, line in lines:
            kind = line["kind"]
            try:
                solution = solution_of(line)
                if kind == "store":
                    unchanged += await self._store(solution, line)
                else:
                    records.setdefault(solution, []).append((lineno, line))
            except LineError as e:
                refused.append((lineno, f"{kind}: {e}"))
        batches = []
        for solution, recs in records.items():
            batch, same = await self._records(solution, recs, refused, notes)
            unchanged += same
            if batch.records:
                batches.append((solution, batch))
        return ImportStep(batches, unchanged, refused, notes)

    async def _store(self, solution: str, line: dict) -> int:
        """Create the store unless it exists: 1 when it exists as the line says."""
        attrs = store_attributes(line)
        catalog = self.storages.catalog
        rec = await catalog.get_solution(solution)
        if rec is None:
            await catalog.create_solution(SolutionRecord(
                solution, "ts-store store", self.storage, time.time_ns(), {ATTRIBUTE: attrs}))
            await self.storages.refresh()
            return 0
        have = rec.attributes.get(ATTRIBUTE)
        if have is None:
            raise LineError(f"solution {solution!r} exists and is not a ts-store store")
        if have != attrs:
            differ = [k for k in _STORE_KEYS[2:] if have.get(k) != attrs.get(k)]
            raise LineError(f"store {solution!r} exists with other settings ({', '.join(differ)})"
                            "; it keeps its own")
        return 1

    async def _ring(self, solution: str) -> tuple[dict, Ring]:
        held = self._rings.get(solution)
        if held is not None:
            return held
        rec = await self.storages.catalog.get_solution(solution)
        attrs = rec.attributes.get(ATTRIBUTE) if rec is not None else None
        if attrs is None:
            raise LineError(f"no ts-store store {solution!r} (its store line comes first)")
        if self.storages.solution(solution) is None:
            await self.storages.refresh()
        try:
            backend = self.storages.backend_for(solution)
        except NotFound as e:
            raise LineError(str(e)) from None
        stored = await backend.read_records(solution, include_deleted=True)
        ring = Ring.replay(attrs["num_blocks"], attrs["data_block_size"],
                           ((r.time_ns, r.size, r.block) for r in stored))
        held = self._rings[solution] = (attrs, ring)
        return held

    async def _records(self, solution: str, lines: list[tuple[int, dict]],
                       refused: list, notes: list) -> tuple[Batch, int]:
        batch = Batch()
        try:
            attrs, ring = await self._ring(solution)
        except LineError as e:
            refused.extend((n, f"record: {e}") for n, _ in lines)
            return batch, 0
        data_type = attrs["type"]
        parsed = []
        for lineno, line in lines:
            try:
                check_keys(line, _RECORD_KEYS)
                t = int_field(line, "time_ns", 1, INT64_MAX)
                raw, exact = record_bytes(solution, line, data_type)
            except LineError as e:
                refused.append((lineno, f"record: {e}"))
                continue
            parsed.append((lineno, line, t, raw, exact))
        if not parsed:
            return batch, 0
        stored: dict[int, list[Record]] = {}
        for r in await self.storages.backend_for(solution).read_records(
                solution, min(p[2] for p in parsed), max(p[2] for p in parsed),
                include_deleted=True):
            stored.setdefault(r.time_ns, []).append(r)
        unchanged = 0
        for lineno, line, t, raw, exact in parsed:
            have = stored.get(t)
            if have:
                text = line_text(line)
                if any(not r.deleted and line_text(record_line(solution, r)) == text
                       for r in have):
                    unchanged += 1
                elif all(r.deleted for r in have):
                    unchanged += 1
                    notes.append((lineno, f"record: the store holds the record at {t} "
                                          "deleted; it stays deleted"))
                else:
                    refused.append((lineno, f"record: the store holds another record at {t}"))
                continue
            try:
                placed = ring.place(t, len(raw))
            except RingError as e:
                refused.append((lineno, f"record: {e}"))
                continue
            if not exact:
                notes.append((lineno, f"record: its bytes cannot be rebuilt exactly from the "
                                      f"line; stored {len(raw)} bytes"))
            batch.records.append(Record(t, raw, data_type, placed.block))
            if placed.reclaim_ns is not None:
                batch.reclaim_ns = max(batch.reclaim_ns or 0, placed.reclaim_ns)
        return batch, unchanged
