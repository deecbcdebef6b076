"""The `tsstore` family as a tsnet plugin: the REST and WebSocket routes on
``http`` listeners, the Unix-socket listener, and the family service that
keeps the stores (and their outbound connections) of one server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import IResource
from zope.interface import implementer

from tsnet.plugin import Config, IImportKinds, Key, Listener, ProtocolPlugin, positive_int

if TYPE_CHECKING:
    from tsnet.core import Core
    from tsnet.protocols.tsstore.stores import Stores

log = Logger(namespace="tsnet.tsstore")

ADMIN_ENV = "TSSTORE_ADMIN_KEY"
SOCKET_ENV = "TSSTORE_SOCKET_PATH"
MIN_ADMIN_KEY = 20


def _admin_key(text: str) -> str:
    return text.strip()


def admin_key(config: Config) -> str:
    """``TSSTORE_ADMIN_KEY`` (when set and not empty), else ``[tsstore] admin_key``."""
    return os.environ.get(ADMIN_ENV) or config.sections.get("tsstore", {}).get("admin_key", "")


def admin_key_file(config: Config) -> str | None:
    """``[tsstore] admin_key_file`` made absolute (relative to the config's folder)."""
    path = config.sections.get("tsstore", {}).get("admin_key_file") or None
    return os.path.join(config.directory, path) if path else None


def load_admin_key_file(path: str) -> str:
    """The admin key kept in ``path``; a new random one (mode 0600) when the
    file does not exist yet, so a fresh install has a key nobody else knows."""
    import secrets

    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(32)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    log.info("wrote a new ts-store admin key to {path}", path=path)
    return key


def _block_size(text: str) -> int:
    from tsnet.protocols.tsstore.ring import valid_block_size

    n = positive_int(text)
    if not valid_block_size(n):
        raise ValueError(f"must be a power of 2 and at least 64, got {text!r}")
    return n


class StoresService(Service):
    """The stores of one server: stores with outbound connections open when it
    starts (so the connections run, spec §1's recommendation); every open
    store's connections stop with it."""

    name = "tsstore"

    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    @defer.inlineCallbacks
    def startService(self) -> Any:
        Service.startService(self)
        from tsnet.protocols.tsstore.stores import hash_key

        settings = self.stores.settings
        path = admin_key_file(self.stores.core.config)
        if settings.admin_hash is None and path is not None:
            key = load_admin_key_file(path)
            if len(key) < MIN_ADMIN_KEY:
                log.error("the ts-store admin key in {path} has fewer than {n} characters: "
                          "POST /api/stores refuses every key", path=path, n=MIN_ADMIN_KEY)
            else:
                settings.admin_hash = hash_key(key)
        recs = yield self.stores.core.catalog.list_solutions()
        from tsnet.protocols.tsstore.stores import ATTRIBUTE

        for rec in recs:
            if rec.attributes.get(ATTRIBUTE, {}).get("connections"):
                try:
                    yield self.stores.open(rec.name)
                except Exception:
                    log.failure("opening store {store} failed", store=rec.name)

    def stopService(self) -> Any:
        Service.stopService(self)
        waits = [d for d in self.stores.close_all() if isinstance(d, defer.Deferred)]
        return defer.DeferredList(waits, consumeErrors=True)


@implementer(IImportKinds)
class TsstorePlugin(ProtocolPlugin):
    name = "tsstore"
    description = ("ts-store: stores over REST and WebSocket (/api/stores), a Unix socket,"
                   " outbound WebSocket pull and push")
    transports = frozenset({"stream"})
    provides_api = True
    config_sections = {"tsstore": {
        "admin_key": Key(_admin_key, "", "the key of POST /api/stores (20+ characters; "
                                         "TSSTORE_ADMIN_KEY overrides it)"),
        "admin_key_file": Key(str, "", "or: a file holding it, made with a random key "
                                       "(mode 0600) when missing"),
        "num_blocks": Key(positive_int, 1024, "blocks of a new store unless it says"),
        "data_block_size": Key(_block_size, 4096, "bytes a data block of a new store has"),
        "index_block_size": Key(_block_size, 4096, "bytes an index block of a new store has"),
    }}

    def __init__(self) -> None:
        from tsnet.protocols.tsstore.rest import ERRORS

        self.http_errors = ERRORS
        self._stores: dict[int, tuple[Any, Stores]] = {}  # by id(core)

    def check(self, listener: Listener, config: Config,
              plugins: Mapping[str, Any]) -> None:
        if listener.protocol == self.name:
            if not listener.endpoint.startswith("unix:"):
                raise ValueError("endpoint: a tsstore listener is a Unix socket "
                                 "(unix:PATH:mode=660); mount the REST API with "
                                 "apis = tsstore on an http listener")
            if listener.auth != "none":
                raise ValueError("auth: a tsstore socket takes the store and key from "
                                 "each AUTH line")
            return
        key = admin_key(config)
        if not key and admin_key_file(config) is not None:
            return
        if not key:
            raise ValueError(f"apis: tsstore needs [tsstore] admin_key or admin_key_file "
                             f"(or {ADMIN_ENV})")
        if len(key) < MIN_ADMIN_KEY:
            raise ValueError(f"[tsstore] admin_key: must have at least {MIN_ADMIN_KEY} "
                             "characters")

    def stores_for(self, core: Core) -> Stores:
        """The stores of the server ``core`` belongs to (one set per server)."""
        from tsnet.protocols.tsstore.stores import Settings, Stores, hash_key

        held = self._stores.get(id(core))
        if held is not None and held[0] is core:
            return held[1]
        section = core.config.sections.get("tsstore", {})
        key = admin_key(core.config)
        settings = Settings(
            admin_hash=hash_key(key) if len(key) >= MIN_ADMIN_KEY else None,
            num_blocks=section.get("num_blocks", 1024),
            data_block_size=section.get("data_block_size", 4096),
            index_block_size=section.get("index_block_size", 4096),
        )
        stores = Stores(core, settings)
        self._stores[id(core)] = (core, stores)
        from tsnet.protocols.tsstore.series import store_series_view

        core.storages.add_series_view(store_series_view(core.reactor))
        return stores

    def addCommands(self, subparsers: Any) -> dict:
        from tsnet.protocols.tsstore.commands import add_commands

        return add_commands(subparsers)

    #: what ``tsnet import`` leaves to the family (`IImportKinds`)
    import_kinds = frozenset(("store", "record"))

    def importer(self, storages: Any, storage: str) -> Any:
        from tsnet.protocols.tsstore.restore import StoreImporter

        return StoreImporter(storages, storage)

    def makeFamilyService(self, core: Core) -> IService:
        return StoresService(self.stores_for(core))

    def resources(self, core: Core) -> dict[bytes, IResource]:
        from tsnet.protocols.tsstore.rest import HealthResource, StoresResource

        stores = self.stores_for(core)
        api = StoresResource(stores, ws_write=self._ws_write(core, stores),
                             connections=self._connections(core, stores))
        return {b"/api/stores": api, b"/api/stores/*": api, b"/health": HealthResource()}

    def _ws_write(self, core: Core, stores: Stores) -> Any:
        """The WebSocket write route (spec §6)."""
        from tsnet.protocols.tsstore.ws_write import WriteResource

        return WriteResource(core, stores)

    def _connections(self, core: Core, stores: Stores) -> Any:
        """The outbound connections (spec §8) of the server's stores."""
        from tsnet.protocols.tsstore.connections import Connections

        return Connections.for_stores(core, stores)

    def makeService(self, listener: Listener, core: Core) -> IService:
        from tsnet.protocols.tsstore.unix import make_socket_service

        return make_socket_service(listener, core, self.stores_for(core),
                                   os.environ.get(SOCKET_ENV))
