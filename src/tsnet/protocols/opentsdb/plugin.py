"""The `opentsdb` protocol family as a tsnet plugin."""

from __future__ import annotations

from twisted.application.service import IService
from twisted.web.resource import IResource

from tsnet.plugin import (
    DEFAULT_MAX_BODY,
    Core,
    Key,
    Listener,
    ProtocolPlugin,
    StreamListenerService,
    as_bool,
    positive_int,
)
from tsnet.protocols.opentsdb.replies import OpenTSDBErrors


class OpenTSDBPlugin(ProtocolPlugin):
    name = "opentsdb"
    description = "OpenTSDB telnet put and HTTP API on one port (tcp:, ssl:, unix:)"
    transports = frozenset({"stream"})
    provides_api = True
    http_errors = OpenTSDBErrors()
    listener_keys = {
        "close_on_error": Key(as_bool, False, "close the connection after an error reply"),
        "max_body": Key(positive_int, DEFAULT_MAX_BODY, "bytes an HTTP request body may have"),
        "console": Key(as_bool, True, "serve the web console at / (when it is installed)"),
    }

    def makeService(self, listener: Listener, core: Core) -> IService:
        from tsnet.http.site import make_site
        from tsnet.protocols.opentsdb.telnet import TelnetFactory

        routes = self.resources(core)
        console = core.plugins.get("console")
        if console is not None and listener.options.get("console", True):
            # the web console at / (no OpenTSDB path); what the site itself
            # answers there (a 408, a 413) is in this port's dialect, as elsewhere
            routes.update(console.resources(core))
        site = make_site(listener, core, routes, default_errors=self.http_errors)
        return StreamListenerService(listener, TelnetFactory(listener, core, site), core.reactor)

    def resources(self, core: Core) -> dict[bytes, IResource]:
        """The OpenTSDB HTTP API, on `opentsdb` listeners and `http` listeners alike."""
        from tsnet.protocols.opentsdb.http_put import put_resources
        from tsnet.protocols.opentsdb.http_read import read_resources

        return {**put_resources(core), **read_resources(core)}
