"""The items tsnet stores, shared by every protocol family and every backend.

Series samples are held column-wise: a `SampleSet` maps each series to the
timestamps, values and texts received for it.  At hundreds of thousands of points
per second one Python object per point is the largest cost there is, so parsers
append straight into these columns and storage packs each column into one chunk.
Everything else (properties, messages, meta, records) is rare enough to be one
object per item.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field

#: Integers beyond int64 cannot be stored exactly; parsers reject them.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: metric, entity (ATSD only, else None), tags sorted by key.
SeriesKey = tuple[str, str | None, tuple[tuple[str, str], ...]]

Value = int | float | None

_SOLUTION_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


def parse_java_long(text: str) -> int:
    """OpenTSDB's strict ``Tags.parseLong``: optional sign, ASCII digits, int64.

    Python's int() is too lenient (``_``, whitespace, non-ASCII digits), so the
    checks are explicit and in Java's order, length before characters; the
    ValueError carries Java's message, which OpenTSDB's replies quote.
    """
    n = len(text)
    if n == 0:
        raise ValueError("Empty string")
    digits = text
    if text[0] in "+-":
        if n == 1:
            raise ValueError(f"Just a sign, no value: {text}")
        if n > 20:
            raise ValueError(f"Value too long: {text}")
        digits = text[1:]
    elif n > 19:
        raise ValueError(f"Value too long: {text}")
    if not (digits.isascii() and digits.isdigit()):
        for c in digits:
            if not "0" <= c <= "9":
                raise ValueError(f"Invalid character '{c}' in {text}")
    v = int(digits)
    if text[0] == "-":
        v = -v
    if v > INT64_MAX or v < INT64_MIN:
        raise ValueError(f"Overflow in {text}")
    return v


def valid_solution_name(name: str) -> bool:
    """Solution names: letters, digits, `-`, `_`, `.` (DESIGN §5), at most 64."""
    return bool(_SOLUTION_NAME.match(name))


def series_key(metric: str, tags: dict[str, str], entity: str | None = None) -> SeriesKey:
    """The canonical key of a series: tags sorted by key."""
    return (metric, entity, tuple(sorted(tags.items())))


def series_tags(key: SeriesKey) -> dict[str, str]:
    """The tags a tag-only read API (OpenTSDB's) sees for a series: its tags,
    and its entity (ATSD's) as the tag ``entity`` unless a tag has that name."""
    tags = dict(key[2])
    if key[1] is not None:
        tags.setdefault("entity", key[1])
    return tags


class Column:
    """The samples of one series received in one batch, in arrival order."""

    __slots__ = ("texts", "times", "values")

    def __init__(self) -> None:
        self.times: list[int] = []  # integer nanoseconds since the epoch
        self.values: list[Value] = []
        self.texts: list[str | None] | None = None  # only when some sample has text

    def add(self, time_ns: int, value: Value, text: str | None = None) -> None:
        self.times.append(time_ns)
        self.values.append(value)
        if text is not None or self.texts is not None:
            if self.texts is None:
                self.texts = [None] * (len(self.times) - 1)
            self.texts.append(text)

    def extend(self, other: Column) -> None:
        if other.texts is not None or self.texts is not None:
            mine = self.texts if self.texts is not None else [None] * len(self.times)
            theirs = other.texts if other.texts is not None else [None] * len(other.times)
            self.texts = mine + theirs
        self.times.extend(other.times)
        self.values.extend(other.values)

    def __len__(self) -> int:
        return len(self.times)


class SampleSet:
    """Series samples; what parsers produce for storage.

    Two forms, both public so that hot parsers can fill them without a method
    call per point:

    * ``columns``: series key -> `Column`, for input that repeats series (a
      telnet stream, a big batch);
    * rows: ``keys``, ``times``, ``values``, parallel lists of points in arrival
      order, without texts, for input that holds about one point per series (an
      HTTP request from a fleet), where a column per point would cost more than
      the point.

    A consumer that wants columns only calls `columnar`.  ``count`` counts both
    forms; a caller filling them directly keeps it with `recount`.
    """

    __slots__ = ("columns", "count", "keys", "times", "values")

    def __init__(self) -> None:
        self.columns: dict[SeriesKey, Column] = {}
        self.keys: list[SeriesKey] = []
        self.times: list[int] = []
        self.values: list[Value] = []
        self.count = 0

    def add(self, key: SeriesKey, time_ns: int, value: Value, text: str | None = None) -> None:
        col = self.columns.get(key)
        if col is None:
            col = self.columns[key] = Column()
        col.add(time_ns, value, text)
        self.count += 1

    def merge(self, other: SampleSet) -> None:
        for key, col in other.columns.items():
            mine = self.columns.get(key)
            if mine is None:
                self.columns[key] = col
            else:
                mine.extend(col)
        if other.keys:
            self.keys += other.keys
            self.times += other.times
            self.values += other.values
        self.count += other.count

    def columnar(self) -> dict[SeriesKey, Column]:
        """``columns``, with the rows moved into them (after what they held)."""
        if self.keys:
            columns = self.columns
            for key, t, v in zip(self.keys, self.times, self.values, strict=True):
                col = columns.get(key)
                if col is None:
                    col = columns[key] = Column()
                col.times.append(t)
                col.values.append(v)
                if col.texts is not None:
                    col.texts.append(None)
            self.keys, self.times, self.values = [], [], []
        return self.columns

    def recount(self) -> int:
        self.count = sum(len(c.times) for c in self.columns.values()) + len(self.keys)
        return self.count

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0


@dataclass
class Property:
    """An ATSD property: typed, keyed tags of an entity at one time."""

    entity: str
    type: str
    key: dict[str, str]
    tags: dict[str, str]
    time_ns: int


@dataclass
class Message:
    """An ATSD message: a text event of an entity."""

    entity: str
    time_ns: int
    message: str = ""
    type: str | None = None
    source: str | None = None
    severity: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Meta:
    """Metric or entity metadata (ATSD `metric` / `entity` commands).

    ``kind`` is ``"metric"`` or ``"entity"``; ``fields`` uses the snake_case
    names of the export format (data_type, label, units, ...).
    """

    kind: str
    name: str
    fields: dict = field(default_factory=dict)


@dataclass
class Record:
    """A ts-store record: opaque data of a store at a nanosecond time.

    ``block`` is where the record sits in its store's ring of fixed-size blocks
    (ts-store's ``block_num``): assigned by the family before the write and
    stored with it, so reads answer it and a node can rebuild the ring.
    ``deleted`` marks a soft-deleted record (only reads that ask see it)."""

    time_ns: int
    data: bytes
    data_type: str = "json"  # json | text | binary | schema
    block: int = 0
    deleted: bool = False

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Batch:
    """Everything one `ingest.submit` call carries, before a solution is attached."""

    samples: SampleSet = field(default_factory=SampleSet)
    properties: list[Property] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    meta: list[Meta] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    #: records of the solution at or before this time are removed once the
    #: batch's own records are written: a full fixed-size store reclaims its
    #: oldest blocks (None: nothing to reclaim)
    reclaim_ns: int | None = None

    def item_count(self) -> int:
        return (
            self.samples.count
            + len(self.properties)
            + len(self.messages)
            + len(self.meta)
            + len(self.records)
        )


@dataclass
class WriteBatch:
    """What a storage backend commits in one transaction: items per solution.

    ``id`` is unique to this batch and stays the same when the write queue
    retries it after a fault, so a backend that cannot commit atomically
    everywhere (Redis shards) can make a retry skip what was committed.  It is
    made when first asked for: the write queue makes a batch per commit, and
    only such a backend needs one."""

    by_solution: dict[str, Batch] = field(default_factory=dict)
    _id: str | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = uuid.uuid4().hex
        return self._id

    def for_solution(self, solution: str) -> Batch:
        b = self.by_solution.get(solution)
        if b is None:
            b = self.by_solution[solution] = Batch()
        return b

    def item_count(self) -> int:
        return sum(b.item_count() for b in self.by_solution.values())

    def point_count(self) -> int:
        return sum(b.samples.count for b in self.by_solution.values())


@dataclass(frozen=True)
class Principal:
    """Who is writing or reading: a solution, the scopes granted, the token's tags."""

    solution: str
    scopes: frozenset[str]
    tags: tuple[tuple[str, str], ...] = ()
    token_id: str | None = None

    def can(self, scope: str) -> bool:
        return scope in self.scopes


READ = "read"
WRITE = "write"


def anonymous(solution: str) -> Principal:
    """The principal of an `auth = none` listener: everything, in one solution."""
    return Principal(solution=solution, scopes=frozenset((READ, WRITE)))


def is_finite_number(v: Value) -> bool:
    return v is None or isinstance(v, int) or math.isfinite(v)
