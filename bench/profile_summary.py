#!/usr/bin/env python3
"""Summarise a py-spy raw (collapsed-stack) profile of the tsnet server (stdlib only).

    python bench/profile_summary.py /tmp/profile.txt [--top 15] [--src src]

Input: ``py-spy record --format raw`` output, one ``frame;frame;...;leaf COUNT`` line
per distinct stack (``--threads`` adds a leading ``thread (TID): NAME`` frame; both
forms are read).  py-spy leaves idle samples out by default, so percentages are of
the samples in which a server thread was running (roughly its CPU time).

Prints: samples per thread; samples per pipeline stage (framing, parse, ingest merge,
storage encode, SQLite, metrics, Twisted); the top functions by own time (the leaf
frame) and by cumulative time (anywhere on the stack; tsnet's functions only unless
``--cum-all``).  A sample is put in the stage
of its innermost frame that belongs to one; a leaf line of tsnet's storage code that
calls ``execute``/``executemany``/``commit`` counts as SQLite (the C library).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")
SQL_CALL = re.compile(r"\.(execute|executemany|executescript|commit)\(")

#: (stage, predicate on (function, file)), tried in order on each frame, leaf first.
STAGES = [
    ("storage encode (storage/chunks.py)", lambda fn, f: f.endswith("tsnet/storage/chunks.py")),
    ("storage python (storage/sqlite.py)", lambda fn, f: f.startswith("tsnet/storage/")),
    ("parse (opentsdb/telnet_parse.py)", lambda fn, f: f.endswith("telnet_parse.py")),
    ("metrics counters + /metrics", lambda fn, f: f.startswith("prometheus_client/")
     or f == "tsnet/metrics.py"),
    ("ingest merge + queue (ingest.py, model.py)", lambda fn, f: f in (
        "tsnet/ingest.py", "tsnet/model.py")),
    ("framing + dispatch (opentsdb/telnet.py)", lambda fn, f: f.startswith(
        "tsnet/protocols/")),
    ("other tsnet", lambda fn, f: f.startswith("tsnet/")),
    ("twisted web (/metrics requests)", lambda fn, f: f.startswith("twisted/web/")),
    ("twisted reactor, TCP I/O, thread pool", lambda fn, f: f.startswith("twisted/")),
]
SQLITE = "SQLite C library (execute/commit)"
#: Leaf frames of a thread waiting for work, which py-spy sometimes reports as active.
IDLE = {("Condition.wait", "threading.py"), ("Queue.get", "queue.py"),
        ("Event.wait", "threading.py")}


def parse_frame(text: str) -> tuple[str, str, int | None]:
    m = FRAME.match(text)
    if not m:
        return text, "", None
    line = m.group("line")
    return m.group("func"), m.group("file"), int(line) if line else None


class Source:
    """Reads source lines of tsnet files to tell SQLite calls from Python code."""

    def __init__(self, roots: list[str]) -> None:
        self.roots = roots
        self.cache: dict[str, list[str] | None] = {}

    def line(self, path: str, lineno: int | None) -> str:
        if lineno is None:
            return ""
        if path not in self.cache:
            self.cache[path] = None
            for root in self.roots:
                try:
                    with open(os.path.join(root, path), encoding="utf-8") as f:
                        self.cache[path] = f.read().splitlines()
                    break
                except OSError:
                    continue
        lines = self.cache[path]
        return lines[lineno - 1] if lines and 0 < lineno <= len(lines) else ""


def stage_of(frames: list[tuple[str, str, int | None]], src: Source) -> str:
    fn, path, lineno = frames[-1]
    if path.startswith("tsnet/storage/") and SQL_CALL.search(src.line(path, lineno)):
        return SQLITE
    for fn, path, _ in reversed(frames):
        for name, pred in STAGES:
            if pred(fn, path):
                return name
    return "other"


class Profile:
    """Sample counts aggregated over one or more raw profiles."""

    def __init__(self, src: Source, cum_all: bool) -> None:
        self.src = src
        self.cum_all = cum_all
        self.total = self.idle = 0
        self.threads: Counter = Counter()
        self.stages: Counter = Counter()
        self.own: Counter = Counter()
        self.own_line: Counter = Counter()
        self.cum: Counter = Counter()

    def read(self, path: str) -> None:
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                stack, _, count = raw.rstrip("\n").rpartition(" ")
                if stack and count.isdigit():
                    self.add(stack.split(";"), int(count))

    def add(self, parts: list[str], n: int) -> None:
        thread = "all threads"
        if parts[0].startswith("thread ("):
            thread = re.sub(r"^thread \(\d+\):?\s*", "", parts.pop(0)) or "thread"
        if not parts:
            return
        frames = [parse_frame(x) for x in parts]
        fn, path, lineno = frames[-1]
        if (fn, path) in IDLE:
            self.idle += n
            return
        self.total += n
        self.threads[thread] += n
        self.stages[stage_of(frames, self.src)] += n
        self.own[f"{fn} ({path})"] += n
        self.own_line[f"{fn} ({path}:{lineno})"] += n
        for key in {f"{fn} ({path})" for fn, path, _ in frames
                    if self.cum_all or path.startswith("tsnet/")}:
            self.cum[key] += n

    def table(self, title: str, counter: Counter, top: int | None) -> None:
        print(f"\n{title}")
        print(f"{'samples':>8} {'%':>6}  name")
        for name, n in counter.most_common(top):
            print(f"{n:8d} {100.0 * n / self.total:5.1f}%  {name}")


def main(argv: list[str] | None = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", nargs="+", help="py-spy --format raw output file(s), summed")
    p.add_argument("--top", type=int, default=15, help="rows per table")
    p.add_argument("--cum-all", action="store_true",
                   help="cumulative table over every frame (default: tsnet's own functions)")
    p.add_argument("--src", action="append", default=None,
                   help="where tsnet/... source files are (default: the repo's src/)")
    a = p.parse_args(argv)
    prof = Profile(Source(a.src or [os.path.join(os.path.dirname(here), "src")]), a.cum_all)
    for path in a.profile:
        prof.read(path)
    if not prof.total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{', '.join(a.profile)}: {prof.total} samples of running threads "
          f"({prof.idle} more in idle waits of the thread pool, left out)")
    prof.table("by thread", prof.threads, None)
    prof.table("by stage (innermost frame that belongs to one)", prof.stages, None)
    prof.table(f"top {a.top} by own time (function)", prof.own, a.top)
    prof.table(f"top {a.top} by own time (line)", prof.own_line, a.top)
    which = "every frame" if a.cum_all else "tsnet functions"
    prof.table(f"top {a.top} by cumulative time ({which})", prof.cum, a.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
