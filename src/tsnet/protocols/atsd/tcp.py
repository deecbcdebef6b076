"""ATSD network commands over TCP (ATSD's port 8081): a persistent stream of
commands of every kind, processed strictly in order (spec §2.1, §4, §5).

Commands without ``debug`` get no reply and are committed within the flush
interval; ``debug <command>`` is answered ``ok`` once the batch holding it is
committed, so the connection waits for that commit before it reads on (the
replies stay in order).  A malformed or unknown command is dropped, logged to
``command_malformed.log`` and counted; with ``disconnect_on_error`` (the
default) the connection is closed after its reply, every command before it
being stored.  ``ping``, ``time``, ``version`` and ``exit`` answer at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, LogLevel
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from tsnet.errors import StorageUnavailable
from tsnet.listeners import ConnectionTracker, FlowControlled, LineDeadline
from tsnet.logbound import DEFAULT_PERIOD, LogBound
from tsnet.model import SampleSet, anonymous
from tsnet.protocols.atsd import ATSD_REVISION
from tsnet.protocols.atsd.append import needs_append, resolve
from tsnet.protocols.atsd.framing import OTHER_LIMIT, Overlong, TcpFramer
from tsnet.protocols.atsd.items import CommandBatch
from tsnet.protocols.atsd.parse import (
    CommandError,
    Control,
    MetaCommand,
    SeriesCommand,
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
CHANNEL = "incoming.tcp.raw"
#: the kinds of `AtsdTcpFactory.bounded` (fixed texts: what repeats is counted)
FAILED_APPENDS = "failed ATSD TCP appends"
REFUSED = "ATSD TCP batches refused while the storage fails"
NOT_STORED = "ATSD TCP batches not stored"


class AtsdTcpFactory(ConnectionTracker):
    """One per TCP listener: its settings and the server's command logs."""

    #: seconds `bounded` counts the repeats of a failure before it says how many
    log_period = DEFAULT_PERIOD

    def __init__(self, listener: Listener, core: Core, logs: CommandLogs,
                 rules: Any = None, bounded: LogBound | None = None) -> None:
        super().__init__(listener, core, PROTOCOL)
        self.logs = logs
        #: what each batch or append may fail with again: logged once, then
        #: counted (the plugin's, shared with UDP, when it hands one over)
        self.bounded = bounded if bounded is not None else LogBound(
            log, core.reactor, self.log_period)
        #: ``rules(core, solution) -> MetaRules``: what the solution's meta discards
        self.rules = rules
        self.principal = anonymous(listener.solution)
        self.disconnect_on_error = listener.options.get("disconnect_on_error", True)
        self.command_log = listener.options.get("command_log", False)
        self.other_limit = listener.options.get("other_limit", OTHER_LIMIT)
        #: the cache of validated series lines, shared by the listener's connections
        self.fast = SeriesFastPath()

    def close_all(self) -> None:
        """The listener stops: its connections close, and the counts of the
        failures not summed up yet are logged."""
        super().close_all()
        self.bounded.flush()

    def buildProtocol(self, addr: Any) -> AtsdTcpProtocol:
        p = AtsdTcpProtocol()
        p.factory = self
        return p


