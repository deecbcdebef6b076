"""Parsed ATSD commands turned into the items of one `ingest.submit` batch.

Every channel (TCP, UDP, HTTP) collects its accepted data commands here, in
order, and hands the batch to the one write path: series samples, properties,
messages and metric/entity meta.  Commands without a time get the server's
now; ``p:false`` properties and messages go to no store (ATSD passes them to
its rule engine only, which tsnet does not have).
"""

from __future__ import annotations

from typing import Any

from tsnet.model import Batch

MS = 1_000_000  # ns per ms


class CommandBatch:
    """The items of the data commands accepted since the last `take`."""

    __slots__ = ("batch", "commands")

    def __init__(self) -> None:
        self.batch = Batch()
        self.commands = 0  # data commands in the batch, not counting p:false ones

    def add(self, command: Any, now_ms: int) -> None:
        """Add a data command (series, property, message, metric or entity)."""
        from tsnet.protocols.atsd.parse import (
            MessageCommand,
            MetaCommand,
            PropertyCommand,
            SeriesCommand,
        )

        b = self.batch
        if isinstance(command, SeriesCommand):
            t = (command.time_ms if command.time_ms is not None else now_ms) * MS
            for key, (_, value, text) in zip(command.keys(), command.samples, strict=True):
                b.samples.add(key, t, value, text)
        elif isinstance(command, PropertyCommand):
            if command.persist:
                t = command.time_ms if command.time_ms is not None else now_ms
                b.properties.append(command.to_property(t * MS))
        elif isinstance(command, MessageCommand):
            if command.persist:
                t = command.time_ms if command.time_ms is not None else now_ms
                b.messages.append(command.to_message(t * MS))
        elif isinstance(command, MetaCommand):
            b.meta.append(command.to_meta())
        else:
            raise TypeError(f"not a data command: {command!r}")
        self.commands += 1

    def take(self) -> Batch | None:
        """The batch so far (None when empty), and a fresh one for what follows."""
        if not self.commands and not self.batch.item_count():
            return None
        batch = self.batch
        self.batch = Batch()
        self.commands = 0
        return batch if batch.item_count() else None
