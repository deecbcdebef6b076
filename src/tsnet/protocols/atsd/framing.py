"""From received bytes or text to ATSD logical commands (shared/specs/atsd.md §2, §6.2).

A logical command is one or more physical lines: a quoted value may hold line
breaks, so lines are joined with LF until every ``"`` is closed (an even count).
TCP and UDP share one procedure (§2.1); the HTTP endpoint frames differently
(§6.2: CR also ends a line, and lines are trimmed).  A command longer than
`LIMIT` characters is never returned as text, only as an `Overlong` for the log
and the metrics, and the TCP framer never holds more than about `LIMIT`
characters of it, whatever the client sends.

Choices where the spec leaves one:

* A line holding only characters <= U+0020 (Java's ``trim`` set) outside a
  quoted value is skipped, like an empty line (§2.1 item 3 says spaces).
* At EOF the unfinished command is returned even if its quotes are still open:
  the parser rejects it, so the client sees an error instead of a silent loss.
* UDP (§10.17): quoted values may span lines inside a datagram, as over TCP.
  The command still unfinished at the end of the datagram (no LF after it, or
  its quotes still open) is kept only when it is the datagram's only command;
  otherwise it is dropped and counted (§2.2).
"""

from __future__ import annotations

import codecs
from typing import NamedTuple

#: Characters per logical command, terminator excluded; ``debug `` counts (§2.1, §3.8).
LIMIT = 131_072
#: bytes a command other than series, property and message may have (ATSD's
#: documented table; the spec notes that later ATSD releases took longer metric
#: commands, so listeners may raise it with ``other_limit``)
OTHER_LIMIT = 1024
_DATA_COMMANDS = frozenset(("series", "property", "message"))
#: Characters of an over-long command kept for the log.
HEAD = 200
#: What Java's String.trim removes: every character up to U+0020.
TRIM = "".join(map(chr, range(0x21)))


class Overlong(NamedTuple):
    """A logical command over `LIMIT`: dropped, reported with its first characters."""

    length: int
    head: str


def _blank(line: str) -> bool:
    """Only characters <= U+0020: skipped outside a quoted value."""
    return line[0] <= " " and not line.strip(TRIM)


class TcpFramer:
    """Incremental §2.1 framing for one TCP connection.

    `feed` takes whatever the socket delivered (a UTF-8 character may be split
    across calls; invalid bytes become U+FFFD) and returns the logical commands
    it completed, in order; `close` returns the last one at EOF.
    """

    __slots__ = (
        "_chunks",
        "_clen",
        "_crs",
        "_decoder",
        "_head",
        "_odd",
        "_over",
        "_parts",
        "_plen",
    )

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._reset()

    def _reset(self) -> None:
        # the open command: its complete physical lines and the length of their
        # LF-joined text (0: no command open)
        self._parts: list[str] = []
        self._plen = 0
        # quote parity of the open command plus the partial line
        self._odd = False
        # the partial physical line (no LF yet): its text, its length, and the
        # run of CRs at its end, held as a count (dropped if an LF follows)
        self._chunks: list[str] = []
        self._clen = 0
        self._crs = 0
        # over LIMIT: texts are dropped, only lengths and quote parity kept
        self._over = False
        self._head = ""

    def feed(self, data: bytes) -> list[str | Overlong]:
        """Every logical command that ``data`` completes, in order."""
        return self._text(self._decoder.decode(data))

    def close(self) -> list[str | Overlong]:
        """At EOF: the last command, which needs no LF (§2.1 item 5).

        Returned even if its quotes are unbalanced (the parser rejects it).
        The framer is then empty and can be fed again.
        """
        out = self._text(self._decoder.decode(b"", True))
        self._end_line(out)
        if self._plen:
            out.append(self._command())
        self._reset()
        self._decoder.reset()
        return out

    # -- internals -------------------------------------------------------------

    def _text(self, text: str) -> list[str | Overlong]:
        out: list[str | Overlong] = []
        if not text:
            return out
        segs = text.split("\n")
        last = segs.pop()  # the partial line: "" if text ends with LF
        i = 0
        n = len(segs)
        if n and (self._plen or self._clen or self._crs):
            self._add(segs[0])  # completes the partial line of the last call
            self._end_line(out)
            i = 1
        if not self._plen and '"' not in text:
            # the usual buffer: whole lines, no quoted value; comprehensions, not a loop
            if i:
                segs = segs[1:]
            if "\r" in text:
                segs = [s.rstrip("\r") for s in segs]
            # blank candidates are exactly the lines below "!" (empty, or a first
            # character <= U+0020): one C-level min() shows there are none
            if min(segs, default="!") >= "!":
                more = segs
            else:
                more = [s for s in segs if s and (s[0] > " " or s.strip(TRIM))]
            if len(text) > LIMIT and more and max(map(len, more)) > LIMIT:
                more = [s if len(s) <= LIMIT else Overlong(len(s), s[:HEAD]) for s in more]
            out += more
            self._add(last)
            return out
        append = out.append
        while i < n:
            line = segs[i]
            i += 1
            if self._plen:  # inside a quoted value
                self._add(line)
                self._end_line(out)
                continue
            if line and line[-1] == "\r":
                line = line.rstrip("\r")
            if not line:
                continue
            if '"' in line and line.count('"') & 1:
                self._add(line)  # opens a value that continues on the next lines
                self._end_line(out)
            elif len(line) > LIMIT:
                append(Overlong(len(line), line[:HEAD]))
            elif not _blank(line):
                append(line)
        self._add(last)
        return out

    def _add(self, seg: str) -> None:
        """Append text without LF to the partial line."""
        if not seg:
            return
        s = seg.rstrip("\r")
        if not s:
            self._crs += len(seg)
            return
        add = self._crs + len(s)  # the pending CRs are inside the line after all
        if '"' in s and s.count('"') & 1:
            self._odd = not self._odd
        if not self._over:
            sep = 1 if self._plen else 0
            if self._plen + sep + self._clen + add > LIMIT:
                head = "\n".join(self._parts) + ("\n" if sep else "") + "".join(self._chunks)
                if len(head) < HEAD:
                    head = head + "\r" * min(self._crs, HEAD) + s
                self._head = head[:HEAD]
                self._over = True
                self._parts = []
                self._chunks = []
            else:
                if self._crs:
                    self._chunks.append("\r" * self._crs)
                self._chunks.append(s)
        self._clen += add
        self._crs = len(seg) - len(s)

    def _end_line(self, out: list[str | Overlong]) -> None:
        """An LF (or EOF) ends the partial line; emit the command if it is complete."""
        clen = self._clen
        self._crs = 0
        if not clen:
            return  # empty line: skipped, inside a quoted value too
        line = "" if self._over else "".join(self._chunks)
        self._chunks = []
        self._clen = 0
        if not self._plen and not self._over and _blank(line):
            return
        self._plen += (1 if self._plen else 0) + clen
        if not self._over:
            self._parts.append(line)
        if not self._odd:
            out.append(self._command())

    def _command(self) -> str | Overlong:
        """The open command, which is then closed."""
        result: str | Overlong
        if self._over:
            result = Overlong(self._plen, self._head)
        else:
            result = "\n".join(self._parts)
        self._parts = []
        self._plen = 0
        self._odd = False
        self._over = False
        self._head = ""
        return result


