"""Outbound connections: tsnet dialing out (ts-store's push and pull WebSocket
connections, later others) instead of being dialed.

One ``OutboundService`` keeps one connection to one target up. It wraps Twisted's
``ClientService`` for the reconnect loop and adds what an operator needs: TLS that
always verifies, a TLS attempt that counts as connected only once the peer's
certificate is verified, bounded backoff, and a log line per state change rather
than one per retry.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet import defer, ssl
from twisted.internet.abstract import isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IFileDescriptorReceiver,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

DEFAULT_PORTS = {"ws": 80, "wss": 443}
SCHEMES = ("tcp", "tls", "ws", "wss")
ENDPOINT_KEYS = ("host", "port", "timeout")
DEFAULT_CONNECT_TIMEOUT = 30.0


# --- targets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where to connect: parsed once, so a bad URL fails at configuration time and
    the log names ``host:port`` rather than a raw string."""

    scheme: str  # tcp, tls, ws or wss
    host: str  # a DNS name or an IP address, IPv6 without brackets
    port: int
    path: str = ""  # ws/wss only: the request path, at least "/"
    query: str = ""  # ws/wss only: without the "?"
    timeout: float | None = None  # tcp/tls: ``timeout=`` of the endpoint string

    @property
    def tls(self) -> bool:
        return self.scheme in ("tls", "wss")

    @property
    def address(self) -> str:
        """``host:port`` (``[v6]:port``) for log lines."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def resource(self) -> str:
        """The request target of a WebSocket handshake: path and query."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def __str__(self) -> str:
        if self.scheme in ("tcp", "tls"):
            extra = "" if self.timeout is None else f":timeout={self.timeout:g}"
            return f"{self.scheme}:{self.address}{extra}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == DEFAULT_PORTS[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.resource}"

    def endpoint(self, reactor: Any, ca_file: str | Path | None = None) -> IStreamClientEndpoint:
        """A client endpoint for this target (TLS verified against ``ca_file`` or the
        platform trust store); ``HostnameEndpoint`` so names may resolve to IPv6."""
        kw = {} if self.timeout is None else {"timeout": self.timeout}
        tcp = HostnameEndpoint(reactor, self.host, self.port, **kw)
        if not self.tls:
            return tcp
        return wrapClientTLS(client_tls_options(self.host, ca_file), tcp)


def parse_target(url_or_endpoint: str) -> Target:
    """``tcp:HOST:PORT``, ``tls:HOST:PORT`` (Twisted client endpoint syntax, keyword
    form and ``timeout=`` included, ``[v6]`` allowed) or a ``ws://``/``wss://`` URL.

    Raises ValueError naming what is wrong, for config errors that point somewhere."""
    text = url_or_endpoint.strip() if isinstance(url_or_endpoint, str) else ""
    if not text:
        raise ValueError("outbound target is empty: expected tcp:HOST:PORT, tls:HOST:PORT, "
                         "ws://HOST[:PORT]/PATH or wss://...")
    if "://" in text:
        return _parse_url(text)
    return _parse_endpoint(text)


def _parse_url(text: str) -> Target:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"bad outbound URL {text!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"bad outbound URL {text!r}: scheme must be ws or wss, "
                         f"not {parts.scheme!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"bad outbound URL {text!r}: credentials in a WebSocket URL are not "
                         "allowed (send them as headers)")
    if parts.fragment or text.endswith("#"):
        raise ValueError(f"bad outbound URL {text!r}: a WebSocket URL has no #fragment")
    host = _check_host(parts.hostname or "", text)
    if port is None:
        if parts.netloc.endswith(":"):
            raise ValueError(f"bad outbound URL {text!r}: empty port")
        port = DEFAULT_PORTS[scheme]
    return Target(scheme, host, _check_port(port, text), parts.path or "/", parts.query)


