"""The public plugin API, `tsnet.plugin`: its surface is pinned (as klein pins
its own), every name resolves, and the objects a running server hands to
plugins provide the interfaces the API declares."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from zope.interface.verify import verifyObject

import tsnet.plugin

#: Adding a name here is a promise to third parties; removing or renaming one
#: breaks them.  Change this list only with a note in README.rst.
PINNED = [
    "DEFAULT_MAX_BODY", "ENTITY_TAGS", "INT64_MAX", "INT64_MIN", "PLAIN_ERRORS", "READ",
    "WRITE", "Batch", "Column", "Config", "ConfigError", "Conflict", "ConnectionTracker",
    "Core", "Credential", "DatagramListenerService", "Forbidden", "IAuthenticator",
    "ICatalog", "ICore", "IFastPost", "IHTTPErrors", "IIngest", "IMetrics", "IPointSink",
    "IProtocolPlugin", "IStorage", "IStorageBackend", "IStorages", "Key", "Listener",
    "Message", "Meta", "NotFound", "Overloaded", "Principal", "Property", "ProtocolPlugin",
    "Record", "SampleSet", "SeriesKey", "SolutionRecord", "StorageBackend", "StorageConfig",
    "StreamListenerService", "TokenRecord", "TsnetError", "Unauthorized", "Value",
    "WriteBatch", "anonymous", "as_bool", "core_of", "entity_tags_meta", "header_secrets",
    "implicit_entities", "implicit_meta_of_series", "listener_of", "merge_meta_fields",
    "merge_tags", "message_line", "meta_line", "non_negative_float", "one_of",
    "positive_float", "positive_int", "principal_for", "property_line", "record_line",
    "request_secrets", "send_error", "series_key", "series_lines", "store_line", "word_list",
    "OutboundService", "Target", "WebSocketResource", "client_tls_options", "parse_target",
    "BodyError", "BodyTooLarge", "request_body", "META_KINDS", "check_meta_kind", "check_tags",
    "series_sort_key", "FlowControlled", "StorageUnavailable", "CommandError", "LogBound",
    "LineDeadline", "IBoundedReads", "TooManyPoints", "IExportText", "IImportKinds", "IImporter",
    "ImportStep", "IExpiringStorage", "ISeriesByKey", "ITagIndex",
]


def test_the_public_surface_is_pinned() -> None:
    assert sorted(tsnet.plugin.__all__) == sorted(PINNED)
    assert len(set(tsnet.plugin.__all__)) == len(tsnet.plugin.__all__)


def test_every_public_name_resolves_and_says_what_it_is() -> None:
    for name in tsnet.plugin.__all__:
        obj = getattr(tsnet.plugin, name)
        if callable(obj) and not name.isupper() and name not in ("SeriesKey", "Value"):
            assert obj.__doc__, f"tsnet.plugin.{name} has no docstring"


def test_star_import_gives_exactly_the_surface() -> None:
    namespace: dict[str, Any] = {}
    exec("from tsnet.plugin import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(PINNED)


def test_base_classes_pass_verify_object() -> None:
    class Minimal(tsnet.plugin.ProtocolPlugin):
        name = "minimal"
        description = "nothing but a name"

    class Store(tsnet.plugin.StorageBackend):
        name = "store"
        description = "nothing but a name"

    assert verifyObject(tsnet.plugin.IProtocolPlugin, Minimal())
    assert verifyObject(tsnet.plugin.IStorageBackend, Store())


@pytest_twisted.inlineCallbacks
def test_what_plugins_are_handed_provides_the_declared_interfaces(make_server: Any) -> None:
    server = yield make_server()
    core = server.core
    p = tsnet.plugin
    assert verifyObject(p.ICore, core)
    assert verifyObject(p.IIngest, core.ingest)
    assert verifyObject(p.IPointSink, core.ingest.sink(p.anonymous("default"), "t"))
    assert verifyObject(p.IAuthenticator, core.auth)
    assert verifyObject(p.IStorages, core.storage)
    assert verifyObject(p.IMetrics, core.metrics)
    assert verifyObject(p.ICatalog, core.catalog)
    for backend in core.storage.backends.values():
        assert verifyObject(p.IStorage, backend)
    for plugin in core.plugins.values():
        assert verifyObject(p.IProtocolPlugin, plugin)
        if plugin.http_errors is not None:
            assert verifyObject(p.IHTTPErrors, plugin.http_errors)
    put = core.plugins["opentsdb"].resources(core)[b"/api/put"]
    assert verifyObject(p.IFastPost, put)
