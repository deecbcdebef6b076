"""The `opentsdb` protocol family as a tsnet plugin."""

from __future__ import annotations

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from tsnet.config import Key, as_bool
from tsnet.interfaces import IProtocolPlugin
from tsnet.listeners import StreamListenerService


@implementer(IPlugin, IProtocolPlugin)
class OpenTSDBPlugin:
    name = "opentsdb"
    description = "OpenTSDB telnet-style put (tcp:, ssl:, unix: endpoints)"
    transports = frozenset({"stream"})
    listener_keys = {
        "close_on_error": Key(as_bool, False, "close the connection after an error reply"),
    }

    def makeService(self, listener: Any, core: Any) -> Any:
        from tsnet.protocols.opentsdb.telnet import TelnetFactory

        return StreamListenerService(listener, TelnetFactory(listener, core), core.reactor)

    def resources(self, core: Any) -> dict:
        return {}
