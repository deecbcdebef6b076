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
    assert t.options == {"close_on_error": False, "max_body": 8 * 1024 * 1024,
                         "console": True}
    assert cfg.listeners["u"].endpoint == f"unix:{tmp_path}/sock/t.sock:mode=660"


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
         "[listener:a] endpoint: 'carrier:pigeon': the endpoint kinds are tcp:, tcp6:, "
         "ssl:, unix: and udp:"),
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


def endpoint_of(tmp_path: Path, plugins: dict, endpoint: str) -> str:
    return load_config(write(tmp_path, f"""
        [listener:a]
        protocol = opentsdb
        endpoint = {endpoint}
        """), plugins).listeners["a"].endpoint


@pytest.mark.parametrize(("endpoint", "normalised"), [
    ("tcp:4242", "tcp:4242:interface=127.0.0.1"),
    ("tcp:port=4242", "tcp:4242:interface=127.0.0.1"),
    ("TCP:4242", "tcp:4242:interface=127.0.0.1"),
    ("tcp:4242:0.0.0.0", "tcp:4242:interface=0.0.0.0"),  # Twisted's positional interface
    ("tcp:4242:backlog=10", "tcp:4242:interface=127.0.0.1:backlog=10"),
    ("tcp6:4242", "tcp6:4242:interface=\\:\\:1"),
    ("TCP6:4242", "tcp6:4242:interface=\\:\\:1"),
    ("tcp6:4242:5", "tcp6:4242:interface=\\:\\:1:backlog=5"),  # tcp6's 2nd is backlog
    ("tcp6:4242:interface=\\:\\:", "tcp6:4242:interface=\\:\\:"),
])
def test_every_ip_endpoint_defaults_to_loopback(tmp_path: Path, plugins: dict, endpoint: str,
                                                normalised: str) -> None:
    assert endpoint_of(tmp_path, plugins, endpoint) == normalised


def test_ssl_defaults_to_loopback_and_absolute_paths(tmp_path: Path, plugins: dict) -> None:
    from tests.helpers.certs import make_certs

    make_certs(tmp_path / "tls")
    got = endpoint_of(tmp_path, plugins, "ssl:4243:privatekey=tls/server.key:"
                                         "certKey=tls/server.pem")
    key, cert = tmp_path / "tls" / "server.key", tmp_path / "tls" / "server.pem"
    assert got == f"ssl:4243:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    explicit = f"ssl:4243:interface=0.0.0.0:privateKey={key}:certKey={cert}"
    assert endpoint_of(tmp_path, plugins, explicit) == explicit


@pytest.mark.parametrize(("endpoint", "normalised"), [
    ("unix:s.sock", "unix:{d}/s.sock:mode=660"),
    ("unix:address=s.sock", "unix:{d}/s.sock:mode=660"),
    ("unix:s.sock:mode=600", "unix:{d}/s.sock:mode=600"),
    ("unix:s.sock:mode=0666:lockfile=0", "unix:{d}/s.sock:mode=0666:lockfile=0"),
    ("unix:/tmp/s.sock:640", "unix:/tmp/s.sock:mode=640"),  # Twisted's positional mode
])
def test_unix_sockets_default_to_0660(tmp_path: Path, plugins: dict, endpoint: str,
                                      normalised: str) -> None:
    assert endpoint_of(tmp_path, plugins, endpoint) == normalised.format(d=tmp_path)


