"""The public plugin API of tsnet: everything a protocol family or a storage
backend may use, importable from this one module.

A third-party distribution ships a module in its own ``tsnet/plugins/`` folder
(no ``__init__.py`` there) holding instances of `ProtocolPlugin` or
`StorageBackend` subclasses.  It imports from ``tsnet.plugin`` only; the names
in ``__all__`` are the pinned surface (a test checks it), and anything else in
tsnet may change without notice.  README.rst, "Writing a plugin", walks through
the example distribution in ``examples/tsnet-lineproto``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from twisted.application.service import IService
from twisted.plugin import IPlugin
from twisted.web.resource import IResource
from zope.interface import implementer

from tsnet.cli import CommandError
from tsnet.config import (
    Config,
    Key,
    Listener,
    StorageConfig,
    as_bool,
    non_negative_float,
    one_of,
    positive_float,
    positive_int,
    word_list,
)
from tsnet.core import Core
from tsnet.errors import (
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    Overloaded,
    StorageUnavailable,
    TooManyPoints,
    TsnetError,
    Unauthorized,
)
from tsnet.export import (
    message_line,
    meta_line,
    property_line,
    record_line,
    series_lines,
    store_line,
)
from tsnet.http.bodies import BodyError, BodyTooLarge, request_body
from tsnet.http.credentials import (
    core_of,
    header_secrets,
    listener_of,
    principal_for,
    request_secrets,
)
from tsnet.http.replies import PLAIN_ERRORS, send_error
from tsnet.http.site import DEFAULT_MAX_BODY
from tsnet.http.websocket import WebSocketResource
from tsnet.import_lines import ImportStep
from tsnet.interfaces import (
    IAuthenticator,
    IBoundedReads,
    ICatalog,
    ICore,
    IExpiringStorage,
    IExportText,
    IFastPost,
    IHTTPErrors,
    IImporter,
    IImportKinds,
    IIngest,
    IMetrics,
    IPointSink,
    IProtocolPlugin,
    ISeriesByKey,
    IStorage,
    IStorageBackend,
    IStorages,
    ITagIndex,
)
from tsnet.listeners import (
    ConnectionTracker,
    DatagramListenerService,
    FlowControlled,
    LineDeadline,
    StreamListenerService,
)
from tsnet.logbound import LogBound
from tsnet.model import (
    INT64_MAX,
    INT64_MIN,
    READ,
    WRITE,
    Batch,
    Column,
    Message,
    Meta,
    Principal,
    Property,
    Record,
    SampleSet,
    SeriesKey,
    Value,
    WriteBatch,
    anonymous,
    series_key,
)
from tsnet.outbound import OutboundService, Target, client_tls_options, parse_target
from tsnet.records import Credential, SolutionRecord, TokenRecord
from tsnet.storage.rules import (
    ENTITY_TAGS,
    META_KINDS,
    check_meta_kind,
    check_tags,
    entity_tags_meta,
    implicit_entities,
    implicit_meta_of_series,
    merge_meta_fields,
    merge_tags,
    series_sort_key,
)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@implementer(IPlugin, IProtocolPlugin)
class ProtocolPlugin:
    """Base class of a protocol family: subclass it, set ``name`` and
    ``description``, and override what the family provides (``makeService``
    for listeners, ``resources`` for HTTP routes).  Every attribute of
    `IProtocolPlugin` has a default here, so instances pass `verifyObject`."""

    name: str = ""
    description: str = ""
    transports: frozenset[str] = frozenset()
    listener_keys: Mapping[str, Key] = _EMPTY
    config_sections: Mapping[str, Mapping[str, Key]] = _EMPTY
    provides_api: bool = False
    http_errors: IHTTPErrors | None = None

    def check(self, listener: Listener, config: Config,
              plugins: Mapping[str, IProtocolPlugin]) -> None:
        """Nothing more to check by default."""

    def makeService(self, listener: Listener, core: Core) -> IService:
        raise ConfigError(f"{self.name!r} has no listeners: mount it on an http listener "
                          f"with apis = {self.name}")

    def makeFamilyService(self, core: Core) -> IService | None:
        return None

    def addCommands(self, subparsers: Any) -> dict:
        return {}

    def resources(self, core: Core) -> dict[bytes, IResource]:
        return {}


@implementer(IPlugin, IStorageBackend)
class StorageBackend:
    """Base class of a storage backend plugin (``backend = NAME``): subclass it
    and implement ``makeStorage``; the storage it builds must pass
    `tsnet.testing.conformance.StorageConformance`."""

    name: str = ""
    description: str = ""
    storage_keys: Mapping[str, Key] = _EMPTY

    def check(self, storage: StorageConfig, config: Config) -> None:
        """Nothing more to check by default."""

    def makeStorage(self, storage: StorageConfig, reactor: Any) -> IStorage:
        raise NotImplementedError(f"storage backend {self.name!r} must implement makeStorage")


__all__ = [
    "DEFAULT_MAX_BODY",
    "ENTITY_TAGS",
    "INT64_MAX",
    "INT64_MIN",
    "META_KINDS",
    "PLAIN_ERRORS",
    "READ",
    "WRITE",
    "Batch",
    "BodyError",
    "BodyTooLarge",
    "Column",
    "CommandError",
    "Config",
    "ConfigError",
    "Conflict",
    "ConnectionTracker",
    "Core",
    "Credential",
    "DatagramListenerService",
    "FlowControlled",
    "Forbidden",
    "IAuthenticator",
    "IBoundedReads",
    "ICatalog",
    "ICore",
    "IExpiringStorage",
    "IExportText",
    "IFastPost",
    "IHTTPErrors",
    "IImportKinds",
    "IImporter",
    "IIngest",
    "IMetrics",
    "IPointSink",
    "IProtocolPlugin",
    "ISeriesByKey",
    "IStorage",
    "IStorageBackend",
    "IStorages",
    "ITagIndex",
    "ImportStep",
    "Key",
    "LineDeadline",
    "Listener",
    "LogBound",
    "Message",
    "Meta",
    "NotFound",
    "OutboundService",
    "Overloaded",
    "Principal",
    "Property",
    "ProtocolPlugin",
    "Record",
    "SampleSet",
    "SeriesKey",
    "SolutionRecord",
    "StorageBackend",
    "StorageConfig",
    "StorageUnavailable",
    "StreamListenerService",
    "Target",
    "TokenRecord",
    "TooManyPoints",
    "TsnetError",
    "Unauthorized",
    "Value",
    "WebSocketResource",
    "WriteBatch",
    "anonymous",
    "as_bool",
    "check_meta_kind",
    "check_tags",
    "client_tls_options",
    "core_of",
    "entity_tags_meta",
    "header_secrets",
    "implicit_entities",
    "implicit_meta_of_series",
    "listener_of",
    "merge_meta_fields",
    "merge_tags",
    "message_line",
    "meta_line",
    "non_negative_float",
    "one_of",
    "parse_target",
    "positive_float",
    "positive_int",
    "principal_for",
    "property_line",
    "record_line",
    "request_body",
    "request_secrets",
    "send_error",
    "series_key",
    "series_lines",
    "series_sort_key",
    "store_line",
    "word_list",
]
