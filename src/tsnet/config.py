"""The config file, read into typed objects and validated before anything listens.

Every error is a `ConfigError` whose message names the file, the section and the
key, so `tsnet check-config` and `twistd tsnet` can print one clear line.
Paths (data_dir, unix sockets, certificates) are relative to the config file's
folder, so a config and its files move together.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tsnet.errors import ConfigError
from tsnet.model import valid_solution_name
from tsnet.retention import parse_retention

_REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One accepted key: how to parse its text, its default (or required), a doc line."""

    parse: Callable[[str], Any]
    default: Any = _REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def as_bool(text: str) -> bool:
    """yes/no, true/false, on/off, 1/0."""
    t = text.strip().lower()
    if t in ("1", "yes", "true", "on"):
        return True
    if t in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected yes or no, got {text!r}")


def positive_float(text: str) -> float:
    """A number greater than 0."""
    v = float(text)
    if not v > 0:
        raise ValueError(f"must be greater than 0, got {text!r}")
    return v


def non_negative_float(text: str) -> float:
    """A number, 0 or more."""
    v = float(text)
    if v < 0:
        raise ValueError(f"must be 0 or more, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """A whole number greater than 0."""
    v = int(text)
    if v <= 0:
        raise ValueError(f"must be a whole number greater than 0, got {text!r}")
    return v


def non_negative_int(text: str) -> int:
    """A whole number, 0 or more."""
    v = int(text)
    if v < 0:
        raise ValueError(f"must be a whole number, 0 or more, got {text!r}")
    return v


def word_list(text: str) -> list[str]:
    """Names separated by spaces or commas."""
    return text.replace(",", " ").split()


def one_of(*choices: str) -> Callable[[str], str]:
    """A parser accepting exactly one of ``choices``."""
    def parse(text: str) -> str:
        t = text.strip()
        if t not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {text!r}")
        return t

    return parse


def solution_name(text: str) -> str:
    """A solution name (DESIGN §5)."""
    t = text.strip()
    if not valid_solution_name(t):
        raise ValueError(f"{text!r} is not a solution name (letters, digits, '-', '_', '.')")
    return t


TSNET_KEYS: dict[str, Key] = {
    "data_dir": Key(str, "var", "where the embedded store keeps its files"),
    "flush_interval": Key(positive_float, 0.5, "seconds an accepted item may wait for commit"),
    "batch_size": Key(positive_int, 100_000, "items that trigger a storage write at once"),
    "high_watermark": Key(positive_int, 400_000, "queued items above which streams pause"),
    "low_watermark": Key(positive_int, 100_000, "queued items below which they resume"),
    "max_queue": Key(positive_int, 2_000_000, "queued items above which UDP input is dropped"),
    "storage_wait": Key(positive_float, 10.0,
                        "seconds an acked write waits for its commit, and a stop for a "
                        "failing storage"),
    "auth_refresh": Key(positive_float, 2.0, "seconds between checks for token changes"),
    "compact_interval": Key(non_negative_float, 10.0,
                            "seconds between chunk compactions (0: never)"),
    "max_query_points": Key(positive_int, 10_000_000,
                            "points one read request may read from storage"),
    "max_query_buckets": Key(positive_int, 1_000_000,
                             "downsampling buckets one read request may compute"),
    "max_query_output": Key(positive_int, 1_000_000,
                            "points (or names, series) one read reply may carry"),
    "query_timeout": Key(positive_float, 30.0,
                         "seconds a read request may run before its work is stopped"),
    "max_pattern_length": Key(positive_int, 4096,
                              "characters of a query's regexp or wildcard filter"),
    "retention": Key(parse_retention, None,
                     "how long points and messages are kept (90d, 12h, 1w; none: for "
                     "ever), unless a solution or a metric says otherwise"),
    "retention_interval": Key(non_negative_float, 60.0,
                              "seconds between background removals of expired data "
                              "(0: never; reads leave it out anyway)"),
}

#: keys of every [storage:*] section; each backend adds its own (`storage_keys`)
STORAGE_KEYS: dict[str, Key] = {
    "backend": Key(str, doc="the kind of storage: an installed backend (sqlite is built in)"),
}

LISTENER_KEYS: dict[str, Key] = {
    "protocol": Key(str, doc="the protocol family (an installed plugin)"),
    "endpoint": Key(str, doc="a tcp:, tcp6:, ssl: or unix: Twisted endpoint string (on "
                             "loopback, a socket mode 660, unless it says), or "
                             "udp:PORT[:interface=IP]"),
    "auth": Key(one_of("none", "token"), "none", "none, or token: a token is required"),
    "solution": Key(solution_name, None, "with auth = none, the solution of every item"),
    "max_connections": Key(positive_int, 1024, "open connections accepted at once"),
    "idle_timeout": Key(non_negative_float, 300.0, "seconds before an idle connection closes"),
    "max_connections_per_address": Key(non_negative_int, 256,
                                       "connections accepted at once from one client IP "
                                       "(0: no cap; Unix sockets have no address)"),
    "request_timeout": Key(non_negative_float, 30.0,
                           "seconds an HTTP request (head and body) may take to arrive "
                           "from its first byte, plus min_rate's allowance (0: no limit)"),
    "line_timeout": Key(non_negative_float, 30.0,
                        "seconds a line of a line protocol may take to arrive from its "
                        "first byte, plus min_rate's allowance (0: no limit)"),
    "min_rate": Key(non_negative_float, 500.0,
                    "bytes a second that earn a request or line one more second past "
                    "its timeout (0: none)"),
}


@dataclass
class StorageConfig:
    """One [storage:NAME] section, validated by its backend."""

    name: str
    backend: str
    options: dict[str, Any] = field(default_factory=dict)  # the backend's own keys
    plugin: Any = None  # the IStorageBackend that builds it

    @property
    def path(self) -> str | None:
        """The file of a file-based backend (sqlite's ``path``)."""
        return self.options.get("path")

    @property
    def url(self) -> str | None:
        """The server of a networked backend (``url``)."""
        return self.options.get("url")


@dataclass
class Listener:
    """One [listener:NAME] section, validated."""

    name: str
    protocol: str
    endpoint: str  # with relative paths made absolute
    kind: str  # "stream" or "udp"
    auth: str = "none"
    solution: str = "default"
    max_connections: int = 1024
    idle_timeout: float = 300.0
    max_connections_per_address: int = 256
    request_timeout: float = 30.0
    line_timeout: float = 30.0
    min_rate: float = 500.0
    options: dict[str, Any] = field(default_factory=dict)  # the family's own keys

    @property
    def udp_port(self) -> int:
        return parse_udp_endpoint(self.endpoint)[0]

    @property
    def udp_interface(self) -> str:
        return parse_udp_endpoint(self.endpoint)[1]


@dataclass
class Config:
    path: str
    directory: str
    data_dir: str
    flush_interval: float = 0.5
    batch_size: int = 100_000
    high_watermark: int = 400_000
    low_watermark: int = 100_000
    max_queue: int = 2_000_000
    storage_wait: float = 10.0
    auth_refresh: float = 2.0
    compact_interval: float = 10.0
    max_query_points: int = 10_000_000
    max_query_buckets: int = 1_000_000
    max_query_output: int = 1_000_000
    query_timeout: float = 30.0
    max_pattern_length: int = 4096
    retention: int | None = None  # nanoseconds (`tsnet.retention`)
    retention_interval: float = 60.0
    storages: dict[str, StorageConfig] = field(default_factory=dict)
    listeners: dict[str, Listener] = field(default_factory=dict)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # plugin sections

    def solutions_named(self) -> set[str]:
        return {ln.solution for ln in self.listeners.values() if ln.auth == "none"}


# --- endpoints ------------------------------------------------------------------

_UDP = re.compile(r"udp:(\d{1,5})(?::interface=([^:]+))?\Z")


def parse_udp_endpoint(text: str) -> tuple[int, str]:
    """``udp:PORT[:interface=IP]`` -> (port, interface); interface defaults to 127.0.0.1."""
    m = _UDP.match(text)
    if not m or int(m.group(1)) > 65535:
        port = text[4:].split(":", 1)[0]
        if not (port.isdigit() and int(port) <= 65535):
            raise ValueError(f"{text!r}: the port must be a number from 0 to 65535, "
                             f"not {port!r}")
        raise ValueError(f"{text!r} is not udp:PORT[:interface=IP]")
    return int(m.group(1)), m.group(2) or "127.0.0.1"


#: bytes of a unix: socket's path the kernel takes (``sun_path`` less its NUL)
MAX_SOCKET_PATH = 107


def check_interface(text: str, host: str) -> None:
    """ValueError unless ``host`` (an endpoint's ``interface=``) is an IP
    address or a name this machine resolves: anything else passes Twisted's
    parser and fails only when the server binds.  (Only names are looked up.)"""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise ValueError(f"{text!r}: interface={host} is not an IP address (nor a name this "
                         f"machine resolves)") from None


#: the arguments of each stream kind, in the order Twisted's serverFromString
#: takes them without names (so ``tcp:4242:0.0.0.0`` names an interface, and
#: ``tcp6:4242:5`` a backlog); every other kind it knows (systemd:, stdio:,
#: haproxy:, plugins' kinds) is refused: none of them is loopback by default
STREAM_ARGS: dict[str, tuple[str, ...]] = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "backlog", "interface"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface", "backlog",
            "extraCertChain", "dhParameters"),
    "unix": ("address", "mode", "backlog", "lockfile"),
}
#: where an IP listener without ``interface=`` listens: loopback only
LOOPBACK = {"tcp": "127.0.0.1", "tcp6": "::1", "ssl": "127.0.0.1"}
#: the mode of a unix: socket without ``mode=``: its owner and group (Twisted's is 666)
UNIX_MODE = "660"
_PATH_ARGS = frozenset({"address", "privateKey", "certKey", "extraCertChain", "dhParameters"})
_KINDS = "tcp:, tcp6:, ssl:, unix: and udp:"
_OCTAL_MODE = re.compile(r"(0o?)?[0-7]{1,3}\Z")