@pytest.mark.parametrize(("endpoint", "message"), [
    ("tcp6:4242:interface=", "interface= is empty"),
    ("tcp:4242:interface=", "interface= is empty"),
    ("tcp:4242:colour=red", "unknown argument 'colour' of tcp: (it takes port, interface, "
                            "backlog)"),
    ("tcp:4242:127.0.0.1:10:extra", "too many arguments"),
    ("tcp:4242:0.0.0.0:interface=127.0.0.1", "interface is given twice"),
    ("tcp:4242:backlog=many", "backlog must be a whole number greater than 0"),
    ("tcp6:99999", "the port must be a number from 0 to 65535"),
    ("unix:s.sock:mode=999", "mode must be an octal file mode such as 660"),
    ("unix:s.sock:mode=7777", "mode must be an octal file mode such as 660"),
    ("unix:s.sock:lockfile=maybe", "lockfile must be 0 or 1"),
    ("ssl:4243", "an ssl: endpoint needs privateKey="),
    ("systemd:domain=INET:index=0", "'systemd:domain=INET:index=0': the endpoint kinds are "
                                    "tcp:, tcp6:, ssl:, unix: and udp:"),
    ("haproxy:tcp:4242", "the endpoint kinds are tcp:, tcp6:, ssl:, unix: and udp:"),
    ("stdio:", "the endpoint kinds are"),
    ("tls:4242", "the endpoint kinds are"),
    ("autobahn:tcp\\:4242", "the endpoint kinds are"),
])
def test_endpoint_errors(tmp_path: Path, plugins: dict, endpoint: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        endpoint_of(tmp_path, plugins, endpoint)
    assert f"[listener:a] endpoint: {endpoint!r}: " in str(e.value)
    assert message in str(e.value)


def test_check_config_names_every_kind(tmp_path: Path) -> None:
    """The issue's case through the real command: tcp6 passes, bound to ::1."""
    from tsnet.testing.process import tsnet

    ok = write(tmp_path, "[listener:a]\nprotocol = opentsdb\nendpoint = tcp6:4242\n")
    assert tsnet(Path(ok), "check-config").returncode == 0
    bad = tmp_path / "bad.ini"
    bad.write_text("[listener:a]\nprotocol = opentsdb\nendpoint = systemd:domain=INET:index=0\n")
    p = tsnet(bad, "check-config", check=False)
    assert p.returncode == 1
    assert "the endpoint kinds are tcp:, tcp6:, ssl:, unix: and udp:" in p.stderr
    assert "Traceback" not in p.stderr


def test_udp_endpoints() -> None:
    assert parse_udp_endpoint("udp:8082") == (8082, "127.0.0.1")
    assert parse_udp_endpoint("udp:0:interface=0.0.0.0") == (0, "0.0.0.0")
    for bad in ("udp:", "udp:70000", "udp:1:iface=x", "udp:x"):
        with pytest.raises(ValueError):
            parse_udp_endpoint(bad)


CHECKED_AT_CHECK = [
    ("opentsdb", "tcp:notaport",
     "'tcp:notaport': the port must be a number from 0 to 65535, not 'notaport'"),
    ("opentsdb", "unix:/no/such/folder/t.sock",
     "'unix:/no/such/folder/t.sock': the folder of the socket, /no/such/folder, does not exist"),
    ("opentsdb", "tcp:4242:interface=no-such-host.invalid",
     "'tcp:4242:interface=no-such-host.invalid': interface=no-such-host.invalid is not an IP "
     "address (nor a name this machine resolves)"),
    ("atsd", "udp:8082:interface=no-such-host.invalid",
     "'udp:8082:interface=no-such-host.invalid': interface=no-such-host.invalid is not an IP "
     "address (nor a name this machine resolves)"),
    ("atsd", "udp:70000", "'udp:70000': the port must be a number from 0 to 65535, not '70000'"),
    ("atsd", "udp:8082:iface=x", "'udp:8082:iface=x' is not udp:PORT[:interface=IP]"),
]


@pytest.mark.subprocess
@pytest.mark.parametrize(("protocol", "endpoint", "message"), CHECKED_AT_CHECK)
def test_check_config_says_what_is_wrong_with_an_endpoint(tmp_path: Path, protocol: str,
                                                          endpoint: str, message: str) -> None:
    """Through the real command: one line naming file, section, key and the
    problem (no ``invalid literal for int()``), status 1; what would fail only
    when the server binds is found here."""
    from tsnet.testing.process import tsnet

    cfg = Path(write(tmp_path, f"[listener:a]\nprotocol = {protocol}\nendpoint = {endpoint}\n"))
    p = tsnet(cfg, "check-config", check=False)
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr.splitlines() == [f"tsnet: {cfg}: [listener:a] endpoint: {message}"]


def test_a_unix_socket_path_too_long_fails_the_check_and_one_that_fits_binds(
        tmp_path: Path, plugins: dict) -> None:
    """107 bytes is what the kernel takes: one more fails the check; exactly
    107 passes it, and the server then binds it."""
    import socket

    from tsnet.config import MAX_SOCKET_PATH

    folder = tmp_path / ("d" * (MAX_SOCKET_PATH - len(str(tmp_path)) - len("/s.sock") - 1))
    folder.mkdir()
    fits = f"{folder}/s.sock"
    assert len(fits) == MAX_SOCKET_PATH
    with pytest.raises(ConfigError) as e:
        endpoint_of(tmp_path, plugins, f"unix:{folder}/s2.sock")
    assert f"the socket path {folder}/s2.sock is longer than the 107 bytes" in str(e.value)
    assert endpoint_of(tmp_path, plugins, f"unix:{fits}") == f"unix:{fits}:mode=660"
    with socket.socket(socket.AF_UNIX) as s:  # what the check let through does bind
        s.bind(fits)


def test_interfaces_that_are_addresses_or_local_names_pass(tmp_path: Path,
                                                           plugins: dict) -> None:
    for endpoint in ("tcp:4242:interface=0.0.0.0", "tcp:4242:interface=localhost",
                     "tcp6:4242:interface=\\:\\:1", "tcp:4242:interface=\\:\\:"):
        assert endpoint_of(tmp_path, plugins, endpoint) == endpoint
