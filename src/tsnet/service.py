"""The root service: open storage, then auth, then listeners; stop in reverse.

Listeners bind first, in ``privilegedStartService`` (twistd calls it after it
daemonised, before it sheds privileges and starts the application), and do not
accept yet; start-up then goes on asynchronously (storage opens in its own
thread), and listeners accept only once everything they write into is ready.
A listener that cannot bind, or a storage that cannot open, stops the server
with exit status 1, before it serves anything, and tells the shell that
started a daemon (`tsnet.startup`): a half-started server that looks healthy
is worse than none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from tsnet.compaction import Compactor
from tsnet.config import Config
from tsnet.core import build_core
from tsnet.errors import ListenError
from tsnet.expiry import Expirer
from tsnet.listeners import describe_address
from tsnet.startup import StartupReport

log = Logger(namespace="tsnet.service")

#: middle-generation collections between two full ones (CPython's default: 10).
#: What a server keeps per series (parser and id caches) is long-lived, and a
#: full collection walks all of it: at 100,000 series a wide load ran one about
#: every half second, 150-225 ms each, a quarter of the server's CPU and a stall
#: of the reactor each time.  Young collections, which free short cycles, run
#: as before.
FULL_GC_SPACING = 1000


def settle_gc() -> None:
    """Move what exists now (modules, config, plugins) out of the collector's
    sight, and space full collections out (`FULL_GC_SPACING`): for a process
    about to hold a lot for long (the server once started, a big import)."""
    import gc

    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_GC_SPACING)


class TsnetService(MultiService):
    """The whole server; children are the listener services, in config order."""

    def __init__(self, config: Config, plugins: Mapping[str, Any], reactor: Any,
                 freeze_gc: bool = False, report: StartupReport | None = None) -> None:
        super().__init__()
        #: once started, move what start-up made (modules, config, plugins) out of
        #: the collector's sight: a full collection then walks only what requests
        #: allocate (about 1 ms, not 25: 12 % of the CPU of a record stream); and
        #: run full collections a hundred times less often (FULL_GC_SPACING)
        self.freeze_gc = freeze_gc
        self.setName("tsnet")
        self.reactor = reactor
        self.core = build_core(config, plugins, reactor)
        self.started: defer.Deferred = defer.Deferred()
        self.compactor: Compactor | None = None
        self.expirer: Expirer | None = None  # retention's background removal
        self.failed = False  # start-up failed: the stop that follows is no clean one
        #: how the start went, for twistd's waiting parent and its pidfile
        self.report = report or StartupReport()
        #: listeners bound by `privilegedStartService` (closed at stop even if
        #: the start failed before they were started), and the first failure
        self._bound_early: list[Any] = []
        self._bind_failure: Failure | None = None
        used = {name: None for ln in config.listeners.values()
                for name in [ln.protocol, *(ln.options.get("apis") or ())] if name in plugins}
        #: the families' own services (`IProtocolPlugin.makeFamilyService`)
        self.family_services = [svc for svc in (plugins[name].makeFamilyService(self.core)
                                                for name in used) if svc is not None]
        for ln in config.listeners.values():
            svc = plugins[ln.protocol].makeService(ln, self.core)
            svc.setServiceParent(self)

    def privilegedStartService(self) -> None:
        """Take twistd's status pipe over, and bind every listener that can
        (`tsnet.listeners._PausedListener`), not accepting yet."""
        self.report.take_over()
        try:
            super().privilegedStartService()  # (each child's: listeners bind)
        except Exception:
            self._bind_failure = Failure()
        for svc in self:
            bind = getattr(svc, "bind", None)
            if bind is None:
                continue
            self._bound_early.append(svc)
            failed: list[Failure] = []
            bind().addErrback(lambda f, failed=failed: failed.append(f) or f)
            if failed:
                bind().addErrback(lambda _: None)  # the start fails with it, below
                self._bind_failure = self._bind_failure or failed[0]

    def startService(self) -> None:
        Service.startService(self)  # children start once storage and auth are ready
        if self._bind_failure is not None:  # before storage opens
            d = defer.fail(self._bind_failure)
        else:
            d = defer.ensureDeferred(self._start())
        d.addCallbacks(self.started.callback, self._start_failed)

    async def _start(self) -> None:
        core = self.core
        await core.storages.open()
        now = int(self.reactor.seconds() * 1e9)
        for name in sorted({"default"} | core.config.solutions_named()):
            await core.storages.ensure_solution(name, now_ns=now)
        core.auth.on_change = core.storages.refresh
        await core.auth.start()
        for svc in self.family_services:
            await defer.maybeDeferred(svc.startService)
        for svc in self:
            svc.startService()
            listening = getattr(svc, "whenListening", None)
            if listening is not None:
                self._bound(svc, await listening())
        self.compactor = Compactor(core.storages, self.reactor, core.config.compact_interval)
        self.compactor.startService()
        self.expirer = Expirer(core.storages, self.reactor, core.config.retention_interval)
        self.expirer.startService()
        if self.freeze_gc:
            settle_gc()
        log.info("tsnet running: {n} listeners, data in {data_dir}", n=len(self.services),
                 data_dir=core.config.data_dir)
        self.report.succeeded()

    def _bound(self, svc: Any, port: Any) -> None:
        """Tell the metrics (``tsnet_listener_info``) where a listener listens."""
        listener, host = getattr(svc, "listener", None), getattr(port, "getHost", None)
        if listener is not None and host is not None:
            self.core.metrics.listener_bound(listener.protocol, listener.name,
                                             describe_address(host(), listener.endpoint))

    def _start_failed(self, f: Any) -> None:
        self.failed = True
        reason = f.getErrorMessage()
        if f.check(ListenError):  # the message says it all: no traceback
            log.critical("tsnet cannot start: {reason}", reason=reason)
        else:
            log.critical("tsnet cannot start: {reason}", reason=reason, failure=f)
        self.report.failed(reason)
        self.started.errback(f)
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Stop accepting, commit everything read, close storage."""
        Service.stopService(self)
        for svc in reversed(list(self)):
            if svc.running or svc in self._bound_early:
                try:
                    yield svc.stopService()
                except Exception:
                    log.failure("stopping {name} failed", name=svc.name)
        core = self.core
        for svc in reversed(self.family_services):
            if svc.running:
                try:
                    yield svc.stopService()
                except Exception:
                    log.failure("stopping {name} failed", name=svc.name)
        if self.compactor is not None:
            yield self.compactor.stopService()
        if self.expirer is not None:
            yield self.expirer.stopService()
        queued = core.ingest.queued
        # bounded: a storage still failing storage_wait seconds in is given up on
        lost = yield core.ingest.stop()
        core.auth.stop()
        yield core.storages.close()
        if self.failed:
            log.info("tsnet stopped after a failed start; committed {queued} items",
                     queued=queued - lost)
        elif lost:
            log.error("tsnet stopped with a storage failing: {lost} of the {queued} items "
                      "queued at stop could not be committed", lost=lost, queued=queued)
        else:
            log.info("tsnet stopped cleanly; committed {queued} items queued at stop",
                     queued=queued)
