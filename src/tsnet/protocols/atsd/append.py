"""ATSD's ``a:true`` (spec §4.1): a series text appended to the text already
stored for that sample, instead of replacing it.

The stored text is read back once everything received before the command is
committed, and the command then goes on as a plain replacement with the
joined text (`tsnet.storage.rules.append_text`).  Appends are rare, so each
one waits for a commit and a read; a connection stays in order meanwhile.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from tsnet.errors import NotFound
from tsnet.protocols.atsd.items import MS
from tsnet.protocols.atsd.parse import SeriesCommand
from tsnet.storage.rules import append_text

if TYPE_CHECKING:
    from tsnet.core import Core


def needs_append(command: object) -> bool:
    """A series command whose texts must be joined to the stored ones."""
    return (isinstance(command, SeriesCommand) and command.append
            and any(text is not None for _, _, text in command.samples))


async def resolve(core: Core, solution: str, command: SeriesCommand,
                  now_ms: int) -> SeriesCommand:
    """``command`` with each text joined to the one stored at its time, its
    time fixed (so the read and the write agree) and append turned off."""
    t_ms = command.time_ms if command.time_ms is not None else now_ms
    t = t_ms * MS
    try:
        backend = core.storage.backend_for(solution)
    except NotFound:
        await core.storage.refresh()
        backend = core.storage.backend_for(solution)
    samples = []
    for key, (metric, value, text) in zip(command.keys(), command.samples, strict=True):
        if text is not None:
            stored = None
            for k, times, _, texts in await backend.read_series(solution, metric, t, t):
                if k == key and texts is not None and t in times:
                    stored = texts[times.index(t)]
            text = append_text(stored, text)
        samples.append((metric, value, text))
    return dataclasses.replace(command, samples=samples, append=False, time_ms=t_ms)
