"""The `opentsdb` protocol family as a tsnet plugin."""

from __future__ import annotations

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from tsnet.config import Key, as_bool, positive_int
from tsnet.http.site import DEFAULT_MAX_BODY
from tsnet.interfaces import IProtocolPlugin
from tsnet.listeners import StreamListenerService


@implementer(IPlugin, IProtocolPlugin)
class OpenTSDBPlugin:
    name = "opentsdb"
    description = "OpenTSDB telnet put and HTTP API on one port (tcp:, ssl:, unix:)"
    transports = frozenset({"stream"})
    provides_api = True
    listener_keys = {
        "close_on_error": Key(as_bool, False, "close the connection after an error reply"),
        "max_body": Key(positive_int, DEFAULT_MAX_BODY, "bytes an HTTP request body may have"),
    }

    def makeService(self, listener: Any, core: Any) -> Any:
        from tsnet.http.site import make_site
        from tsnet.protocols.opentsdb.telnet import TelnetFactory

        factory = TelnetFactory(listener, core, make_site(listener, core, self.resources(core)))
        return StreamListenerService(listener, factory, core.reactor)

    def resources(self, core: Any) -> dict:
        """The OpenTSDB HTTP API, on `opentsdb` listeners and `http` listeners alike."""
        from tsnet.protocols.opentsdb.http_put import put_resources
        from tsnet.protocols.opentsdb.http_read import read_resources

        return {**put_resources(core), **read_resources(core)}