def _parse_endpoint(text: str) -> Target:
    kind, _, rest = text.partition(":")
    kind = kind.lower()
    if kind == "ssl":
        raise ValueError(f"bad outbound endpoint {text!r}: Twisted's ssl: client endpoint "
                         "does not verify certificates; use tls:HOST:PORT")
    if kind not in ("tcp", "tls"):
        raise ValueError(f"bad outbound endpoint {text!r}: expected tcp:HOST:PORT, "
                         "tls:HOST:PORT or a ws:// or wss:// URL")
    bracketed = re.fullmatch(r"\[([^\]]*)\](:.*)?", rest, re.DOTALL)
    if bracketed:  # tcp:[::1]:8080, friendlier than Twisted's tcp:\:\:1:8080
        positional = [bracketed.group(1)]
        fields = _split_endpoint(bracketed.group(2)[1:]) if bracketed.group(2) else []
    else:
        positional, fields = [], _split_endpoint(rest)
    options: dict[str, str] = {}
    for field in fields:
        key, eq, value = field.partition("=")
        if not eq:
            positional.append(field)
        elif key not in ENDPOINT_KEYS:
            raise ValueError(f"bad outbound endpoint {text!r}: unknown option {key!r} "
                             f"(known: {', '.join(ENDPOINT_KEYS)})")
        elif key in options:
            raise ValueError(f"bad outbound endpoint {text!r}: {key} given twice")
        else:
            options[key] = value
    if len(positional) > 2:
        raise ValueError(f"bad outbound endpoint {text!r}: expected {kind}:HOST:PORT")
    for key, value in zip(("host", "port"), positional, strict=False):
        if key in options:
            raise ValueError(f"bad outbound endpoint {text!r}: {key} given twice")
        options[key] = value
    if "host" not in options or "port" not in options:
        missing = "host" if "host" not in options else "port"
        raise ValueError(f"bad outbound endpoint {text!r}: no {missing} "
                         f"(expected {kind}:HOST:PORT)")
    host = _check_host(options["host"], text)
    port = _check_port(options["port"], text)
    timeout = None
    if "timeout" in options:
        try:
            timeout = float(options["timeout"])
        except ValueError:
            timeout = -1.0
        if not 0 < timeout < float("inf"):
            raise ValueError(f"bad outbound endpoint {text!r}: timeout must be a positive "
                             f"number of seconds, not {options['timeout']!r}")
    return Target(kind, host, port, timeout=timeout)


def _split_endpoint(text: str) -> list[str]:
    """Twisted's endpoint grammar: fields split at ``:``, ``\\`` escapes the next char."""
    fields, current, chars = [], [], iter(text)
    for c in chars:
        if c == "\\":
            current.append(next(chars, "\\"))
        elif c == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(c)
    fields.append("".join(current))
    return fields


def _check_host(host: str, text: str) -> str:
    if not host:
        raise ValueError(f"bad outbound target {text!r}: no host")
    if ":" in host and not isIPv6Address(host):
        raise ValueError(f"bad outbound target {text!r}: {host!r} is not an IPv6 address")
    if re.search(r"[\s/@?#\[\]]", host):
        raise ValueError(f"bad outbound target {text!r}: {host!r} is not a host name")
    return host.lower()


def _check_port(port: int | str, text: str) -> int:
    try:
        value = int(str(port), 10)
    except ValueError:
        value = 0
    if not 0 < value < 65536:
        raise ValueError(f"bad outbound target {text!r}: port must be an integer from 1 to "
                         f"65535, not {port!r}")
    return value


# --- TLS ----------------------------------------------------------------------------------


def client_tls_options(hostname: str, ca_file: str | Path | None = None
                       ) -> IOpenSSLClientConnectionCreator:
    """Client TLS that always verifies the chain and the hostname (service-identity):
    against the PEM certificates in ``ca_file`` (a private CA), else the platform
    trust store. There is deliberately no way to turn verification off."""
    if not hostname:
        raise ValueError("TLS needs the server's hostname to verify its certificate")
    if ca_file is None:
        trust = ssl.platformTrust()
    else:
        trust = ssl.trustRootFromCertificates(_load_certificates(Path(ca_file)))
    return ssl.optionsForClientTLS(
        hostname, trustRoot=trust,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2})


def _load_certificates(path: Path) -> list[ssl.Certificate]:
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                        path.read_bytes(), re.DOTALL)
    if not blocks:
        raise ValueError(f"CA file {path} holds no PEM certificate")
    try:
        return [ssl.Certificate.loadPEM(block) for block in blocks]
    except Exception as e:  # OpenSSL.crypto.Error, with OpenSSL's reasons
        raise ValueError(f"CA file {path}: bad certificate: {e}") from None


# --- backoff ------------------------------------------------------------------------------


def backoff_policy(initial_delay: float = 1.0, max_delay: float = 60.0, factor: float = 2.0,
                   jitter: float = 0.1, rand: Callable[[], float] = random.random
                   ) -> Callable[[int], float]:
    """Seconds to wait before attempt ``n`` (1 after a lost connection or a first
    failure): initial * factor**(n-1), capped at ``max_delay``, then shortened by up
    to ``jitter`` of itself so many clients do not retry in step. Never above the cap."""
    if not 0 < initial_delay <= max_delay:
        raise ValueError(f"backoff delays need 0 < initial_delay ({initial_delay}) <= "
                         f"max_delay ({max_delay})")
    if factor < 1:
        raise ValueError(f"backoff factor must be at least 1, not {factor}")
    if not 0 <= jitter < 1:
        raise ValueError(f"backoff jitter must be in [0, 1), not {jitter}")

    def policy(attempt: int) -> float:
        exponent = min(max(attempt - 1, 0), 64)
        delay = min(initial_delay * factor ** exponent, max_delay)
        return delay * (1 - jitter * rand())

    return policy


