"""The background compactor's step: it grows while a backlog waits and
shrinks when steps get long (real SQLite storage; the compactor's clock is
its own, so the test decides how long a step seems to take)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest_twisted

from tsnet.compaction import STEP_SECONDS, Compactor
from tsnet.model import series_key
from tsnet.storage.sqlite import SqliteStorage
from tsnet.testing.conformance import T0, S, make_batch

SEC = 10**9
SERIES = 200


class Clock:
    """What the compactor reads of its reactor: seconds(), moving ``step``
    seconds a look (two looks a compact call)."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def seconds(self) -> float:
        self.now += self.step
        return self.now


async def _backlog(tmp_path: Path) -> SqliteStorage:
    from twisted.internet import reactor

    s = SqliteStorage("default", str(tmp_path / "x.db"), reactor, pending_max_points=0)
    await s.open()
    for i in range(8):  # 8 small chunks a series: every series is worth merging
        await s.write(make_batch(S, [(series_key("m", {"h": f"h{j}"}), T0 + i * SEC, i)
                                     for j in range(SERIES)]))
    return s


async def _run(c: Compactor) -> list[int]:
    steps = []
    while await c._compact_some():
        steps.append(c.steps["default"])
    return steps


def _chunks(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "x.db") as db:
        return db.execute("SELECT count(*) FROM chunks").fetchone()[0]


@pytest_twisted.ensureDeferred
async def test_quick_full_steps_double_until_the_backlog_is_gone(tmp_path: Path) -> Any:
    s = await _backlog(tmp_path)
    try:
        c = Compactor(SimpleNamespace(backends={"default": s}), Clock(0.0), 1.0, step=4)
        assert await _run(c) == [8, 16, 32, 64, 128]  # 4+8+...+64 = 124, then 76 of 128
        assert c.steps["default"] == 4  # caught up: back to the base step
    finally:
        await s.close()
    assert _chunks(tmp_path) == SERIES


@pytest_twisted.ensureDeferred
async def test_slow_steps_stay_at_the_base_step(tmp_path: Path) -> Any:
    s = await _backlog(tmp_path)
    try:
        c = Compactor(SimpleNamespace(backends={"default": s}), Clock(STEP_SECONDS * 3),
                      1.0, step=16)
        c.steps["default"] = 64  # as if a backlog had grown it
        # 64 and 32 each took too long; 6 steps of 16, then the last 8 series
        assert await _run(c) == [32, 16, 16, 16, 16, 16, 16, 16]
    finally:
        await s.close()
    assert _chunks(tmp_path) == SERIES