@implementer(IHalfCloseableProtocol)
class AtsdTcpProtocol(LineDeadline, FlowControlled, Protocol, TimeoutMixin):
    """One connection.  A half-close (EOF) ends the last command without LF,
    which is processed, answered if it asked, and then the connection closes."""

    factory: AtsdTcpFactory

    def __init__(self) -> None:
        self._framer = TcpFramer()
        self._queue: list[str | Overlong] = []  # framed commands not handled yet
        self._pos = 0  # the first of them
        self._items = CommandBatch()
        self._sink: Any = None  # plain series lines go straight into the write queue
        self._view = SampleSet()  # the sink's columns, as the fast path fills them
        self._waiting = False  # a debug command's commit is awaited
        self._closing = False
        self._eof = False
        self._ingest_paused = False
        self._transport_paused = False

    # -- connection --------------------------------------------------------------

    def connectionMade(self) -> None:
        f = self.factory
        if not f.admit(self):
            self._closing = True
            self.transport.loseConnection()
            return
        self.callLater = f.core.reactor.callLater  # TimeoutMixin's clock
        self.setTimeout(f.listener.idle_timeout or None)
        self._sink = f.core.ingest.sink(f.principal, PROTOCOL)
        f.core.ingest.registerProducer(self)

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        self.watch_lines(data)
        self._queue.extend(self._framer.feed(data))
        self._run()

    def readConnectionLost(self) -> None:
        self._eof = True
        self._queue.extend(self._framer.close())
        self._run()

    def writeConnectionLost(self) -> None:
        self._closing = True
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        f = self.factory
        f.core.ingest.unregisterProducer(self)
        f.forget(self)
        if not self._closing and reason is not None and reason.check(ConnectionDone):
            # closed without a half-close first: what was read is still stored
            self._queue.extend(self._framer.close())
            self._eof = True
            self._run()
        self._submit()

    def timeoutConnection(self) -> None:
        self._close()

    line_timed_out = timeoutConnection  # (the partial command is not stored)

    def _close(self) -> None:
        if not self._closing:
            self._closing = True
            self._submit()
            self.transport.loseConnection()

    def stopProducing(self) -> None:
        self._close()  # (FlowControlled pauses and resumes)

    # -- commands --------------------------------------------------------------------

    def _reply(self, text: str) -> None:
        if self.transport is not None and not self._closing:
            self.transport.write(text.encode("utf-8") + b"\n")

    def _run(self) -> None:
        """Handle queued commands in order until done, closing, or waiting on a
        debug command's commit.  Runs of plain series lines of known series go
        through the listener's fast path straight into the sink's columns."""
        f = self.factory
        core = f.core
        queue = self._queue
        n = len(queue)
        i = self._pos
        take, parse = f.fast.take, f.fast.parse
        view = self._view
        rules = f.rules(core, f.listener.solution) if f.rules is not None else None
        # the fast path skips what only the full path does: command.log, meta discards
        fast = self._sink is not None and not f.command_log and not (rules and rules.active)
        while i < n and not self._waiting and not self._closing:
            if fast:
                view.columns = self._sink.columns()
                view.count = 0
                i = take(queue, i, view)
                self._sink.added(view.count)
                if i >= n:
                    break
            item = queue[i]
            i += 1
            try:
                debug, command = parse_framed(item, parse, f.other_limit)
            except CommandError as e:
                text = framed_text(item)
                self._reject(text, e, text.startswith("debug "))
                continue
            if isinstance(command, Control):
                self._control(command.name)
                continue
            if needs_append(command):
                self._pos = i
                self._wait_append(command, item, debug)
                return
            if not self._accept(command, item, debug, rules):
                fast = False  # a meta command that may discard what follows
        if i >= n:
            queue.clear()
            i = 0
        self._pos = i
        if not self._waiting:
            self._submit()
            if self._eof and not queue and not self._closing:
                self._close()

    def _accept(self, command: Any, item: str, debug: bool, rules: Any) -> bool:
        """Take a parsed data command into the write queue; False when it was
        meta that may discard data (the fast path must stop)."""
        f = self.factory
        core = f.core
        items = self._items
        sink = self._sink if not debug and isinstance(command, SeriesCommand) else None
        discarded = items.add(command, int(core.reactor.seconds() * 1000), rules,
                              None if sink is None else sink.columns())
        if sink is not None:
            sink.added(items.sunk)  # in order with the fast path's points
            items.sunk = 0
        if discarded is not None:
            core.metrics.rejected(PROTOCOL, discarded)
            f.logs.discarded(CHANNEL, item, discarded)
        if f.command_log:
            f.logs.accepted(CHANNEL, item)
        if debug:
            self._wait_commit()
        return not (isinstance(command, MetaCommand) and rules is not None and rules.active)

    def _wait_append(self, command: Any, item: str, debug: bool) -> None:
        """``a:true``: commit what came before, read the stored text, then take
        the command with the texts joined, and go on."""
        f = self.factory
        core = f.core
        d = self._submit() or core.ingest.flush()
        self._waiting = True
        self._update_flow()

        async def joined(_: Any) -> Any:
            return await resolve(core, f.listener.solution, command,
                                 int(core.reactor.seconds() * 1000))

        def done(resolved: Any) -> None:
            self._waiting = False
            self._update_flow()
            if self._closing:
                return
            rules = f.rules(core, f.listener.solution) if f.rules is not None else None
            self._accept(resolved, item, debug, rules)
            self._run()

        def failed(failure: Any) -> None:
            f.bounded.failure(FAILED_APPENDS, "appending an ATSD text failed", failure)
            self._waiting = False
            self._update_flow()
            if debug:
                self._reply("Error: the command was not stored")
            self._run()

        d.addCallback(lambda r: defer.ensureDeferred(joined(r)))
        d.addCallbacks(done, failed)

    def _control(self, name: str) -> None:
        if name == "ping":
            self._reply("ok")
        elif name == "time":
            self._reply(str(int(self.factory.core.reactor.seconds() * 1000)))
        elif name == "version":
            self._reply(str(ATSD_REVISION))
        elif name == "exit":
            self._reply("Goodbye")
            self._close()

    def _reject(self, command: str, error: CommandError, debug: bool) -> None:
        f = self.factory
        f.core.metrics.rejected(PROTOCOL, error.reason)
        f.logs.malformed(CHANNEL, command, error.reason)
        if debug:
            self._reply(str(error))
        if f.disconnect_on_error:
            self._close()  # what came before is submitted first

    def _submit(self) -> defer.Deferred | None:
        """Queue what the commands so far hold; the Deferred fires at commit."""
        batch = self._items.take()
        if batch is None:
            return None
        core = self.factory.core
        core.metrics.received(PROTOCOL, batch.samples.count)
        d = core.ingest.submit(batch, self.factory.principal, PROTOCOL)
        d.addErrback(self._not_stored, batch.item_count())
        return d

    def _not_stored(self, f: Any, n: int) -> str:
        """The error reply a debug command waiting on this commit gets."""
        bounded = self.factory.bounded
        if f.check(StorageUnavailable):
            if not f.value.kept:  # (kept: still queued and retried; ingest logs the outage)
                bounded.emit(LogLevel.warn, REFUSED, "{n} ATSD items refused: {reason}", n=n,
                             reason=f.getErrorMessage())
            return f"Error: {f.getErrorMessage()}"
        bounded.emit(LogLevel.error, NOT_STORED, "{n} ATSD items could not be stored: "
                     "{reason}", n=n, reason=f.getErrorMessage())
        return "Error: the command was not stored"

    def _wait_commit(self) -> None:
        """A debug command: its reply waits for the commit of everything so far."""
        d = self._submit()
        self._waiting = True
        self._update_flow()

        def done(error: str | None) -> None:
            self._waiting = False
            self._update_flow()
            self._reply(error or "ok")
            self._run()

        if d is None:
            d = defer.succeed(None)
        d.addCallback(done)
