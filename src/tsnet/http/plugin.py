"""The `http` listener (the shared site) and the `metrics` API, as plugins."""

from __future__ import annotations

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from tsnet.config import Key, positive_int, word_list
from tsnet.http.site import DEFAULT_MAX_BODY, collect_routes, make_site
from tsnet.interfaces import IProtocolPlugin
from tsnet.listeners import ConnectionTracker, StreamListenerService
from tsnet.metrics import MetricsResource


def api_names(plugins: dict) -> list[str]:
    return sorted(n for n, p in plugins.items() if getattr(p, "provides_api", False))


@implementer(IPlugin, IProtocolPlugin)
class HttpPlugin:
    name = "http"
    description = "the shared HTTP site: mounts the APIs named by `apis`"
    transports = frozenset({"stream"})
    listener_keys = {
        "apis": Key(word_list, None, "the APIs to mount (default: every installed one)"),
        "max_body": Key(positive_int, DEFAULT_MAX_BODY, "bytes a request body may have"),
    }

    def check(self, listener: Any, config: Any, plugins: dict) -> None:
        """Called by config loading: every named API must be installed."""
        installed = api_names(plugins)
        for name in listener.options.get("apis") or ():
            if name not in installed:
                raise ValueError(f"apis: no installed plugin provides {name!r} "
                                 f"(installed: {', '.join(installed)})")

    def makeService(self, listener: Any, core: Any) -> Any:
        apis = listener.options.get("apis") or api_names(core.plugins)
        site = make_site(listener, core, collect_routes(apis, core.plugins, core))
        site.tracker = ConnectionTracker(listener, core, "http")
        return StreamListenerService(listener, site, core.reactor)

    def resources(self, core: Any) -> dict:
        return {}


@implementer(IPlugin, IProtocolPlugin)
class MetricsPlugin:
    name = "metrics"
    description = "GET /metrics: Prometheus text"
    transports = frozenset()
    listener_keys: dict = {}
    provides_api = True

    def makeService(self, listener: Any, core: Any) -> Any:  # pragma: no cover - no listener
        raise NotImplementedError("metrics is mounted on http listeners with apis = metrics")

    def resources(self, core: Any) -> dict:
        return {b"/metrics": MetricsResource(core.metrics)}
