"""The OpenTSDB telnet `put` line, parsed the way OpenTSDB 2.2-2.4 parses it.

Clients match on the reply texts, so every rejection reproduces OpenTSDB's exact
message and OpenTSDB's order of checks (shared/specs/opentsdb.md §1.3-§1.6): the
first failing check wins.  Nothing here touches Twisted; the protocol calls
`PutParser.parse` once per line and writes ``str(err) + "\\n"`` for a `PutError`.

Speed: `PutParser.parse` is the ingest hot path.  It splits the line once,
looks the (metric, tag text) pair up in a cache of already validated series (a
new series with plain names is validated there too, `PutParser._learn`) and
only checks the timestamp and value itself; anything unusual falls back to
`PutParser.parse_slow`, the single source of truth for what is accepted and for
every error text.  The fast path only accepts what the slow path accepts, with the
same result (tests/test_opentsdb_parse.py proves it with hypothesis).
"""

from __future__ import annotations

import math
import re
import struct

from tsnet.model import INT64_MAX, Column, SampleSet, SeriesKey, parse_java_long, series_key

#: Reply prefixes: OpenTSDB catches NumberFormatException ("invalid value") before
#: its superclass IllegalArgumentException ("illegal argument").
ILLEGAL = "put: illegal argument: "
INVALID = "put: invalid value: "

#: The RunAbove / OVH IoT pseudo-tag carrying a write token (spec §4, §6.6).
AUTH_TAG = "ovh.auth"

#: Timestamps below 2**32 are seconds, above are milliseconds (not a digit count).
SECONDS_LIMIT = 1 << 32
#: The largest millisecond timestamp accepted.  OpenTSDB takes any 13 digits (to
#: 9999999999999, year 2286); tsnet keeps time as int64 nanoseconds, which end at
#: 9223372036854 ms (2262-04-11), so later ones get OpenTSDB's own range error
#: instead of failing the storage batch that holds them (a divergence).
MAX_MS = INT64_MAX // 1_000_000

#: What `help` lists (OpenTSDB 2.4 order, minus what tsnet does not register).
HELP_COMMANDS: tuple[str, ...] = ("stats", "dropcaches", "version", "exit", "help", "put")
#: The `iot` profile adds the RunAbove `auth` command.
IOT_HELP_COMMANDS: tuple[str, ...] = (*HELP_COMMANDS, "auth")

#: The reply to a put without authentication in the `iot` profile (spec §6.6).
UNAUTHENTICATED_PUT = ILLEGAL + "Unauthenticated command: put"

#: A batch with fewer points per series than this is filled with rows (`_Generation`)
WIDE_RATIO = 4
#: the fewest points of a batch that say whether the next one is wide
WIDE_JUDGED = 1000

_NAME_ASCII = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./")
_ASCII_NAME = re.compile(r"[A-Za-z0-9._/-]+")
# A tag text of ASCII names, ``k=v`` words one space apart (`PutParser._learn`).
_PLAIN_TAG = r"[A-Za-z0-9._/-]+=[A-Za-z0-9._/-]+"
_PLAIN_TAGS = re.compile(f"{_PLAIN_TAG}(?: {_PLAIN_TAG})*")
# What Java's Double.parseDouble accepts in decimal form, minus its oddities
# (surrounding whitespace, trailing f/F/d/D, hex floats) which tsnet rejects.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The run of digits and points Java scans before it looks for an exponent; a
# second point inside it is reported as "multiple points".
_MANTISSA_RUN = re.compile(r"[+-]?([0-9.]*)")


class PutError(ValueError):
    """A rejected `put` line.

    ``str(err)`` is the exact reply line without the trailing newline, e.g.
    ``put: illegal argument: not enough arguments (need least 4, got 3)``.
    """


def split_words(line: str) -> list[str]:
    """Split like OpenTSDB's WordSplitter: on each single space, keeping empty words.

    Empty words are significant: before the metric, timestamp or value they shift
    the positions and cause errors; in the tag area they are skipped.
    """
    return line.split(" ")


def unknown_command_reply(word: str) -> str:
    """The reply to an unregistered command (two spaces, backquote + apostrophe)."""
    return f"unknown command: {word}.  Try `help'."


def help_reply(commands: tuple[str, ...] = HELP_COMMANDS) -> str:
    """The `help` reply: every name is followed by a space, even the last one."""
    return "available commands: " + "".join(c + " " for c in commands)


