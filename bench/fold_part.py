"""One part's fold of a wide pending log, timed: what the writer holds each
time the log passes `PENDING_FOLD_POINTS` (issue 15 point 4: no commit gap
over 200 ms under a 100,000-series load).

Builds a real SQLite file through `SqliteEngine` whose pending log holds
``--rounds`` wide batches of one point for each of ``--series`` series (about
900,000 points over 100,000 series by default, the log a fold meets under the
wide soak), then times, ``--runs`` times each, median first:

- ``fold_part_ms``: `SqliteEngine._fold_part` as the writer runs it (read the
  rows, fold one part, insert its chunks, mark the rows), in a transaction
  rolled back after each run, each run on the next part;
- ``fold_ms``: `pending.fold` of one part over rows already in memory;
- ``encode_ms``: `pending.encode` of one batch (the writer's hot path).

It uses only what every version of the engine has, so the same script
measures an older tree: ``PYTHONPATH=OLD/src python bench/fold_part.py``.
``--values mixed`` makes every seventh value an int (a fleet whose devices
send ``42`` and ``42.5``), so the rows pack values as chunks' mixed form.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from tsnet.model import series_key
from tsnet.storage import pending
from tsnet.storage import sqlite as sqlite_storage
from tsnet.testing.conformance import T0, make_batch


def _value(i: int, r: int, mixed: bool) -> float | int:
    return (i + r) % 97 if mixed and i % 7 == 0 else ((i + r) % 1000) / 10


def build(path: str, series: int, rounds: int, mixed: bool) -> Any:
    """An open engine whose pending log holds ``rounds`` wide batches."""
    sqlite_storage.PENDING_FOLD_POINTS = 10 ** 12  # (this process only) never fold
    engine = sqlite_storage.SqliteEngine(path)
    engine.open()
    keys = [series_key("fleet", {"device": f"d{i:06}"}) for i in range(series)]
    for r in range(rounds):
        engine.write(make_batch(samples=[(k, T0 + r * 10 ** 9, _value(i, r, mixed))
                                         for i, k in enumerate(keys)]))
    return engine


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    """Milliseconds of each of ``runs`` calls."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=9, help="wide batches in the log")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--values", choices=("float", "mixed"), default="float")
    a = p.parse_args(argv)
    mixed = a.values == "mixed"
    with tempfile.TemporaryDirectory() as tmp:
        engine = build(os.path.join(tmp, "fold.sqlite"), a.series, a.rounds, mixed)
        db = engine.db

        def fold_part() -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                engine._fold_part(db)
            finally:
                db.execute("ROLLBACK")
                engine._pending = None

        (logged,) = db.execute("SELECT sum(points) FROM pending").fetchone()
        fold_part_ms = timed(fold_part, a.runs)
        blobs = [b for (b,) in db.execute("SELECT batch FROM pending ORDER BY id")]
        parts = iter(range(10 ** 9))
        fold_ms = timed(lambda: pending.fold(blobs, None, next(parts) % pending.PARTS), a.runs)
        sids = list(range(1, a.series + 1))
        times = [T0] * a.series
        values = [_value(i, 0, mixed) for i in range(a.series)]
        encode_ms = timed(lambda: pending.encode(sids, times, values), a.runs)
        engine.close()
    out = {"form": pending.MAGIC.decode(), "points": logged, "series": a.series,
           "values": a.values, "runs": a.runs}
    for name, ms in (("fold_part_ms", fold_part_ms), ("fold_ms", fold_ms),
                     ("encode_ms", encode_ms)):
        out[name] = {"median": round(statistics.median(ms), 2), "all": [round(m, 2) for m in ms]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