def _split_unescaped(text: str, sep: str, limit: int = -1) -> list[str]:
    """Split on ``sep`` where no backslash escapes it, keeping the escapes."""
    parts, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if c == sep and limit != 0:
            parts.append("".join(cur))
            cur = []
            limit -= 1
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def _escape(text: str) -> str:
    """As Twisted's endpoint strings need: ``\\``, ``:`` and ``=`` escaped."""
    return re.sub(r"([\\:=])", r"\\\1", text)


def stream_arguments(text: str) -> tuple[str, dict[str, str]]:
    """``KIND:ARGS`` -> (kind, {argument name: value as written, escapes
    kept}), arguments without a name named as Twisted names them; ValueError
    for a kind that is not tcp:, tcp6:, ssl: or unix:, an unknown argument,
    one given twice or too many."""
    kind, *parts = _split_unescaped(text, ":")
    kind = kind.lower()
    names = STREAM_ARGS.get(kind)
    if names is None:
        raise ValueError(f"{text!r}: the endpoint kinds are {_KINDS}")
    canonical = {n.lower(): n for n in names}
    args: dict[str, str] = {}
    positional = iter(names)
    for part in filter(None, parts):
        key, *value = _split_unescaped(part, "=", 1)
        if value:
            name = canonical.get(key.strip().lower())
            if name is None:
                raise ValueError(f"{text!r}: unknown argument {key!r} of {kind}: "
                                 f"(it takes {', '.join(names)})")
        else:
            name = next(positional, None)
            if name is None:
                raise ValueError(f"{text!r}: too many arguments for {kind}: "
                                 f"(it takes {', '.join(names)})")
            value = [key]
        if name in args:
            raise ValueError(f"{text!r}: {name} is given twice")
        args[name] = value[0]
    return kind, args