# --- the connection -----------------------------------------------------------------------


@implementer(IProtocol, IHandshakeListener)
class _Session:
    """Stands between the transport and ClientService's protocol: the application
    sees ``connectionMade`` only once TLS has verified the peer (plain TCP: at
    once), so a certificate failure counts as a failed attempt (backoff grows, no
    "connected" line), and a lost connection is reported to the service."""

    def __init__(self, inner: IProtocol, tls: bool, on_lost: Callable[[Failure], None]) -> None:
        self._inner = inner
        self._tls = tls
        self._on_lost = on_lost
        self._transport: Any = None
        self._made = False
        self.ready: defer.Deferred[IProtocol] = defer.Deferred(canceller=self._abort)
        extra = [i for i in (IHalfCloseableProtocol, IFileDescriptorReceiver)
                 if i.providedBy(inner)]
        if extra:
            alsoProvides(self, *extra)

    def makeConnection(self, transport: Any) -> None:
        self._transport = transport
        if not self._tls:
            self._start()

    def handshakeCompleted(self) -> None:
        self._start()

    def _start(self) -> None:
        if self._made or self.ready.called:
            return
        self._made = True
        self._inner.makeConnection(self._transport)
        if self._tls and IHandshakeListener.providedBy(self._inner):
            self._inner.handshakeCompleted()
        if not self.ready.called:  # connectionMade may have stopped the service
            self.ready.callback(self._inner)

    def dataReceived(self, data: bytes) -> None:
        if self._made:
            self._inner.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        if self._made:
            try:
                self._inner.connectionLost(reason)
            finally:
                self._on_lost(reason)
        elif not self.ready.called:
            self.ready.errback(reason)

    def _abort(self, _: defer.Deferred) -> None:
        if self._transport is not None:
            self._transport.abortConnection()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "_inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self._inner, name)


@implementer(IProtocolFactory)
class _SessionFactory:
    """Wraps each protocol in a ``_Session``; everything else goes to the factory."""

    def __init__(self, factory: IProtocolFactory, tls: bool,
                 on_lost: Callable[[Failure], None]) -> None:
        self._factory = factory
        self._tls = tls
        self._on_lost = on_lost

    def buildProtocol(self, addr: Any) -> _Session | None:
        inner = self._factory.buildProtocol(addr)
        return None if inner is None else _Session(inner, self._tls, self._on_lost)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "_factory" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self._factory, name)


@implementer(IStreamClientEndpoint)
class _MonitoredEndpoint:
    """The endpoint ClientService dials: one attempt = TCP connect + TLS handshake,
    bounded by ``timeout``; reports each outcome to the OutboundService."""

    def __init__(self, endpoint: IStreamClientEndpoint, tls: bool, timeout: float,
                 clock: IReactorTime, service: OutboundService) -> None:
        self._endpoint = endpoint
        self._tls = tls
        self._timeout = timeout
        self._clock = clock
        self._service = service

    def connect(self, factory: IProtocolFactory) -> defer.Deferred:
        d = self._endpoint.connect(_SessionFactory(factory, self._tls,
                                                   self._service._connection_lost))
        d.addCallback(lambda session: session.ready)
        d.addTimeout(self._timeout, self._clock, onTimeoutCancel=self._timed_out)
        d.addCallbacks(self._service._attempt_succeeded, self._service._attempt_failed)
        return d

    def _timed_out(self, result: Any, timeout: float) -> Any:
        # Whatever the cancelled attempt failed with (HostnameEndpoint turns a
        # cancelled lookup into DNSLookupError), the cause is the timeout.
        if isinstance(result, Failure):
            return Failure(defer.TimeoutError(f"no connection within {timeout:g} s"))
        return result


