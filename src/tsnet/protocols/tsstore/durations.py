"""ts-store duration strings (``internal/duration/duration.go``).

Go's ``time.ParseDuration`` plus two suffixes: a string ending in ``d``
(24 h) or ``w`` (7 d) is parsed as one ``strconv.ParseFloat`` number of
that unit, so ``1.5d`` works but ``1d12h`` does not. Error texts match the
reference so the REST layer can prefix them (``invalid since duration: ``,
``invalid agg_window: ``).
"""

from __future__ import annotations

import math
import re

from tsnet.protocols.tsstore.gojson import go_trim_space

__all__ = ["DurationError", "parse_duration"]

NANOSECOND = 1
MICROSECOND = 1000
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign
    "\u03bcs": MICROSECOND,  # Greek mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}

_U63 = 1 << 63
_INT64_MIN = -_U63

# strconv.ParseFloat's accepted syntax (underscores are checked separately).
_DEC_FLOAT = re.compile(r"[+-]?(?:[0-9_]*\.?[0-9_]*)(?:[eE][+-]?[0-9][0-9_]*)?")
_HEX_FLOAT = re.compile(r"[+-]?0[xX][0-9a-fA-F_]*\.?[0-9a-fA-F_]*[pP][+-]?[0-9][0-9_]*")
_SPECIAL = re.compile(r"([+-]?)(inf|infinity)|nan", re.IGNORECASE)


class DurationError(ValueError):
    """A bad duration; ``str()`` is the reference's reason text."""


def _underscore_ok(s: str) -> bool:
    """strconv's underscoreOK: each '_' must sit between digits."""
    saw = "^"
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    for ch in s[i:]:
        if ch in "0123456789" or (hexa and ch.lower() in "abcdef"):
            saw = "0"
        elif ch == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
    return saw != "_"


def _parse_float(s: str) -> float:
    """``strconv.ParseFloat(s, 64)``; raises ValueError on syntax or overflow."""
    m = _SPECIAL.fullmatch(s)
    if m:
        if m.group(0).lower() == "nan":
            return math.nan
        return -math.inf if m.group(1) == "-" else math.inf
    if _HEX_FLOAT.fullmatch(s) and len(s.lstrip("+-")) > 2:
        body = s.lstrip("+-")[2:]
        mant = body[: body.lower().index("p")]
        if not any(c in "0123456789abcdefABCDEF" for c in mant):
            raise ValueError(s)
        if "_" in s and not _underscore_ok(s):
            raise ValueError(s)
        try:
            return float.fromhex(s.replace("_", ""))
        except OverflowError:
            raise ValueError(s) from None
    if not _DEC_FLOAT.fullmatch(s):
        raise ValueError(s)
    mant = re.split("[eE]", s, maxsplit=1)[0]
    if not any(c.isdigit() for c in mant):
        raise ValueError(s)
    if "_" in s and not _underscore_ok(s):
        raise ValueError(s)
    f = float(s.replace("_", ""))
    if math.isinf(f):
        raise ValueError(s)  # ErrRange
    return f


def _float_to_int64(f: float) -> int:
    """Go's float64-to-int64 conversion as amd64 does it (out of range: MinInt64)."""
    if math.isnan(f) or not (-(2.0**63) <= f < 2.0**63):
        return _INT64_MIN
    return int(f)


def _time_quote(s: str) -> str:
    """The time package's quote(): non-ASCII and control bytes as ``\\xNN``."""
    out = ['"']
    for ch in s:
        if ch >= "\x80" or ch < " ":
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        else:
            if ch in '"\\':
                out.append("\\")
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_parse_duration(orig: str) -> int:
    """A port of Go's ``time.ParseDuration``."""
    invalid = DurationError("time: invalid duration " + _time_quote(orig))
    s = orig
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid
        # leading integer
        i = 0
        v = 0
        while i < len(s) and "0" <= s[i] <= "9":
            if v > _U63 // 10:
                raise invalid
            v = v * 10 + ord(s[i]) - 48
            if v > _U63:
                raise invalid
            i += 1
        pre = i > 0
        s = s[i:]
        # fraction
        f, scale, post = 0, 1.0, False
        if s and s[0] == ".":
            s = s[1:]
            i = 0
            overflow = False
            while i < len(s) and "0" <= s[i] <= "9":
                if not overflow:
                    if f > (_U63 - 1) // 10:
                        overflow = True
                    else:
                        y = f * 10 + ord(s[i]) - 48
                        if y > _U63:
                            overflow = True
                        else:
                            f = y
                            scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise invalid
        # unit
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise DurationError("time: missing unit in duration " + _time_quote(orig))
        u, s = s[:i], s[i:]
        unit = _UNITS.get(u)
        if unit is None:
            raise DurationError(
                f"time: unknown unit {_time_quote(u)} in duration {_time_quote(orig)}"
            )
        if v > _U63 // unit:
            raise invalid
        v *= unit
        if f > 0:
            v += int(float(f) * (float(unit) / scale))
            if v > _U63:
                raise invalid
        total += v
        if total > _U63:
            raise invalid
    if neg:
        return -total
    if total > _U63 - 1:
        raise invalid
    return total


def parse_duration(text: str) -> int:
    """Parse a ts-store duration into integer nanoseconds.

    ``30s``, ``15m``, ``1h30m``, ``300ms`` (Go syntax), ``1.5d``, ``2w``.
    Negative values are returned as they are (Go does the same; callers
    decide what a negative window means). Raises :class:`DurationError`,
    e.g. ``time: invalid duration "abc"`` or ``invalid duration: xd``.
    """
    s = go_trim_space(text)
    if not s:
        raise DurationError("empty duration string")
    for suffix, unit in (("d", DAY), ("w", WEEK)):
        if s.endswith(suffix):
            try:
                num = _parse_float(s[: -len(suffix)])
            except ValueError:
                raise DurationError(f"invalid duration: {s}") from None
            return _float_to_int64(num * float(unit))
    return _go_parse_duration(s)