def parse_long(text: str) -> int:
    """OpenTSDB's strict ``Tags.parseLong`` (`tsnet.model.parse_java_long`), its
    failures as ``put: invalid value: ...`` replies."""
    try:
        return parse_java_long(text)
    except ValueError as e:
        raise PutError(INVALID + str(e)) from None


def parse_double(text: str) -> float:
    """Java's ``Double.parseDouble`` for decimal literals, with Java's messages.

    Overflow gives ±inf as in Java; the caller rejects it, because that message
    needs the metric and timestamp.
    """
    if _DECIMAL.fullmatch(text):
        return float(text)
    run = _MANTISSA_RUN.match(text)  # always matches, possibly empty
    if run is not None and run.group(1).count(".") > 1:
        raise PutError(INVALID + "multiple points")
    raise PutError(f'{INVALID}For input string: "{text}"')


def parse_value(text: str) -> int | float:
    """A `put` value: integer unless it has a ``.``, ``e`` or ``E`` (OpenTSDB's test).

    So ``NaN``, ``inf``, ``0x10`` fail as integers with ``Invalid character``.
    Returns ±inf for a float overflow (see `parse_double`).
    """
    if "." in text or "e" in text or "E" in text:
        return parse_double(text)
    return parse_long(text)


def _parse_ts(text: str) -> int:
    """Steps 3-4: every ``.`` removed (the documented ``s.mmm`` form, and the A1
    quirk), strict integer, must be positive.  Returns OpenTSDB's raw number."""
    ts = parse_long(text.replace(".", "") if "." in text else text)
    if ts <= 0:
        raise PutError(f"{ILLEGAL}invalid timestamp: {ts}")
    return ts


def parse_timestamp_ms(text: str) -> int:
    """A telnet timestamp in milliseconds: seconds below 2**32, else milliseconds.

    Standalone helper; beyond 13 digits it raises a short ``bad timestamp=N``
    (`PutParser` gives the full OpenTSDB text, which names the value and tags).
    """
    ts = _parse_ts(text)
    if ts < SECONDS_LIMIT:
        return ts * 1000
    if ts > MAX_MS:
        raise PutError(f"{ILLEGAL}bad timestamp={ts}")
    return ts


def _name_ok(s: str) -> bool:
    if _ASCII_NAME.fullmatch(s):
        return True
    return bool(s) and all(c in _NAME_ASCII or (c <= "\uffff" and c.isalpha()) for c in s)


def name_error(what: str, s: str) -> str | None:
    """OpenTSDB's ``Tags.validateString`` message, without prefix (HTTP uses it raw).

    Legal: ``a-z A-Z 0-9 - _ . /`` and Unicode letters.  Java tests UTF-16 code
    units, so letters outside the BMP fail; the message shows the whole character.
    """
    if _name_ok(s):
        return None
    if not s:
        return f"Invalid {what}: empty string"
    bad = next(c for c in s if c not in _NAME_ASCII and not (c <= "\uffff" and c.isalpha()))
    return f'Invalid {what} ("{s}"): illegal character: {bad}'


def _java_map(tags: dict[str, str]) -> str:
    """Java's HashMap.toString; insertion order, and the auth token is never shown."""
    return "{" + ", ".join(f"{k}={v}" for k, v in tags.items() if k != AUTH_TAG) + "}"


def _java_double(v: float) -> str:
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


def _value_dump(value: int | float) -> str:
    """``Arrays.toString(bytes) + '/' + flags`` as TSDB.addPoint encodes the value."""
    if isinstance(value, int):
        width = next(w for w in (1, 2, 4, 8) if -(1 << (8 * w - 1)) <= value < 1 << (8 * w - 1))
        raw, flags = value.to_bytes(width, "big", signed=True), width - 1
    else:
        try:  # OpenTSDB 2.4 stores single precision when that is exact
            raw, flags = struct.pack(">f", value), 0x8 | 0x3
            if struct.unpack(">f", raw)[0] != value:
                raise OverflowError
        except OverflowError:
            raw, flags = struct.pack(">d", value), 0x8 | 0x7
    return "[" + ", ".join(str(b - 256 if b > 127 else b) for b in raw) + f"]/{flags}"