class _QuietClientService(ClientService):
    """ClientService without its own log lines ("Scheduling retry N ..." on every
    attempt): OutboundService logs each state change once instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._log = Logger(namespace="tsnet.outbound.client", observer=lambda event: None)
        super().__init__(*args, **kwargs)


def describe_failure(reason: Failure) -> str:
    """A one-line reason for a log line or a status field."""
    if reason.check(VerificationError):
        ids = [str(getattr(e, "mismatched_id", e)) for e in reason.value.errors]
        return f"certificate does not match the host name ({', '.join(ids)})"
    if reason.check(SSL.Error) and reason.value.args and isinstance(reason.value.args[0], list):
        texts = [str(err[-1]) for err in reason.value.args[0] if err]
        if texts:
            return "TLS: " + "; ".join(texts)
    return reason.getErrorMessage().rstrip(".") or reason.type.__name__


class OutboundService(Service):
    """Keeps one connection to ``target`` up for as long as the service runs.

    Reconnects with bounded exponential backoff; logs "connected", "lost" and
    "cannot reach ... retrying" once per change, and one "reached again" line on
    recovery; ``whenConnected()`` gives the current (or next) protocol; stopping
    closes the connection and stops retrying. ``factory`` builds the application
    protocol; give it ``noisy = False`` or Twisted logs each attempt's start."""

    def __init__(self, reactor: Any, target: Target | str, factory: IProtocolFactory,
                 name: str, *, ca_file: str | Path | None = None, initial_delay: float = 1.0,
                 max_delay: float = 60.0, factor: float = 2.0, jitter: float = 0.1,
                 connect_timeout: float | None = None, clock: IReactorTime | None = None
                 ) -> None:
        if not name:
            raise ValueError("an outbound connection needs a name for its log lines")
        self.name = name
        self.target = parse_target(target) if isinstance(target, str) else target
        self._reactor = reactor
        self._log = Logger(namespace="tsnet.outbound", source=self)
        clock = reactor if clock is None else clock
        if connect_timeout is not None and not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, not {connect_timeout}")
        timeout = connect_timeout or self.target.timeout or DEFAULT_CONNECT_TIMEOUT
        endpoint = _MonitoredEndpoint(self.target.endpoint(reactor, ca_file), self.target.tls,
                                      timeout, clock, self)
        self._client = _QuietClientService(
            endpoint, factory, retryPolicy=backoff_policy(initial_delay, max_delay, factor,
                                                          jitter), clock=clock)
        self.state = "stopped"  # stopped, connecting, connected, failing
        self.failures = 0  # failed attempts since the last connection
        self.last_error: str | None = None

    def _fields(self) -> dict[str, Any]:
        return {"outbound": self.name, "address": self.target.address}

    def startService(self) -> None:
        if self.running:
            return
        super().startService()
        self.state, self.failures = "connecting", 0
        self._log.info("connecting to {outbound} at {address}", **self._fields())
        self._client.startService()

    def stopService(self) -> defer.Deferred[None]:
        """Closes the connection, or abandons the attempt or the wait, and retries no
        more; fires once the connection is closed."""
        was_running = self.running
        super().stopService()
        self.state = "stopped"
        d = self._client.stopService()
        if was_running:
            d.addCallback(lambda _: self._log.info("stopped the connection to {outbound} at "
                                                   "{address}", **self._fields()))
        return d

    def whenConnected(self, failAfterFailures: int | None = None) -> defer.Deferred:
        """The connected protocol, or the next one; fails with CancelledError if the
        service stops first, or with the error of the ``failAfterFailures``-th failed
        attempt in a row.

        Fires in a later reactor turn: ClientService fires its own inside a state
        transition, where calling ``stopService`` or ``whenConnected`` raises."""
        inner = self._client.whenConnected(failAfterFailures=failAfterFailures)
        outer: defer.Deferred = defer.Deferred(lambda _: inner.cancel())

        def deliver(result: Any) -> None:
            if not outer.called:
                (outer.errback if isinstance(result, Failure) else outer.callback)(result)

        inner.addBoth(lambda result: self._reactor.callLater(0, deliver, result) and None)
        return outer

    def _attempt_succeeded(self, protocol: IProtocol) -> IProtocol:
        if self.running:
            if self.state == "failing":
                self._log.info("reached {outbound} at {address} again after {failures} failed "
                               "attempts", failures=self.failures, **self._fields())
            else:
                self._log.info("connected to {outbound} at {address}", **self._fields())
            self.state, self.failures = "connected", 0
        return protocol

    def _attempt_failed(self, reason: Failure) -> Failure:
        if self.running:
            self.failures += 1
            self.last_error = describe_failure(reason)
            if self.state != "failing":
                self.state = "failing"
                self._log.warn("cannot reach {outbound} at {address}: {reason}, retrying",
                               reason=self.last_error, **self._fields())
        return reason

    def _connection_lost(self, reason: Failure) -> None:
        if self.running:
            self.state = "connecting"
            self.last_error = describe_failure(reason)
            self._log.warn("lost the connection to {outbound} at {address}: {reason}; "
                           "reconnecting", reason=self.last_error, **self._fields())
