"""The root service: open storage, then auth, then listeners; stop in reverse.

Start-up is asynchronous (storage opens in its own thread), so listeners are
bound only once everything they write into is ready.  A listener that cannot
bind stops the server with exit status 1: a half-started server that looks
healthy is worse than none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.logger import Logger

from tsnet.compaction import Compactor
from tsnet.config import Config
from tsnet.core import build_core

log = Logger(namespace="tsnet.service")

#: middle-generation collections between two full ones (CPython's default: 10).
#: What a server keeps per series (parser and id caches) is long-lived, and a
#: full collection walks all of it: at 100,000 series a wide load ran one about
#: every half second, 150-225 ms each, a quarter of the server's CPU and a stall
#: of the reactor each time.  Young collections, which free short cycles, run
#: as before.
FULL_GC_SPACING = 1000


class TsnetService(MultiService):
    """The whole server; children are the listener services, in config order."""

    def __init__(self, config: Config, plugins: Mapping[str, Any], reactor: Any,
                 freeze_gc: bool = False) -> None:
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
        self.failed = False  # start-up failed: the stop that follows is no clean one
        used = {name: None for ln in config.listeners.values()
                for name in [ln.protocol, *(ln.options.get("apis") or ())] if name in plugins}
        #: the families' own services (`IProtocolPlugin.makeFamilyService`)
        self.family_services = [svc for svc in (plugins[name].makeFamilyService(self.core)
                                                for name in used) if svc is not None]
        for ln in config.listeners.values():
            svc = plugins[ln.protocol].makeService(ln, self.core)
            svc.setServiceParent(self)

    def startService(self) -> None:
        Service.startService(self)  # children start once storage and auth are ready
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
                await listening()
        self.compactor = Compactor(core.storages, self.reactor, core.config.compact_interval)
        self.compactor.startService()
        if self.freeze_gc:
            import gc

            gc.collect()
            gc.freeze()
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, FULL_GC_SPACING)
        log.info("tsnet running: {n} listeners, data in {data_dir}", n=len(self.services),
                 data_dir=core.config.data_dir)

    def _start_failed(self, f: Any) -> None:
        self.failed = True
        log.critical("tsnet cannot start: {reason}", reason=f.getErrorMessage(), failure=f)
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
            if svc.running:
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
