"""Fixtures that build a real tsnet service tree (makeService's), on port 0."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from tsnet.config import load_config
from tsnet.plugins import load_plugins
from tsnet.service import TsnetService

BASE_CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.05

[storage:default]
backend = sqlite

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
        return self.service.getServiceNamed(f"listener:{listener}").port.getHost().port

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


def write_config(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tsnet.ini"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def make_server(tmp_path: Path) -> Any:
    """``await make_server(config_text)`` -> a started Server; stopped after the test."""
    from twisted.internet import reactor

    started: list[TsnetService] = []

    @defer.inlineCallbacks
    def make(text: str = BASE_CONFIG, name: str = "srv") -> Any:
        path = write_config(tmp_path / name, text)
        plugins = load_plugins()
        config = load_config(str(path), plugins, reactor)
        service = TsnetService(config, plugins, reactor)
        service.startService()
        started.append(service)
        yield service.started
        return Server(service, path)

    yield make
    for s in reversed(started):
        if s.running:
            pytest_twisted.blockon(defer.maybeDeferred(s.stopService))


@pytest.fixture
def server(make_server: Any) -> Any:
    return pytest_twisted.blockon(make_server())