def _check_stream_arguments(text: str, kind: str, args: dict[str, str], base: str) -> None:
    """Validate ``args`` in place: paths made absolute, loopback and mode defaults."""
    for name in _PATH_ARGS & args.keys():
        path = _unescape(args[name])
        if path:
            args[name] = _escape(os.path.normpath(os.path.join(base, path)))
    if "backlog" in args and not (args["backlog"].isdigit() and int(args["backlog"]) > 0):
        raise ValueError(f"{text!r}: backlog must be a whole number greater than 0, "
                         f"not {args['backlog']!r}")
    if kind == "unix":
        path = _unescape(args.get("address", ""))
        if not path:
            raise ValueError(f"{text!r}: a unix: endpoint needs a socket path")
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            raise ValueError(f"{text!r}: the folder of the socket, {folder}, does not exist")
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ValueError(f"{text!r}: the socket path {path} is longer than the "
                             f"{MAX_SOCKET_PATH} bytes a unix: socket may have")
        mode = args.setdefault("mode", UNIX_MODE)
        if not _OCTAL_MODE.match(mode):
            raise ValueError(f"{text!r}: mode must be an octal file mode such as 660, "
                             f"not {mode!r}")
        if args.get("lockfile", "0") not in ("0", "1"):
            raise ValueError(f"{text!r}: lockfile must be 0 or 1, not {args['lockfile']!r}")
        return
    port = args.get("port", "")
    if not (port.isdigit() and int(port) <= 65535):
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535, not {port!r}")
    if "interface" not in args:
        args["interface"] = _escape(LOOPBACK[kind])  # unless the config says otherwise
    elif not _unescape(args["interface"]).strip():
        raise ValueError(f"{text!r}: interface= is empty; to listen on every address, "
                         f"say so: interface=0.0.0.0 (tcp6: interface=\\:\\:)")
    else:
        check_interface(text, _unescape(args["interface"]))
    if kind == "ssl" and not args.get("privateKey"):
        raise ValueError(f"{text!r}: an ssl: endpoint needs privateKey=KEY.pem (and "
                         f"certKey=CERT.pem unless the key file holds the certificate too)")


