"""Config validation: every error names the section and key, before anything listens."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tsnet.config import load_config, parse_udp_endpoint
from tsnet.errors import ConfigError
from tsnet.plugins import load_plugins


@pytest.fixture(scope="module")
def plugins() -> dict:
    return load_plugins()


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "t.ini"
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_default_config_is_valid(plugins: dict) -> None:
    root = Path(__file__).resolve().parent.parent
    cfg = load_config(str(root / "etc" / "tsnet.ini"), plugins)
    assert cfg.data_dir == str(root / "var")
    assert {ln.protocol for ln in cfg.listeners.values()} <= set(plugins)
    for ln in cfg.listeners.values():
        assert "interface=127.0.0.1" in ln.endpoint
    assert cfg.storages["default"].backend == "sqlite"


def test_defaults_and_relative_paths(tmp_path: Path, plugins: dict) -> None:
    (tmp_path / "sock").mkdir()  # a unix: socket's folder must exist
    cfg = load_config(write(tmp_path, """
        [listener:t]
        protocol = opentsdb
        endpoint = tcp:0:interface=127.0.0.1
        [listener:u]
        protocol = opentsdb
        endpoint = unix:sock/t.sock
        """), plugins)
    assert cfg.flush_interval == 0.5
    assert cfg.data_dir == str(tmp_path / "var")
    assert cfg.storages["default"].path == str(tmp_path / "var" / "default.sqlite")
    t = cfg.listeners["t"]
    assert (t.auth, t.solution, t.kind) == ("none", "default", "stream")
    assert t.options == {"close_on_error": False, "max_body": 8 * 1024 * 1024}
    assert cfg.listeners["u"].endpoint == f"unix:{tmp_path}/sock/t.sock"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tsnet]\nflush_interval = soon\n", "[tsnet] flush_interval:"),
        ("[tsnet]\nflush_interval = 0\n", "[tsnet] flush_interval: must be greater than 0"),
        ("[tsnet]\nbogus = 1\n", "[tsnet] unknown key 'bogus'"),
        ("[tsnet]\nlow_watermark = 10\nhigh_watermark = 5\n", "low_watermark must be below"),
        ("[whatever]\nx = 1\n", "[whatever] unknown section"),
        ("[listener:a]\nendpoint = tcp:0\n", "[listener:a] missing required key 'protocol'"),
        ("[listener:a]\nprotocol = opentsdb\n", "[listener:a] missing required key 'endpoint'"),
        ("[listener:a]\nprotocol = nosuch\nendpoint = tcp:0\n",
         "[listener:a] protocol: no installed plugin provides 'nosuch' (installed: "),
        ("[listener:a]\nprotocol = opentsdb\nendpoint = tcp:nope\n", "[listener:a] endpoint:"),
        ("[listener:a]\nprotocol = opentsdb\nendpoint = carrier:pigeon\n",
         "[listener:a] endpoint:"),
        ("[listener:a]\nprotocol = opentsdb\nendpoint = udp:9\n",
         "cannot listen on udp endpoints"),
        ("[listener:a]\nprotocol = opentsdb\nendpoint = tcp:0\ncolour = red\n",
         "[listener:a] unknown key 'colour'"),
        ("[listener:a]\nprotocol = opentsdb\nendpoint = tcp:0\nauth = maybe\n",
         "[listener:a] auth: must be one of none, token"),
        ("[listener:a]\nprotocol = opentsdb\nendpoint = tcp:0\nauth = token\nsolution = x\n",
         "[listener:a] solution: not allowed with auth = token"),
        ("[listener:a]\nprotocol = opentsdb\nendpoint = tcp:0\nsolution = a b\n",
         "[listener:a] solution:"),
        ("[listener:a]\nprotocol = http\nendpoint = tcp:0\napis = metrics nosuch\n",
         "[listener:a] apis: no installed plugin provides 'nosuch'"),
        ("[listener:a]\nprotocol = metrics\nendpoint = tcp:0\n",
         "[listener:a] protocol: no installed plugin provides 'metrics'"),
        ("[storage:default]\nbackend = oracle\n",
         "[storage:default] backend: no installed storage backend provides 'oracle' "
         "(installed: "),
        ("[storage:x]\nbackend = sqlite\nurl = redis://h\n",
         "[storage:x] unknown key 'url' (known keys: backend, busy_timeout, path)"),
        ("[listener:a]\nprotocol = opentsdb\nendpoint = ssl:0:privateKey=no.pem\n",
         "[listener:a] endpoint:"),
        ("[listener:a]\nprotocol = opentsdb\nendpoint = tcp:notaport\n",
         "[listener:a] endpoint: 'tcp:notaport': the port must be a number from 0 to 65535,"
         " not 'notaport'"),
        ("[listener:a]\nprotocol = opentsdb\nendpoint = unix:/no/such/folder/t.sock\n",
         "[listener:a] endpoint: 'unix:/no/such/folder/t.sock': the folder of the socket, "
         "/no/such/folder, does not exist"),
        ("not an ini file\n", "not a valid config file"),
    ],
)
def test_errors_name_section_and_key(tmp_path: Path, plugins: dict, text: str,
                                     message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path, plugins)
    assert message in str(e.value)
    assert str(e.value).startswith(path)


def test_unreadable_file(tmp_path: Path, plugins: dict) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "missing.ini"), plugins)
    p = tmp_path / "secret.ini"
    p.write_text("[tsnet]\n")
    os.chmod(p, 0)
    if os.access(p, os.R_OK):  # root reads anything: check a directory instead
        with pytest.raises(ConfigError, match="cannot read config file"):
            load_config(str(tmp_path), plugins)
    else:
        with pytest.raises(ConfigError, match="cannot read config file"):
            load_config(str(p), plugins)


def test_listeners_default_to_loopback(tmp_path: Path, plugins: dict) -> None:
    cfg = load_config(write(tmp_path, """
        [listener:a]
        protocol = opentsdb
        endpoint = tcp:4242
        [listener:b]
        protocol = opentsdb
        endpoint = tcp:4243:interface=0.0.0.0
        """), plugins)
    assert cfg.listeners["a"].endpoint == "tcp:4242:interface=127.0.0.1"
    assert cfg.listeners["b"].endpoint == "tcp:4243:interface=0.0.0.0"


def test_udp_endpoints() -> None:
    assert parse_udp_endpoint("udp:8082") == (8082, "127.0.0.1")
    assert parse_udp_endpoint("udp:0:interface=0.0.0.0") == (0, "0.0.0.0")
    for bad in ("udp:", "udp:70000", "udp:1:iface=x", "udp:x"):
        with pytest.raises(ValueError):
            parse_udp_endpoint(bad)
