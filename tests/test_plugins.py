"""A third-party protocol plugin, installed only by being on sys.path, configured
as a listener and spoken to over a real socket; a broken one is skipped."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.helpers.clients import connect_line
from tsnet.plugins import load_plugins, load_storage_backends

ECHO_PLUGIN = '''
"""A throwaway third-party family: 'put NAME VALUE' lines, answered 'stored'."""
from twisted.internet.protocol import Protocol

from tsnet.plugin import (
    Batch,
    ConnectionTracker,
    Key,
    ProtocolPlugin,
    SampleSet,
    StreamListenerService,
    anonymous,
    series_key,
)


class Upper(Protocol):
    def dataReceived(self, data):
        f = self.factory
        s = SampleSet()
        for line in data.decode().splitlines():
            name, value = line.split()[1:3]
            s.add(series_key(name, {"via": f.listener.options["tag"]}), 10**18, int(value))
        d = f.core.ingest.submit(Batch(samples=s), anonymous(f.listener.solution), "echo")
        n = s.count
        d.addCallback(lambda _: self.transport.write(b"stored\\n" * n))


class Factory(ConnectionTracker):
    def buildProtocol(self, addr):
        p = Upper()
        p.factory = self
        return p


class EchoPlugin(ProtocolPlugin):
    name = "echo"
    description = "test plugin"
    transports = frozenset({"stream"})
    listener_keys = {"tag": Key(str, "none")}

    def makeService(self, listener, core):
        return StreamListenerService(listener, Factory(listener, core, "echo"), core.reactor)


echo = EchoPlugin()
'''

#: provides IProtocolPlugin by declaration but lacks most of it: verifyObject
#: refuses it, and it is skipped with its name and the missing attribute
INCOMPLETE_PLUGIN = '''
from twisted.plugin import IPlugin
from zope.interface import implementer

from tsnet.plugin import IProtocolPlugin


@implementer(IPlugin, IProtocolPlugin)
class Half:
    name = "half"
    description = "declares the interface, implements a part of it"
    transports = frozenset({"stream"})

    def makeService(self, listener, core):
        raise AssertionError("never loaded")


half = Half()
'''


#: a third-party plugin that takes a built-in family's name: ignored, with a warning
IMPOSTOR_PLUGIN = '''
from tsnet.plugin import ProtocolPlugin


class Impostor(ProtocolPlugin):
    name = "opentsdb"
    description = "not the real one"
    transports = frozenset({"stream"})


impostor = Impostor()
'''


@pytest.fixture
def third_party(tmp_path: Path) -> Any:
    site = tmp_path / "site"
    folder = site / "tsnet" / "plugins"  # no __init__.py: a plugin folder, not a package
    folder.mkdir(parents=True)
    (folder / "echo_tsnet.py").write_text(ECHO_PLUGIN)
    (folder / "broken_tsnet.py").write_text("raise ImportError('this plugin is broken')\n")
    (folder / "half_tsnet.py").write_text(INCOMPLETE_PLUGIN)
    (folder / "impostor_tsnet.py").write_text(IMPOSTOR_PLUGIN)
    sys.path.insert(0, str(site))
    yield folder
    sys.path.remove(str(site))


def test_discovery_finds_builtins() -> None:
    plugins = load_plugins()
    assert {"opentsdb", "http", "metrics"} <= set(plugins)
    assert set(load_storage_backends()) >= {"sqlite"}


def test_builtins_pass_verify_object() -> None:
    from zope.interface.verify import verifyObject

    from tsnet.plugin import IProtocolPlugin, IStorageBackend

    for p in load_plugins().values():
        assert verifyObject(IProtocolPlugin, p)
    for b in load_storage_backends().values():
        assert verifyObject(IStorageBackend, b)


def test_an_incomplete_plugin_is_logged_and_skipped(third_party: Path) -> None:
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        plugins = load_plugins()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert "half" not in plugins and "echo" in plugins
    skipped = [e for e in events if e.get("log_namespace") == "tsnet.plugins"
               and e.get("name") == "half"]
    assert len(skipped) == 1
    assert skipped[0]["module"] == "tsnet.plugins.half_tsnet"
    assert "config_sections" in skipped[0]["why"]  # one of the missing attributes, by name
    assert type(plugins["opentsdb"]).__module__ == "tsnet.protocols.opentsdb.plugin"
    ignored = [e for e in events if e.get("name") == "opentsdb"
               and e.get("module") == "tsnet.plugins.impostor_tsnet"]
    assert len(ignored) == 1 and "installed already" in ignored[0]["log_format"]


@pytest_twisted.inlineCallbacks
def test_third_party_plugin_listens(third_party: Path, make_server: Any) -> None:
    plugins = load_plugins()  # the broken module is logged and skipped
    assert "echo" in plugins and "opentsdb" in plugins
    server = yield make_server(textwrap.dedent("""
        [tsnet]
        data_dir = var
        flush_interval = 0.05
        [listener:echo]
        protocol = echo
        endpoint = tcp:0:interface=127.0.0.1
        tag = third-party
        solution = plugged
        """))
    c = yield connect_line(server.port("echo"))
    c.send("put answer 42\n")
    assert (yield c.wait_lines(1)) == ["stored"]  # acked after commit
    rows = yield server.export("plugged")
    assert [(r["metric"], r["tags"], r["value"]) for r in rows] == [
        ("answer", {"via": "third-party"}, 42)]
    c.close()


@pytest_twisted.inlineCallbacks
def test_serve_plugin_builds_a_tree_for_a_plugin_not_installed(serve_plugin: Any) -> None:
    """tsnet.testing's helper: a plugin object under test, on port 0, torn down
    after the test, with no installation and no config file to write."""
    from twisted.web.resource import Resource

    from tsnet.plugin import ProtocolPlugin

    class Hello(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            return b"hello from " + request.channel.site.listener.name.encode()

    class HelloPlugin(ProtocolPlugin):
        name = "hello"
        description = "an API-only plugin under test"
        provides_api = True

        def resources(self, core: Any) -> dict:
            return {b"/hello": Hello()}

    server = yield serve_plugin(HelloPlugin())
    assert "hello" not in load_plugins()  # served without being installed
    c = yield connect_line(server.port("http"))
    c.send("GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    reply = yield c.wait_closed()
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nhello from http")