def _add_tag(tags: dict[str, str], word: str) -> None:
    """``Tags.parse``: exactly one ``=``, both sides non-empty; a repeat with the
    same value is silently accepted."""
    kv = word.split("=")
    if len(kv) != 2 or not kv[0] or not kv[1]:
        raise PutError(f"{ILLEGAL}invalid tag: {word}")
    k, v = kv
    old = tags.get(k)
    if old is None:
        tags[k] = v
    elif old != v:
        raise PutError(f"{ILLEGAL}duplicate tag: {word}, tags={_java_map(tags)}")


class _Known:
    """A series the slow path accepted, and where its points went last.

    ``gen`` is the parser's generation (`_Generation`) that last received a point
    of the series, and ``slot`` the place of that point's column in the
    generation's list of columns: while the generation lasts, the column is
    reused without hashing the key.  Nothing here holds a column or a dict of an
    earlier batch, so a committed batch is freed at once, however many series
    remember it.
    """

    __slots__ = ("gen", "key", "slot")

    def __init__(self, key: SeriesKey) -> None:
        self.key = key
        self.gen = -1
        self.slot = 0


class _Generation:
    """What the fast path appends into: one `SampleSet` (a batch of the write
    queue), numbered, and how the points went into it.

    A batch with about one point per series (a fleet: many series, each
    sending now and then) costs a `Column` per point if it is filled by
    column, twice what the point costs as a row (``keys``, ``times``,
    ``values``; storage groups rows by series in bulk).  So a generation is
    ``wide`` when the one before it held fewer than `WIDE_RATIO` points per
    series, and then its points go in as rows."""

    __slots__ = ("cols", "live", "number", "points", "series", "wide")

    def __init__(self, cols: dict | None, number: int, wide: bool) -> None:
        self.cols = cols
        self.number = number
        self.wide = wide
        self.live: list[Column] = []  # (columns: the columns made or found, by slot)
        # its points, and the series they hit: (rows) counted by the fast path,
        # (columns) its live columns; plus those of `PutParser.add` (the slow
        # path: a fleet's first batch is all new series, and must be judged too)
        self.points = 0
        self.series = 0

    def next_is_wide(self) -> bool:
        series = self.series if self.wide else len(self.live) + self.series
        if self.points < WIDE_JUDGED:
            return self.wide  # too few points to tell
        return self.points < WIDE_RATIO * series


