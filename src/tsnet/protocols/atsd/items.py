"""Parsed ATSD commands turned into the items of one `ingest.submit` batch.

Every channel (TCP, UDP, HTTP) collects its accepted data commands here, in
order, and hands the batch to the one write path: series samples, properties,
messages and metric/entity meta.  Commands without a time get the server's
now; ``p:false`` properties and messages go to no store (ATSD passes them to
its rule engine only, which tsnet does not have); data the solution's meta
discards (`tsnet.protocols.atsd.meta`) is left out, and the reason returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tsnet.model import Batch, Column

if TYPE_CHECKING:
    from tsnet.protocols.atsd.meta import MetaRules

MS = 1_000_000  # ns per ms


class CommandBatch:
    """The items of the data commands accepted since the last `take`."""

    __slots__ = ("batch", "commands", "sunk")

    def __init__(self) -> None:
        self.batch = Batch()
        self.commands = 0  # data commands in the batch, not counting p:false ones
        self.sunk = 0  # samples added to a sink's columns, not yet accounted

    def add(self, command: Any, now_ms: int, rules: MetaRules | None = None,
            columns: dict | None = None) -> str | None:
        """Add a data command (series, property, message, metric or entity);
        returns why (some of) its data was discarded, or None.  With
        ``columns`` (a point sink's), series samples go there instead, counted
        in ``sunk``, so they keep their order with the points the fast path
        appends there."""
        from tsnet.protocols.atsd.parse import (
            MessageCommand,
            MetaCommand,
            PropertyCommand,
            SeriesCommand,
        )

        b = self.batch
        discarded = None
        if isinstance(command, SeriesCommand):
            t = (command.time_ms if command.time_ms is not None else now_ms) * MS
            for key, (metric, value, text) in zip(command.keys(), command.samples, strict=True):
                if rules is not None:
                    why = rules.sample_verdict(command.entity, metric, value)
                    if why is not None:
                        discarded = why
                        continue
                if columns is None:
                    b.samples.add(key, t, value, text)
                    continue
                col = columns.get(key)
                if col is None:
                    col = columns[key] = Column()
                col.add(t, value, text)
                self.sunk += 1
        elif isinstance(command, PropertyCommand | MessageCommand):
            if rules is not None and rules.entity_disabled(command.entity):
                return "disabled_entity"
            if command.persist:
                t = (command.time_ms if command.time_ms is not None else now_ms) * MS
                if isinstance(command, PropertyCommand):
                    b.properties.append(command.to_property(t))
                else:
                    b.messages.append(command.to_message(t))
        elif isinstance(command, MetaCommand):
            meta = command.to_meta()
            if rules is not None:
                rules.update(meta)
            b.meta.append(meta)
        else:
            raise TypeError(f"not a data command: {command!r}")
        self.commands += 1
        return discarded

    def take(self) -> Batch | None:
        """The batch so far (None when empty), and a fresh one for what follows."""
        if not self.commands and not self.batch.item_count():
            return None
        batch = self.batch
        self.batch = Batch()
        self.commands = 0
        return batch if batch.item_count() else None
