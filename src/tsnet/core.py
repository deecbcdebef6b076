"""The core: the shared services every plugin is handed, and how they are built.

Plugins get nothing global: the reactor, the one write path, the
authenticator, the storage read side, the metrics and the config all come
through this object (`tsnet.interfaces.ICore`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zope.interface import implementer

from tsnet.auth import TokenAuthenticator
from tsnet.config import Config
from tsnet.ingest import Ingest
from tsnet.interfaces import ICore
from tsnet.metrics import Metrics
from tsnet.storages import Storages


@implementer(ICore)
@dataclass
class Core:
    """What every plugin is handed (see `ICore`)."""

    config: Config
    reactor: Any
    storages: Storages
    auth: TokenAuthenticator
    ingest: Ingest
    metrics: Metrics
    plugins: Mapping[str, Any]

    @property
    def storage(self) -> Storages:
        """The read side: ``storage.backend_for(solution).read_series(...)``."""
        return self.storages

    @property
    def catalog(self) -> Any:
        """Solutions and tokens (the default storage's `ICatalog`)."""
        return self.storages.catalog


def build_ingest(config: Config, storages: Storages, reactor: Any, metrics: Metrics) -> Ingest:
    """The write queue the ``[tsnet]`` keys describe (the server's, and
    ``tsnet import``'s)."""
    return Ingest(
        storages, reactor, metrics,
        flush_interval=config.flush_interval, batch_size=config.batch_size,
        high_watermark=config.high_watermark, low_watermark=config.low_watermark,
        max_queue=config.max_queue, ack_timeout=config.storage_wait,
    )


def build_core(config: Config, plugins: Mapping[str, Any], reactor: Any) -> Core:
    """The shared services of one server, not yet started."""
    storages = Storages(config, reactor)
    metrics = Metrics()
    ingest = build_ingest(config, storages, reactor, metrics)
    metrics.watch_queue(ingest)
    auth = TokenAuthenticator(storages.catalog, reactor, refresh=config.auth_refresh)
    return Core(config=config, reactor=reactor, storages=storages, auth=auth, ingest=ingest,
                metrics=metrics, plugins=plugins)
