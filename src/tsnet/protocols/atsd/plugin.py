"""The `atsd` protocol family as a tsnet plugin: TCP and UDP listeners, and
the HTTP command and read-back routes on ``http`` listeners."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService
from twisted.web.resource import IResource

from tsnet.plugin import (
    Config,
    DatagramListenerService,
    IProtocolPlugin,
    Key,
    Listener,
    ProtocolPlugin,
    StreamListenerService,
    as_bool,
)

if TYPE_CHECKING:
    from tsnet.core import Core
    from tsnet.protocols.atsd.commandlog import CommandLogs


class AtsdListenerService(StreamListenerService):
    """A TCP listener that writes its command logs out when it stops."""

    def stopService(self) -> Any:
        d = super().stopService()
        self.factory.logs.flush()
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
    }

    def __init__(self) -> None:
        from tsnet.protocols.atsd.http_command import AtsdErrors

        self.http_errors = AtsdErrors()
        self._logs: dict[str, CommandLogs] = {}  # by data directory

    def logs(self, core: Core) -> CommandLogs:
        """The command logs of the server's data directory (one per directory)."""
        from tsnet.protocols.atsd.commandlog import CommandLogs

        d = core.config.data_dir
        logs = self._logs.get(d)
        if logs is None:
            logs = self._logs[d] = CommandLogs(d, core.reactor)
        return logs

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

            return DatagramListenerService(listener, AtsdDatagramProtocol(listener, core, logs),
                                           core.reactor)
        from tsnet.protocols.atsd.tcp import AtsdTcpFactory

        return AtsdListenerService(listener, AtsdTcpFactory(listener, core, logs), core.reactor)

    def resources(self, core: Core) -> dict[bytes, IResource]:
        """``/api/v1/command`` and the read-back API."""
        from tsnet.protocols.atsd.http_command import CommandResource
        from tsnet.protocols.atsd.http_read import read_resources

        return {b"/api/v1/command": CommandResource(core, self.logs(core)),
                **read_resources(core)}
