"""The `http` listener (the shared site) and the `metrics` API, as plugins."""

from __future__ import annotations

from collections.abc import Mapping

from twisted.application.service import IService
from twisted.web.resource import IResource

from tsnet.config import Config, Key, Listener, one_of, positive_int, word_list
from tsnet.core import Core
from tsnet.http.site import DEFAULT_MAX_BODY, collect_routes, make_site
from tsnet.interfaces import IProtocolPlugin
from tsnet.listeners import ConnectionTracker, StreamListenerService
from tsnet.metrics import MetricsResource
from tsnet.plugin import ProtocolPlugin


def api_names(plugins: Mapping[str, IProtocolPlugin]) -> list[str]:
    """The installed plugins that `apis =` may name."""
    return sorted(n for n, p in plugins.items() if p.provides_api)


class HttpPlugin(ProtocolPlugin):
    name = "http"
    description = "the shared HTTP site: mounts the APIs named by `apis`"
    transports = frozenset({"stream"})
    listener_keys = {
        "apis": Key(word_list, None, "the APIs to mount (default: every installed one)"),
        "max_body": Key(positive_int, DEFAULT_MAX_BODY, "bytes a request body may have"),
        "metrics_auth": Key(one_of("none", "token"), None,
                            "none, or token: GET /metrics needs a READ token "
                            "(default: as the listener's auth)"),
    }

    def check(self, listener: Listener, config: Config,
              plugins: Mapping[str, IProtocolPlugin]) -> None:
        """Every named API must be installed."""
        if listener.protocol != self.name:
            return
        installed = api_names(plugins)
        for name in listener.options.get("apis") or ():
            if name not in installed:
                raise ValueError(f"apis: no installed plugin provides {name!r} "
                                 f"(installed: {', '.join(installed)})")

    def makeService(self, listener: Listener, core: Core) -> IService:
        apis = listener.options.get("apis") or api_names(core.plugins)
        routes, errors = collect_routes(apis, core.plugins, core)
        site = make_site(listener, core, routes, errors)
        site.tracker = ConnectionTracker(listener, core, "http")
        return StreamListenerService(listener, site, core.reactor)


class MetricsPlugin(ProtocolPlugin):
    name = "metrics"
    description = "GET /metrics: Prometheus text"
    provides_api = True

    def resources(self, core: Core) -> dict[bytes, IResource]:
        return {b"/metrics": MetricsResource(core.metrics)}