def check_endpoint(text: str, base: str, reactor: Any = None) -> tuple[str, str]:
    """Validate an endpoint string; returns (kind, normalised text): named
    arguments, absolute paths, and the safe defaults written out (tcp:, tcp6:
    and ssl: on loopback, unix: sockets mode 660)."""
    text = text.strip()
    if text.lower().startswith("udp:"):
        check_interface(text, parse_udp_endpoint(text)[1])
        return "udp", text
    from twisted.internet.endpoints import serverFromString

    kind, args = stream_arguments(text)
    _check_stream_arguments(text, kind, args, base)
    first = "address" if kind == "unix" else "port"
    order = [first, "interface", *(n for n in STREAM_ARGS[kind] if n not in (first, "interface"))]
    normalised = ":".join([kind, args[first],
                           *(f"{n}={args[n]}" for n in order[1:] if n in args)])
    if kind == "ssl":
        # the key and certificate as tsnet.tls will serve them (not as Twisted's
        # parser reads them): loaded, matched, and a context built from them
        from tsnet.certs import server_options

        server_options(endpoint_arguments(normalised)[1]).getContext()
        return "stream", normalised
    # Parsing builds the endpoint without listening; the reactor is only
    # stored, so a placeholder does for checks.
    serverFromString(reactor if reactor is not None else object(), normalised)
    return "stream", normalised


def endpoint_arguments(text: str) -> tuple[str, dict[str, str]]:
    """The kind and arguments of a stream endpoint string, unescaped: the
    values Twisted's parser would see (``ssl:`` endpoints are served from them
    by `tsnet.tls`)."""
    kind, args = stream_arguments(text)
    return kind, {name: _unescape(value) for name, value in args.items()}


# --- loading --------------------------------------------------------------------


