"""Real tsnet service trees (what ``twistd tsnet`` builds), on free loopback
ports, for tsnet's tests and third-party plugins' alike.

In a conftest.py: ``pytest_plugins = ["tsnet.testing.fixtures"]``; then
``make_server(config_text)`` or ``serve_plugin(plugin)`` in a test (both are
fixtures returning a function that gives a Deferred of a started `Server`;
every server is stopped after the test).  Outside pytest, `start_server` does
the same and `Server.stop` tears it down.

The store: `make_server` (and `start_server`'s ``storage``) puts the body of
the ``storage_config`` fixture (default `SQLITE_STORAGE`, ``backend = sqlite``)
in place of `BASE_CONFIG`'s ``[storage:default]`` section, in any config text
that still has that section as it is; other configs are served as written.  A
test module runs on every backend by overriding it with ``each_backend`` from
`tsnet.testing.redis` (its tests are then ids ``[sqlite]`` and ``[redis]``)::

    @pytest.fixture
    def storage_config(each_backend: str) -> str:
        return each_backend
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from tsnet.config import load_config
from tsnet.plugins import load_plugins
from tsnet.service import TsnetService

SQLITE_STORAGE = "backend = sqlite\n"
#: the section of BASE_CONFIG that `with_storage` replaces
STORAGE_SECTION = "[storage:default]\n" + SQLITE_STORAGE

BASE_CONFIG = f"""
[tsnet]
data_dir = var
flush_interval = 0.05

{STORAGE_SECTION}
[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = metrics
"""


class Server:
    """A started TsnetService and what tests need of it."""

    def __init__(self, service: TsnetService, config_path: Path) -> None:
        self.service = service
        self.core = service.core
        self.config_path = config_path

    def port(self, listener: str) -> int:
        """The bound port of ``[listener:NAME]`` (the config said 0)."""
        return self.service.getServiceNamed(f"listener:{listener}").port.getHost().port

    def stop(self) -> defer.Deferred:
        """Stop as SIGTERM would: stop accepting, commit, close storage."""
        if not self.service.running:
            return defer.succeed(None)
        return defer.maybeDeferred(self.service.stopService)

    def flush(self) -> defer.Deferred:
        return self.core.ingest.flush()

    def export(self, solution: str | None = None) -> defer.Deferred:
        lines: list[dict] = []
        backend = self.core.storages.backend_for(solution or "default")
        return backend.export(solution, lines.append).addCallback(lambda _: lines)


@defer.inlineCallbacks
def make_token(server: Server, solution: str = "iot", **kw: Any) -> Any:
    """A token (as `tsnet token create` mints it) in ``solution``, created if
    needed; returns (record, secrets by role)."""
    from tsnet.auth import mint_token
    from tsnet.records import SolutionRecord

    cat = server.core.catalog
    if (yield cat.get_solution(solution)) is None:
        yield cat.create_solution(SolutionRecord(name=solution))
        yield server.core.storages.refresh()
    rec, secrets = mint_token(solution, **kw)
    yield cat.save_token(rec)
    return rec, secrets


def with_storage(text: str, storage: str) -> str:
    """``text`` with ``storage`` (a section body such as ``backend = redis\\nurl
    = redis://...``) in place of BASE_CONFIG's ``[storage:default]`` body, if
    ``text`` has that section as BASE_CONFIG has it (`STORAGE_SECTION` and a
    blank line); any other text is returned as it is."""
    body = textwrap.dedent(storage).strip("\n") + "\n"
    return text.replace(STORAGE_SECTION + "\n", f"[storage:default]\n{body}\n", 1)


def write_config(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tsnet.ini"
    path.write_text(textwrap.dedent(text))
    return path


@defer.inlineCallbacks
def start_server(directory: Path, text: str = BASE_CONFIG, reactor: Any = None,
                 plugins: Mapping[str, Any] | None = None,
                 storage: str | None = None) -> Any:
    """Deferred[Server]: ``text`` written as ``DIRECTORY/tsnet.ini`` and served
    once every listener is bound.  ``plugins`` are added to the installed ones
    (a plugin under test need not be installed yet); ``storage``, if given, is
    the ``[storage:default]`` body to serve instead of BASE_CONFIG's sqlite one
    (see `with_storage`)."""
    if reactor is None:
        from twisted.internet import reactor
    if storage is not None:
        text = with_storage(text, storage)
    path = write_config(directory, text)
    found = {**load_plugins(), **(plugins or {})}
    config = load_config(str(path), found, reactor)
    service = TsnetService(config, found, reactor)
    service.startService()
    try:
        yield service.started
    except Exception:
        if service.running:
            yield defer.maybeDeferred(service.stopService)
        raise
    return Server(service, path)


def plugin_config(plugin: Any, **listener_keys: str) -> str:
    """A config serving ``plugin`` on port 0 of 127.0.0.1: a listener named
    after it when it has transports (udp only if it cannot do stream), and an
    ``http`` listener mounting it and ``metrics`` when it provides an API."""
    text = BASE_CONFIG.split("[listener:opentsdb]")[0]
    if plugin.transports:
        endpoint = "tcp:0:interface=127.0.0.1" if "stream" in plugin.transports else "udp:0"
        text += f"[listener:{plugin.name}]\nprotocol = {plugin.name}\nendpoint = {endpoint}\n"
        text += "".join(f"{k} = {v}\n" for k, v in listener_keys.items())
    apis = f"{plugin.name} metrics" if plugin.provides_api else "metrics"
    text += f"[listener:http]\nprotocol = http\nendpoint = tcp:0:interface=127.0.0.1\n" \
            f"apis = {apis}\n"
    return text


@pytest.fixture
def storage_config() -> str:
    """The ``[storage:default]`` body `make_server` serves: `SQLITE_STORAGE`.
    Override it in a module or class (``each_backend`` runs both backends)."""
    return SQLITE_STORAGE


@pytest.fixture
def make_server(tmp_path: Path, storage_config: str) -> Any:
    """``await make_server(config_text, name="srv", plugins=None)`` -> a started
    `Server` on the ``storage_config`` store, stopped after the test."""
    started: list[Server] = []

    @defer.inlineCallbacks
    def make(text: str = BASE_CONFIG, name: str = "srv",
             plugins: Mapping[str, Any] | None = None) -> Any:
        server = yield start_server(tmp_path / name, text, plugins=plugins,
                                    storage=storage_config)
        started.append(server)
        return server

    yield make
    for s in reversed(started):
        pytest_twisted.blockon(s.stop())


@pytest.fixture
def serve_plugin(make_server: Any) -> Any:
    """``await serve_plugin(plugin, **listener_keys)`` -> a started `Server`
    with ``plugin`` on port 0 (see `plugin_config`), stopped after the test."""

    def serve(plugin: Any, **listener_keys: str) -> defer.Deferred:
        return make_server(plugin_config(plugin, **listener_keys), name=f"serve-{plugin.name}",
                           plugins={plugin.name: plugin})

    return serve


@pytest.fixture
def server(make_server: Any) -> Any:
    return pytest_twisted.blockon(make_server())
