"""Tag-value patterns from users, matched in linear time.

Query filters (``regexp(...)``, ``wildcard(...)``) carry patterns that clients
write and the server runs against every stored tag value.  Python's ``re``
backtracks, so ``^(a+)+$`` against 26 ``a``s and a ``-`` takes seconds and a
few more characters take hours; a glob turned into ``.*`` regexes backtracks
the same way.  Regexes therefore go to RE2 (``google-re2``), whose automata
match in time linear in the value, and globs are matched by `glob_matcher`,
which never backtracks.  RE2 has no back-references or look-around: such a
pattern is refused as invalid, with RE2's reason.
"""

from __future__ import annotations

from collections.abc import Callable

import re2

#: bytes RE2 may use for one compiled pattern; a bigger one is refused as invalid
RE2_MAX_MEM = 8 << 20
#: characters of the longest regex handed to RE2 at all, whatever the configured
#: limit (``max_pattern_length``): RE2 writes to stderr, past its own logging
#: switch, while it simplifies patterns of megabytes
MAX_REGEX = 65536


class PatternError(ValueError):
    """A pattern that cannot be compiled; ``str(err)`` says why, for clients."""


def _options() -> re2.Options:
    opts = re2.Options()
    opts.log_errors = False  # a bad pattern is the client's error, not a log line
    opts.max_mem = RE2_MAX_MEM
    return opts


def compile_regex(pattern: str) -> Callable[[str], bool]:
    """``value -> bool``: whether ``pattern`` is found in the value (Java's
    ``Matcher.find``, as OpenTSDB's ``regexp`` filter uses it)."""
    if len(pattern) > MAX_REGEX:
        raise PatternError(f"longer than the {MAX_REGEX} characters a pattern may have")
    try:
        rx = re2.compile(pattern, _options())
    except re2.error as e:
        reason = e.args[0] if e.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(str(reason)) from None
    search = rx.search
    return lambda value: search(value) is not None


def glob_matcher(pattern: str, fold: bool = False) -> Callable[[str], bool]:
    """``value -> bool``: a whole-value match of ``pattern``, where ``*`` is any
    run of characters (``fold``: ignoring case).

    The pieces between stars are found left to right, each at its first place
    after the one before: for a glob whose only operator is ``*`` the first
    place is always as good as any later one, so nothing is ever retried and
    the work is linear in the value (``str.find`` is linear too).
    """
    if fold:
        pattern = pattern.lower()
    parts = pattern.split("*")
    if len(parts) == 1:  # no star: the value is the pattern
        return (lambda v: v.lower() == pattern) if fold else (lambda v: v == pattern)
    head, *middle, tail = parts
    pieces = [p for p in middle if p]
    least = len(head) + len(tail) + sum(map(len, pieces))

    def match(value: str) -> bool:
        if fold:
            value = value.lower()
        if len(value) < least or not value.startswith(head) or not value.endswith(tail):
            return False
        pos, end = len(head), len(value) - len(tail)
        for piece in pieces:
            found = value.find(piece, pos, end)
            if found < 0:
                return False
            pos = found + len(piece)
        return True

    return match