def _parse_keys(
    where: str, items: Mapping[str, str], keys: Mapping[str, Key], source: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, raw in items.items():
        if k not in keys:
            known = ", ".join(sorted(keys))
            raise ConfigError(f"{source}: [{where}] unknown key {k!r} (known keys: {known})")
        try:
            out[k] = keys[k].parse(raw)
        except ValueError as e:
            raise ConfigError(f"{source}: [{where}] {k}: {e}") from None
    for k, key in keys.items():
        if k not in out:
            if key.required:
                raise ConfigError(f"{source}: [{where}] missing required key {k!r}")
            out[k] = key.default
    return out


def read_ini(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), default_section="\0none"
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a valid config file: {e}") from None
    return parser


def load_config(path: str, plugins: Mapping[str, Any], reactor: Any = None,
                backends: Mapping[str, Any] | None = None) -> Config:
    """Read and validate ``path`` against the installed ``plugins`` (name ->
    IProtocolPlugin) and storage ``backends`` (name -> IStorageBackend; the
    installed ones when None)."""
    if backends is None:
        from tsnet.plugins import load_storage_backends

        backends = load_storage_backends()
    path = os.path.abspath(path)
    base = os.path.dirname(path)
    ini = read_ini(path)
    src = path

    sections = ini.sections()
    tsnet_items = dict(ini.items("tsnet")) if ini.has_section("tsnet") else {}
    top = _parse_keys("tsnet", tsnet_items, TSNET_KEYS, src)
    if top["low_watermark"] >= top["high_watermark"]:
        raise ConfigError(f"{src}: [tsnet] low_watermark must be below high_watermark")
    data_dir = os.path.normpath(os.path.join(base, top.pop("data_dir")))
    cfg = Config(path=path, directory=base, data_dir=data_dir, **top)

    plugin_sections: dict[str, tuple[Any, dict[str, Key]]] = {}
    for p in plugins.values():
        for sec, keys in p.config_sections.items():
            plugin_sections[sec] = (p, keys)

    for sec in sections:
        kind, _, name = sec.partition(":")
        items = dict(ini.items(sec))
        if sec == "tsnet":
            continue
        if kind == "storage" and name:
            cfg.storages[name] = _storage(sec, name, items, backends, cfg, src)
        elif kind == "listener" and name:
            cfg.listeners[name] = _listener(sec, name, items, plugins, base, src, reactor)
        elif sec in plugin_sections:
            cfg.sections[sec] = _parse_keys(sec, items, plugin_sections[sec][1], src)
        else:
            raise ConfigError(
                f"{src}: [{sec}] unknown section (expected [tsnet], [storage:NAME], "
                f"[listener:NAME]{''.join(', [' + s + ']' for s in sorted(plugin_sections))})"
            )
    if "default" not in cfg.storages:
        cfg.storages["default"] = _storage("storage:default", "default", {"backend": "sqlite"},
                                           backends, cfg, src)
    for sec, (_p, keys) in plugin_sections.items():
        if sec not in cfg.sections:
            try:
                cfg.sections[sec] = _parse_keys(sec, {}, keys, src)
            except ConfigError:
                cfg.sections[sec] = {}  # required keys are checked by the plugin that needs them
    for ln in cfg.listeners.values():
        users = [ln.protocol] + [a for a in ln.options.get("apis") or () if a in plugins]
        for name in dict.fromkeys(users):
            try:
                plugins[name].check(ln, cfg, plugins)
            except ValueError as e:
                raise ConfigError(f"{src}: [listener:{ln.name}] {e}") from None
    return cfg


def _storage(sec: str, name: str, items: dict[str, str], backends: Mapping[str, Any],
             cfg: Config, src: str) -> StorageConfig:
    kind = items.get("backend", "").strip()
    if not kind:
        raise ConfigError(f"{src}: [{sec}] missing required key 'backend'")
    backend = backends.get(kind)
    if backend is None:
        raise ConfigError(
            f"{src}: [{sec}] backend: no installed storage backend provides {kind!r} "
            f"(installed: {', '.join(sorted(backends))})")
    keys = {**STORAGE_KEYS, **backend.storage_keys}
    vals = _parse_keys(sec, items, keys, src)
    storage = StorageConfig(name=name, backend=kind, plugin=backend,
                            options={k: vals[k] for k in backend.storage_keys})
    try:
        backend.check(storage, cfg)
    except ValueError as e:
        raise ConfigError(f"{src}: [{sec}] {e}") from None
    return storage


def _listener(
    sec: str,
    name: str,
    items: dict[str, str],
    plugins: Mapping[str, Any],
    base: str,
    src: str,
    reactor: Any,
) -> Listener:
    proto = items.get("protocol", "").strip()
    if not proto:
        raise ConfigError(f"{src}: [{sec}] missing required key 'protocol'")
    plugin = plugins.get(proto)
    if plugin is None or not plugin.transports:
        names = ", ".join(sorted(n for n, p in plugins.items() if p.transports))
        raise ConfigError(
            f"{src}: [{sec}] protocol: no installed plugin provides {proto!r} "
            f"(installed: {names})"
        )
    keys = dict(LISTENER_KEYS)
    extra = dict(plugin.listener_keys)
    keys.update(extra)
    vals = _parse_keys(sec, items, keys, src)
    try:
        kind, endpoint = check_endpoint(vals["endpoint"], base, reactor)
    except Exception as e:  # serverFromString raises many kinds for bad strings
        raise ConfigError(f"{src}: [{sec}] endpoint: {e}") from None
    if kind not in plugin.transports:
        raise ConfigError(
            f"{src}: [{sec}] endpoint: protocol {proto!r} cannot listen on {kind} endpoints"
        )
    if vals["auth"] == "token" and "solution" in items:
        raise ConfigError(
            f"{src}: [{sec}] solution: not allowed with auth = token (the token decides)"
        )
    return Listener(
        name=name,
        protocol=proto,
        endpoint=endpoint,
        kind=kind,
        auth=vals["auth"],
        solution=vals["solution"] or "default",
        max_connections=vals["max_connections"],
        idle_timeout=vals["idle_timeout"],
        max_connections_per_address=vals["max_connections_per_address"],
        request_timeout=vals["request_timeout"],
        line_timeout=vals["line_timeout"],
        min_rate=vals["min_rate"],
        options={k: vals[k] for k in extra},
    )
