"""The `atsd` protocol family as a tsnet plugin: TCP and UDP listeners, and
the HTTP command and read-back routes on ``http`` listeners."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import IResource

from tsnet.logbound import DEFAULT_PERIOD, LogBound
from tsnet.plugin import (
    Config,
    DatagramListenerService,
    IProtocolPlugin,
    Key,
    Listener,
    NotFound,
    ProtocolPlugin,
    StreamListenerService,
    as_bool,
    positive_int,
)
from tsnet.protocols.atsd.framing import OTHER_LIMIT

if TYPE_CHECKING:
    from tsnet.core import Core
    from tsnet.protocols.atsd.commandlog import CommandLogs
    from tsnet.protocols.atsd.meta import MetaRules

log = Logger(namespace="tsnet.atsd")

#: the kind of the failed meta loads in `AtsdPlugin.bounded`
META_FAILURES = "failed loads of ATSD meta"


class _RulesFirst:
    """A listener service that loads its solution's meta rules before it
    listens, so no command is handled without them."""

    listener: Listener
    _plugin: AtsdPlugin
    _core: Core

    def whenListening(self) -> Any:
        d = self._plugin.rules_for(self._core, self.listener.solution)
        return d.addCallback(lambda _: super(_RulesFirst, self).whenListening())


class AtsdListenerService(_RulesFirst, StreamListenerService):
    """A TCP listener; its command logs are written out when it stops."""

    def __init__(self, listener: Listener, factory: Any, reactor: Any, plugin: AtsdPlugin,
                 core: Core) -> None:
        super().__init__(listener, factory, reactor)
        self._plugin = plugin
        self._core = core

    def stopService(self) -> Any:
        d = super().stopService()
        self.factory.logs.flush()
        self._plugin.bounded(self._core).flush()
        return d


class AtsdDatagramService(_RulesFirst, DatagramListenerService):
    """A UDP listener."""

    def __init__(self, listener: Listener, protocol: Any, reactor: Any, plugin: AtsdPlugin,
                 core: Core) -> None:
        super().__init__(listener, protocol, reactor)
        self._plugin = plugin
        self._core = core

    def stopService(self) -> Any:
        d = super().stopService()
        self._plugin.bounded(self._core).flush()
        return d


class AtsdPlugin(ProtocolPlugin):
    name = "atsd"
    description = "ATSD network commands: TCP (8081), UDP (8082), HTTP /api/v1/command"
    transports = frozenset({"stream", "udp"})
    provides_api = True
    listener_keys = {
        "disconnect_on_error": Key(as_bool, True,
                                   "close a TCP connection after a rejected command"),
        "command_log": Key(as_bool, False, "write accepted commands to command.log"),
        "other_limit": Key(positive_int, OTHER_LIMIT, "bytes a command other than series, "
                                                      "property and message may have"),
    }
    #: seconds `bounded` counts the repeats of a failure before it says how many
    log_period = DEFAULT_PERIOD

    def __init__(self) -> None:
        from tsnet.protocols.atsd.http_command import AtsdErrors

        self.http_errors = AtsdErrors()
        self._logs: dict[str, CommandLogs] = {}  # by data directory
        self._rules: dict[tuple[str, str], MetaRules] = {}  # by data directory, solution
        self._loading: dict[tuple[str, str], defer.Deferred] = {}
        self._bounded: dict[str, LogBound] = {}  # by data directory

    def logs(self, core: Core) -> CommandLogs:
        """The command logs of the server's data directory (one per directory)."""
        from tsnet.protocols.atsd.commandlog import CommandLogs

        d = core.config.data_dir
        logs = self._logs.get(d)
        if logs is None:
            logs = self._logs[d] = CommandLogs(d, core.reactor)
        return logs

    def bounded(self, core: Core) -> LogBound:
        """The failures of the server's TCP and UDP inputs that clients may
        repeat at will (one `LogBound` per data directory); an ATSD listener's
        stop logs the counts pending."""
        d = core.config.data_dir
        bounded = self._bounded.get(d)
        if bounded is None:
            bounded = self._bounded[d] = LogBound(log, core.reactor, self.log_period)
        return bounded

    def rules_now(self, core: Core, solution: str) -> MetaRules:
        """The solution's meta rules as they are (reloaded in the background
        when stale), for channels that cannot wait."""
        from tsnet.protocols.atsd.meta import MetaRules

        key = (core.config.data_dir, solution)
        rules = self._rules.get(key)
        if rules is None:
            rules = self._rules[key] = MetaRules()
        if rules.stale(core.reactor.seconds()) and key not in self._loading:
            self.rules_for(core, solution).addErrback(
                lambda f: self.bounded(core).failure(
                    META_FAILURES, "loading the ATSD meta of {solution} failed", f,
                    solution=solution))
        return rules

    def rules_for(self, core: Core, solution: str) -> defer.Deferred:
        """Deferred[MetaRules]: loaded from storage first when stale."""
        from tsnet.protocols.atsd.meta import MetaRules

        key = (core.config.data_dir, solution)
        rules = self._rules.get(key)
        if rules is None:
            rules = self._rules[key] = MetaRules()
        if not rules.stale(core.reactor.seconds()):
            return defer.succeed(rules)
        if key in self._loading:  # wait for that load, without touching its result
            d: defer.Deferred = defer.Deferred()

            def also(result: Any) -> Any:
                d.callback(rules)
                return result

            self._loading[key].addBoth(also)
            return d

        async def load() -> MetaRules:
            try:
                backend = core.storage.backend_for(solution)
            except NotFound:
                await core.storage.refresh()
                backend = core.storage.backend_for(solution)
            metrics = await backend.read_meta(solution, "metric")
            entities = await backend.read_meta(solution, "entity")
            rules.load(metrics, entities, core.reactor.seconds())
            return rules

        loading = self._loading[key] = defer.ensureDeferred(load())

        def done(result: Any) -> Any:
            self._loading.pop(key, None)
            return result

        return loading.addBoth(done)

    def check(self, listener: Listener, config: Config,
              plugins: Mapping[str, IProtocolPlugin]) -> None:
        if listener.protocol == self.name and listener.auth == "token":
            raise ValueError("auth: ATSD's TCP and UDP commands carry no credentials; use "
                             "auth = none and the listener's solution (tokens apply to "
                             "/api/v1/command on http listeners)")

    def makeService(self, listener: Listener, core: Core) -> IService:
        logs = self.logs(core)
        if listener.kind == "udp":
            from tsnet.protocols.atsd.udp import AtsdDatagramProtocol

            udp = AtsdDatagramProtocol(listener, core, logs, self.rules_now, self.bounded(core))
            return AtsdDatagramService(listener, udp, core.reactor, self, core)
        from tsnet.protocols.atsd.tcp import AtsdTcpFactory

        factory = AtsdTcpFactory(listener, core, logs, self.rules_now)
        return AtsdListenerService(listener, factory, core.reactor, self, core)

    def resources(self, core: Core) -> dict[bytes, IResource]:
        """``/api/v1/command`` and the read-back API."""
        from tsnet.protocols.atsd.http_command import CommandResource
        from tsnet.protocols.atsd.http_read import read_resources

        return {b"/api/v1/command": CommandResource(core, self.logs(core), self.rules_for,
                                                    self.log_period),
                **read_resources(core)}