class PutParser:
    """Parses telnet `put` lines; one per connection factory, caches validated series.

    ``max_tags`` is OpenTSDB's ``tsd.storage.max_tags``.  ``cache_limit`` bounds
    the cache of validated (metric, tag text) pairs; 0 disables the fast path.
    """

    __slots__ = (
        "_cache",
        "_cache_limit",
        "_g",
        "_gens",
        "_last_ns",
        "_last_ts",
        "max_tags",
    )

    def __init__(self, max_tags: int = 8, cache_limit: int = 100_000) -> None:
        self.max_tags = max_tags
        self._cache_limit = cache_limit
        # "METRIC TAGTEXT" -> the series, for lines with client tags and no
        # token (the fast path's).  One flat dict: at 100 k series every level
        # of a nested one (tag text, then metric) cost its own cache misses.
        self._cache: dict[str, _Known] = {}
        # the last timestamp text the fast path accepted, and its nanoseconds
        self._last_ts = " "  # never equal to a word, which has no space
        self._last_ns = 0
        # the batch take_puts was last given (a generation number comes from
        # _gens, which only grows: it is never given twice; see _Known)
        self._gens = 0
        self._g = _Generation(None, 0, False)

    def parse(
        self, line: str, allow_no_tags: bool = False
    ) -> tuple[SeriesKey, int, int | float, str | None]:
        """Parse one whole line, ``"put sys.cpu 1356998400 42 host=a"``.

        Returns (series_key, time_ns, value, ovh_auth_token_or_None); the key is
        (metric, None, sorted tags) without the ``ovh.auth`` tag.  Raises
        `PutError` with the exact OpenTSDB reply text.  ``allow_no_tags`` accepts
        a line without client tags (the `iot` profile, where a token adds tags).
        """
        one = SampleSet()
        live = self._g
        taken = self.take_puts([line], 0, one)
        # (this throwaway batch does not end the live one's generation: its series
        # keep their columns; the one series seen here got a generation of its own)
        self._g = live
        if taken:
            if one.keys:
                return one.keys[0], one.times[0], one.values[0], None
            ((key, col),) = one.columns.items()
            return key, col.times[0], col.values[0], None
        return self.parse_new(line, allow_no_tags)

    def parse_new(
        self, line: str, allow_no_tags: bool = False
    ) -> tuple[SeriesKey, int, int | float, str | None]:
        """`parse` of a line `take_puts` has just stopped at (an error, or a
        new series whose names are not plain): the fast path would stop there
        again, so it goes straight to `parse_slow`, and its series is
        remembered."""
        result = self.parse_slow(line, allow_no_tags)
        if self._cache_limit > 0:
            self._remember(line, result)
        return result

    def take_puts(self, lines: list[str], i: int, samples: SampleSet) -> int:
        """The fast path: from ``lines[i]`` on, append to ``samples`` every put
        line of a known series (with tags, without a token) whose timestamp and
        value are plain, and stop at the first other line; returns its index.
        The points go in as columns, or as rows when the batch is wide (see
        `_Generation`; `add` appends a point the same way).  The results are
        `parse_slow`'s (tests prove it); what is unusual is left to `parse`.  One
        call per run of lines, not per line: this loop is most of the telnet
        protocol's time.
        """
        cache = self._cache
        last_ts, last_ns = self._last_ts, self._last_ns
        cols = samples.columns
        get = cols.get
        g = self._g
        if cols is not g.cols:
            self._gens += 1
            # (a batch that has rows keeps taking rows: columns would come first)
            g = self._g = _Generation(cols, self._gens, g.next_is_wide() or bool(samples.keys))
        gen, live, wide = g.number, g.live, g.wide
        keys, times, values = samples.keys, samples.times, samples.values
        hits = 0
        start = i
        n = len(lines)
        while i < n:
            parts = lines[i].split(" ", 4)
            if len(parts) != 5 or parts[0] != "put":
                break
            _, metric, ts, value, tagtext = parts
            hit = cache.get(f"{metric} {tagtext}")
            if hit is None:
                hit = self._learn(metric, tagtext)
                if hit is None:
                    break
            if ts == last_ts:  # many series share one timestamp
                t = last_ns
            elif len(ts) < 14 and ts.isdigit() and ts.isascii():
                t = int(ts)  # plain digits only: no sign, no dot, <= 13 digits
                if not t or t > MAX_MS:
                    break
                t = t * 1_000_000 if t >= SECONDS_LIMIT else t * 1_000_000_000
                last_ts, last_ns = ts, t
            else:
                break
            if "." in value:
                # With a point, ASCII, no `_` and no whitespace, float() accepts
                # exactly Java's decimal syntax; infinities go to parse_slow for
                # their message.
                if not (value.isascii() and value.isprintable() and "_" not in value):
                    break
                try:
                    v = float(value)
                except ValueError:
                    break
                if v - v != 0.0:
                    break
            elif len(value) < 19 and value.isascii() and (
                value.isdigit() or value.removeprefix("-").isdigit()
            ):
                v = int(value)  # up to 18 digits always fit in int64
            else:
                break
            i += 1
            if wide:
                if hit.gen != gen:  # (counted, to judge the next batch)
                    hit.gen = gen
                    hits += 1
                keys.append(hit.key)
                times.append(t)
                values.append(v)
                continue
            if hit.gen == gen:  # the column it last went to is still the live one
                col = live[hit.slot]
            else:  # (hashing a nested tuple key per line would cost a tenth)
                col = get(hit.key)
                if col is None:
                    col = cols[hit.key] = Column()
                hit.gen = gen
                hit.slot = len(live)
                live.append(col)
            col.times.append(t)
            col.values.append(v)
        self._last_ts, self._last_ns = last_ts, last_ns
        g.points += i - start
        g.series += hits
        return i

    def add(self, samples: SampleSet, key: SeriesKey, time_ns: int, value: int | float) -> None:
        """Append one point as `take_puts` appends into ``samples`` now: as a
        row while the fast path fills it with rows, else to its column (a slow
        path line must not overtake or trail the fast path's points of a batch).
        The point counts in the judging of the live batch; as a row, as a series
        of its own (the slow path's lines are mostly a new series each)."""
        g = self._g
        mine = samples.columns is g.cols
        if mine:
            g.points += 1
        if samples.keys or (g.wide and mine):
            samples.keys.append(key)
            samples.times.append(time_ns)
            samples.values.append(value)
            if mine:
                g.series += 1
            return
        col = samples.columns.get(key)
        if col is None:
            col = samples.columns[key] = Column()
            if mine:
                g.series += 1
        col.times.append(time_ns)
        col.values.append(value)

    def _remember(self, line: str, result: tuple[SeriesKey, int, int | float, str | None]) -> None:
        """Cache what parse_slow accepted: the series part of a line is validated
        once, whatever its timestamp and value."""
        _, metric, _, _, tagtext = line.split(" ", 4)
        key, token = result[0], result[3]
        if not key[2] or token is not None:
            return  # without client tags or with a token: not the fast path's
        self._keep(f"{metric} {tagtext}", key)

    def _keep(self, text: str, key: SeriesKey) -> _Known:
        cache = self._cache
        known = cache.get(text)
        if known is None:
            if len(cache) >= self._cache_limit:
                cache.clear()
            known = cache[text] = _Known(key)
        return known

    def _learn(self, metric: str, tagtext: str) -> _Known | None:
        """The series of a line the fast path has not seen, when its metric and
        tags are plain: ASCII names, single spaces, at most ``max_tags``, no
        key twice, no token.  parse_slow accepts exactly such a series part
        whatever else the line holds, with this key, so the fast path goes on
        to judge the timestamp and value (and leaves what it does not take to
        parse_slow, as for a known series).  A fleet's first lines are all new
        series; parse_slow cost them five times a known line.  None: anything
        else, for parse_slow to judge and word."""
        if (self._cache_limit <= 0 or not _PLAIN_TAGS.fullmatch(tagtext)
                or not _ASCII_NAME.fullmatch(metric)):
            return None
        pairs = [tuple(word.split("=")) for word in tagtext.split(" ")]
        if len(pairs) > self.max_tags:
            return None
        tags = dict(pairs)
        if len(tags) != len(pairs) or AUTH_TAG in tags:
            return None  # (a key twice, or the token: parse_slow's to judge)
        return self._keep(f"{metric} {tagtext}", series_key(metric, tags))

    def parse_slow(
        self, line: str, allow_no_tags: bool = False
    ) -> tuple[SeriesKey, int, int | float, str | None]:
        """Every check of OpenTSDB's importDataPoint / addPoint, in its order.

        The reference for `parse`; it neither reads nor fills the cache.
        """
        words = line.split(" ")
        if len(words) < 5:
            raise PutError(f"{ILLEGAL}not enough arguments (need least 4, got {len(words) - 1})")
        metric = words[1]
        if not metric:
            raise PutError(ILLEGAL + "empty metric name")
        ts = _parse_ts(words[2])
        value_text = words[3]
        if not value_text:
            raise PutError(ILLEGAL + "empty value")
        tags: dict[str, str] = {}
        for word in words[4:]:
            if word:
                _add_tag(tags, word)
        value = parse_value(value_text)
        if isinstance(value, float) and not math.isfinite(value):
            raise PutError(
                f"{ILLEGAL}value is NaN or Infinite: {_java_double(value)}"
                f" for metric={metric} timestamp={ts}"
            )
        if ts > MAX_MS:
            raise PutError(
                f"{ILLEGAL}bad timestamp={ts} when trying to add value={_value_dump(value)}"
                f" to metric={metric}, tags={_java_map(tags)}"
            )
        # The token is not a tag: it is neither counted nor validated (`:`).
        token = tags.pop(AUTH_TAG, None)
        if not tags:
            if not allow_no_tags:
                raise PutError(f"{ILLEGAL}Need at least one tag (metric={metric}, tags={{}})")
        elif len(tags) > self.max_tags:
            raise PutError(
                f"{ILLEGAL}Too many tags: {len(tags)} maximum allowed: {self.max_tags},"
                f" tags: {_java_map(tags)}"
            )
        if not _name_ok(metric):
            raise PutError(ILLEGAL + str(name_error("metric name", metric)))
        for k, v in tags.items():
            if not _name_ok(k):
                raise PutError(ILLEGAL + str(name_error(f"tag name with value [{v}]", k)))
            if not _name_ok(v):
                raise PutError(ILLEGAL + str(name_error(f"tag value with key [{k}]", v)))
        time_ns = ts * 1_000_000_000 if ts < SECONDS_LIMIT else ts * 1_000_000
        return series_key(metric, tags), time_ns, value, token
