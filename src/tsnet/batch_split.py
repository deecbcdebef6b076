"""Cutting a long queued batch into parts, so that one write stays short.

A write commits its batch in one transaction, and none of it counts as
committed before all of it does.  When items cost much to write (a fleet's
first points each create a series: ten times the cost of a known series'
point), the batch that queued behind one slow write is slower still, and the
committed rate stalls for seconds.  So the write queue cuts a long queue into
parts, each as many items as its recent cost per item fits in a target time
(`tsnet.ingest.PART_SECONDS`), and writes them one by one, ahead of what
queues meanwhile.

Only points are cut, between series' columns or between rows, never inside a
column; what a storage writes first still comes first: columns before rows,
rows in arrival order, solution after solution.  Pure functions: no reactor,
no storage.
"""

from __future__ import annotations

from tsnet.model import WriteBatch


def cut(batch: WriteBatch, items: int) -> list[WriteBatch]:
    """``batch`` as parts of about ``items`` items each (a part may pass them
    by one column), in order: whole columns, then slices of the rows once
    every column of their solution is in a part.  A solution's list items and
    reclaim go with the first part that reaches it.  One pass over the batch:
    the queue cuts all its parts at once, so a long queue is not copied again
    for each."""
    parts = [WriteBatch()]
    budget = items

    def room() -> WriteBatch:
        nonlocal budget
        if budget <= 0:
            parts.append(WriteBatch())
            budget = items
        return parts[-1]

    for solution, b in batch.by_solution.items():
        s = b.samples
        lists = len(b.properties) + len(b.messages) + len(b.meta) + len(b.records)
        size = lists + s.count
        if not size:  # (nothing but a reclaim, or nothing: no part of its own)
            if b.reclaim_ns is not None:
                parts[-1].by_solution[solution] = b
            continue
        part = room()
        if size <= budget:  # (the whole solution fits)
            part.by_solution[solution] = b
            budget -= size
            continue
        start = len(parts) - 1  # (this solution's parts: from here on)
        first = part.for_solution(solution)
        first.properties, first.messages, first.meta, first.records = (
            b.properties, b.messages, b.meta, b.records)
        first.reclaim_ns = b.reclaim_ns
        budget -= lists
        for key, col in s.columns.items():
            room().for_solution(solution).samples.columns[key] = col
            budget -= len(col.times)
        i, n = 0, len(s.keys)
        while i < n:
            target = room().for_solution(solution).samples
            j = min(n, i + budget)
            target.keys, target.times, target.values = s.keys[i:j], s.times[i:j], s.values[i:j]
            budget -= j - i
            i = j
        for part in parts[start:]:
            part.by_solution[solution].samples.recount()
    return [p for p in parts if p.by_solution]


def take(counts: dict[str, list[int]], want: list[int]) -> dict[str, list[int]]:
    """``want`` (items of each kind) taken from ``counts`` (the same, by
    protocol), from the first protocol on; ``counts`` keeps what is left.  A
    batch mixes protocols, so which protocol a part's points came from is not
    known: the totals are right, and once every part is taken, each protocol's
    too."""
    out: dict[str, list[int]] = {}
    want = want.copy()
    for protocol, c in counts.items():
        share = [min(w, have) for w, have in zip(want, c, strict=True)]
        if any(share):
            out[protocol] = share
            for i, n in enumerate(share):
                c[i] -= n
                want[i] -= n
    return out
