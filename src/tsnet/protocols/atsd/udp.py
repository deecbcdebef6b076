"""ATSD network commands over UDP (ATSD's port 8082): spec §2.2.

A datagram holds one command without LF, or several ending with LF (the text
after the last LF is dropped and counted).  Nothing is ever answered; a bad
command is dropped, logged and counted, and the rest of the datagram goes on.
UDP cannot be paused, so a datagram the write queue has no room for is
counted as dropped (``overloaded``) instead of blocking the reactor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger, LogLevel

from tsnet.errors import StorageUnavailable
from tsnet.logbound import LogBound
from tsnet.model import anonymous
from tsnet.protocols.atsd.append import needs_append, resolve
from tsnet.protocols.atsd.framing import OTHER_LIMIT, frame_datagram
from tsnet.protocols.atsd.items import CommandBatch
from tsnet.protocols.atsd.parse import (
    CommandError,
    Control,
    SeriesFastPath,
    framed_text,
    parse_framed,
)

if TYPE_CHECKING:
    from tsnet.config import Listener
    from tsnet.core import Core
    from tsnet.protocols.atsd.commandlog import CommandLogs

log = Logger(namespace="tsnet.atsd")

PROTOCOL = "atsd"
CHANNEL = "incoming.udp.raw"
#: the kinds of `AtsdDatagramProtocol.bounded` (fixed texts: what repeats is counted)
UNAVAILABLE_APPENDS = "ATSD datagrams with appends dropped while the storage fails"
FAILED_APPENDS = "failed ATSD datagrams with appends"


class AtsdDatagramProtocol(DatagramProtocol):
    """One UDP listener."""

    noisy = False

    def __init__(self, listener: Listener, core: Core, logs: CommandLogs,
                 rules: Any = None, bounded: LogBound | None = None) -> None:
        self.listener = listener
        self.core = core
        self.logs = logs
        #: what each datagram may fail with again: logged once, then counted
        self.bounded = bounded if bounded is not None else LogBound(log, core.reactor)
        #: ``rules(core, solution) -> MetaRules``: what the solution's meta discards
        self.rules = rules
        self.principal = anonymous(listener.solution)
        self.command_log = listener.options.get("command_log", False)
        self.other_limit = listener.options.get("other_limit", OTHER_LIMIT)
        self.overloaded = False
        self.fast = SeriesFastPath()  # series lines seen before parse from a cache

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        core = self.core
        commands, dropped = frame_datagram(data)
        if dropped:
            core.metrics.rejected(PROTOCOL, "unterminated", dropped)
            self.logs.malformed(CHANNEL, data.rsplit(b"\n", 1)[-1][:200].decode(
                "utf-8", "replace"), "unterminated")
        now_ms = int(core.reactor.seconds() * 1000)
        rules = self.rules(core, self.listener.solution) if self.rules is not None else None
        accepted: list[tuple[str, Any]] = []
        for item in commands:
            text = framed_text(item)
            try:
                _, command = parse_framed(item, self.fast.parse, self.other_limit)
            except CommandError as e:
                core.metrics.rejected(PROTOCOL, e.reason)
                self.logs.malformed(CHANNEL, text, e.reason)
                continue
            if isinstance(command, Control):  # nothing can be answered over UDP
                core.metrics.rejected(PROTOCOL, "control_over_udp")
                self.logs.malformed(CHANNEL, text, "control_over_udp")
                continue
            accepted.append((item, command))
        if any(needs_append(c) for _, c in accepted):
            d = defer.ensureDeferred(self._with_appends(accepted, now_ms, rules))
            d.addErrback(self._appends_failed)
            return
        items = CommandBatch()
        for item, command in accepted:
            self._add(items, item, command, now_ms, rules)
        self._offer(items)

    def _appends_failed(self, f: Any) -> None:
        if f.check(StorageUnavailable):  # ingest logs the outage, once
            self.bounded.emit(LogLevel.warn, UNAVAILABLE_APPENDS,
                              "listener {listener}: the rest of a datagram with appends is "
                              "dropped: {reason}", listener=self.listener.name,
                              reason=f.getErrorMessage())
        else:
            self.bounded.failure(FAILED_APPENDS, "an ATSD datagram with appends failed", f)

    def _add(self, items: CommandBatch, item: str, command: Any, now_ms: int,
             rules: Any) -> None:
        discarded = items.add(command, now_ms, rules)
        if discarded is not None:
            self.core.metrics.rejected(PROTOCOL, discarded)
            self.logs.discarded(CHANNEL, item, discarded)
        if self.command_log:
            self.logs.accepted(CHANNEL, item)

    async def _with_appends(self, accepted: list[tuple[str, Any]], now_ms: int,
                            rules: Any) -> None:
        """A datagram holding ``a:true`` series: each waits for the commit of
        what came before it, to join its text to the stored one."""
        core = self.core
        items = CommandBatch()
        for item, command in accepted:
            if needs_append(command):
                batch = items.take()
                if batch is not None:
                    core.metrics.received(PROTOCOL, batch.samples.count)
                    await core.ingest.submit(batch, self.principal, PROTOCOL)
                command = await resolve(core, self.listener.solution, command, now_ms)
            self._add(items, item, command, now_ms, rules)
        self._offer(items)

    def _offer(self, items: CommandBatch) -> None:
        core = self.core
        batch = items.take()
        if batch is None:
            return
        n = batch.item_count()
        core.metrics.received(PROTOCOL, batch.samples.count)
        if core.ingest.offer(batch, self.principal, PROTOCOL):
            if self.overloaded:
                self.overloaded = False
                log.info("listener {listener}: the write queue takes datagrams again",
                         listener=self.listener.name)
            return
        core.metrics.rejected(PROTOCOL, "overloaded", n)
        if not self.overloaded:
            self.overloaded = True
            log.warn("listener {listener}: the write queue is full: dropping datagrams "
                     "(counted in tsnet_points_rejected_total) until it drains",
                     listener=self.listener.name)