def frame_datagram(data: bytes) -> tuple[list[str | Overlong], int]:
    """The commands of one UDP datagram (§2.2), and how many were dropped (0 or 1).

    Without any LF the datagram is one command.  Otherwise the command left
    unfinished at its end (text after the last LF, or a quoted value never
    closed) is dropped, as ATSD drops the unterminated last command.
    """
    framer = TcpFramer()
    done = framer.feed(data)
    rest = framer.close()
    if not rest:
        return done, 0
    if not done:
        return rest, 0
    return done, len(rest)


def _http_lines(text: str) -> list[str]:
    """Physical lines as Java's BufferedReader.readLine ends them (CR, LF, CRLF)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def frame_http_body(text: str) -> list[str | Overlong]:
    """The commands of a ``POST /api/v1/command`` body (§6.2).

    Every physical line is trimmed (Java ``String.trim``) and blank lines are
    dropped; a quoted value spanning lines is rebuilt by joining the trimmed
    lines with LF.  An unbalanced command at the end is returned as it stands.
    """
    out: list[str | Overlong] = []
    append = out.append
    open_parts: list[str] = []
    odd = False
    for raw in _http_lines(text):
        line = raw.strip(TRIM)
        if not line:
            continue
        if '"' in line and line.count('"') & 1:
            odd = not odd
        if open_parts or odd:
            open_parts.append(line)
            if odd:
                continue
            line = "\n".join(open_parts)
            open_parts = []
        append(line if len(line) <= LIMIT else Overlong(len(line), line[:HEAD]))
    if open_parts:
        line = "\n".join(open_parts)
        append(line if len(line) <= LIMIT else Overlong(len(line), line[:HEAD]))
    return out


def over_other_limit(text: str, limit: int = OTHER_LIMIT) -> bool:
    """Whether ``text``, a command other than series, property or message, is
    longer than ``limit`` bytes in UTF-8 (the ``debug`` prefix counts)."""
    if len(text) <= limit // 4:  # no UTF-8 text this short can be over
        return False
    body = text[6:] if text.startswith("debug ") else text
    if body.split(" ", 1)[0] in _DATA_COMMANDS:
        return False
    return len(text) > limit or len(text.encode("utf-8")) > limit
