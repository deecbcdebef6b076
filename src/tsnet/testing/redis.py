"""A real ``redis-server`` for tests: a subprocess in its own folder on a free
loopback port, optionally with a password, an append-only file or TLS.

Tests of the Redis storage backend need a server that behaves as production
does (persistence, restarts, AUTH, TLS), so this runs the real binary rather
than a fake.  In a conftest.py: ``pytest_plugins = ["tsnet.testing.redis"]``;
then the ``redis_server`` fixture (one started server) or ``redis_servers``
(``redis_servers(n=1, **options)`` -> started servers); every server is
stopped after the test.  Outside pytest, ``with RedisServer(folder) as s:``.

``each_backend`` runs a test once on each storage backend, ids ``[sqlite]``
and ``[redis]``: it is the ``[storage:default]`` body to serve, for redis
that of a `redis_server` started for the test.  A module opts in by
overriding ``storage_config`` (see `tsnet.testing.fixtures`) with it, or by
formatting it into the config of the process it runs.

`RedisServer.command` is a small blocking RESP client, so a test can look at
what the server holds (``DBSIZE``, ``KEYS *``, ``CONFIG GET``) without going
through the client library under test.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
PORT_ATTEMPTS = 5
# what redis-server logs when the port it was given is taken
BIND_FAILED = ("Address already in use", "Failed listening on port")

class RedisError(Exception):
    """An error reply (``-ERR ...``) from the server."""


class RedisConnectionClosed(ConnectionError):
    """The server closed the connection instead of replying (as SHUTDOWN does)."""


class RedisTLSUnsupported(RuntimeError):
    """This ``redis-server`` was built without TLS (``BUILD_TLS=no``)."""


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now (bound to 0, then released); the
    caller retries if someone takes it before redis-server binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_binary(name: str = "redis-server") -> str:
    """The absolute path of ``name``; a missing binary is a setup error, not a
    reason to skip, so this says how to install it."""
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(
            f"{name} not found on PATH; run tools/install-test-deps "
            "(apt-get install redis-server)")
    return path


def tls_supported(binary: str, directory: Path) -> tuple[bool, str]:
    """Whether ``binary`` was built with TLS, and what it said.

    Asked with ``--tls-port`` and no certificate: a TLS build refuses to start
    for want of ``tls-cert-file``; one without TLS does not know the directive.
    Either way it exits at once without binding anything."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        p = subprocess.run(
            [binary, "--port", "0", "--tls-port", str(free_port()), "--save", "",
             "--dir", str(directory), "--logfile", ""],
            capture_output=True, text=True, timeout=5, cwd=directory)
    except subprocess.TimeoutExpired:  # kept running: not the refusal a TLS build gives
        return False, f"{binary} --tls-port PORT kept running without a certificate"
    out = p.stdout + p.stderr
    return "tls-cert-file" in out and "Bad directive" not in out, out


def make_certs(directory: Path, hostname: str = "localhost",
               ip: str = HOST) -> dict[str, Path]:
    """A throwaway CA and a server certificate it signed, for ``hostname`` and
    ``ip`` (both as SANs, so clients may verify either); returns the paths of
    ``ca.pem``, ``server.pem`` and ``server.key``.  EC keys: fast to make."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(name("tsnet test redis CA"))
          .issuer_name(name("tsnet test redis CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(valid[0]).not_valid_after(valid[1])
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, key_cert_sign=True, crl_sign=True,
              content_commitment=False, key_encipherment=False, data_encipherment=False,
              key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name(hostname))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0]).not_valid_after(valid[1])
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address(ip))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem",
             "key": directory / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].touch(mode=0o600)
    paths["key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


def _quote(value: str | Path) -> str:
    """A redis.conf argument: double-quoted, so paths with spaces survive."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _encode(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    return str(arg).encode()


def _read_reply(f: Any, decode: bool) -> Any:
    """One RESP2 reply from the buffered socket file ``f``."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise RedisConnectionClosed("connection closed by redis-server")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise RedisConnectionClosed("connection closed by redis-server")
        return data[:-2].decode() if decode else data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f, decode) for _ in range(n)]
    raise ConnectionError(f"not a RESP reply: {line!r}")


class RedisServer:
    """One ``redis-server`` process, restartable on the same port and folder.

    ``directory`` holds everything it writes (``redis.conf``, ``redis.log``,
    the append-only files, the TLS certificates), so a test's tmp_path keeps
    the evidence.  ``save ""`` unless ``appendonly``: no RDB snapshots behind a
    test's back.  The port is picked on the first `start` and kept, so data and
    clients survive `restart`."""

    host = HOST

    def __init__(self, directory: Path | str, *, password: str | None = None,
                 appendonly: bool = False, appendfsync: str = "everysec",
                 tls: bool = False, binary: str = "redis-server",
                 start_timeout: float = START_TIMEOUT) -> None:
        self.directory = Path(directory).absolute()
        self.password = password
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.tls = tls
        self.binary = binary
        self.start_timeout = start_timeout
        self.config_path = self.directory / "redis.conf"
        self.log_path = self.directory / "redis.log"
        self.ca_path: Path | None = None
        self.cert_path: Path | None = None
        self.key_path: Path | None = None
        self._port: int | None = None
        self._proc: subprocess.Popen | None = None

    # -- addresses ----------------------------------------------------------

    @property
    def port(self) -> int:
        """The port clients connect to (the TLS port when ``tls``)."""
        if self._port is None:
            raise RuntimeError("RedisServer has no port until start()")
        return self._port

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0`` (``rediss://`` with TLS)."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        return f"{scheme}://{auth}{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> RedisServer:
        """Start and return once the server answers PING (and is this process,
        not another one that got the port).  The first start picks a free
        port, retrying if redis-server cannot bind it; later ones reuse it."""
        if self.running:
            raise RuntimeError(f"redis-server already running (pid {self.pid})")
        self.directory.mkdir(parents=True, exist_ok=True)
        binary = find_binary(self.binary)
        if self.tls and self.ca_path is None:
            supported, said = tls_supported(binary, self.directory)
            if not supported:
                raise RedisTLSUnsupported(
                    f"{binary} was built without TLS support; it said:\n{said.strip()}")
            certs = make_certs(self.directory / "tls")
            self.ca_path, self.cert_path, self.key_path = (
                certs["ca"], certs["cert"], certs["key"])
        keep_port = self._port is not None
        for attempt in range(PORT_ATTEMPTS):
            if not keep_port:
                self._port = free_port()
            elif attempt:
                time.sleep(0.1)  # same port: give whoever holds it a moment
            if self._spawn_and_wait():
                return self
        raise RuntimeError(f"redis-server could not bind {self.host}:{self._port} "
                           f"after {PORT_ATTEMPTS} attempts; log:\n{self._log_since(0)}")

    def stop(self, timeout: float = 10) -> int | None:
        """``SHUTDOWN NOSAVE`` (it flushes and fsyncs the append-only file, and
        exits at once, where SIGTERM waits for the next server tick) and wait
        for the exit; SIGTERM if the command cannot be sent, SIGKILL after
        ``timeout``.  Returns the exit status (None if it was not started)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                self.command("SHUTDOWN", "NOSAVE", timeout=timeout)
            except RedisConnectionClosed:
                pass  # what success looks like
            except (OSError, RedisError):
                proc.send_signal(signal.SIGTERM)
        return self._end(None, timeout)

    def kill(self) -> int | None:
        """SIGKILL, as a crash would: only what was already fsynced survives."""
        return self._end(signal.SIGKILL, 10)

    def restart(self) -> RedisServer:
        """`stop` then `start` on the same port and folder."""
        self.stop()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<RedisServer {self.host}:{self._port} {state} in {self.directory}>"

    # -- talking to it ------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A Python client context that trusts only this server's CA."""
        if self.ca_path is None:
            raise RuntimeError("not a TLS RedisServer (or not started yet)")
        return ssl.create_default_context(cafile=str(self.ca_path))

    def client_tls(self, hostname: str = HOST) -> Any:
        """Twisted client TLS options trusting this server's CA, e.g. for
        ``txredisapi.Connection(..., ssl_context_factory=server.client_tls())``."""
        from twisted.internet import ssl as tssl

        if self.ca_path is None:
            raise RuntimeError("not a TLS RedisServer (or not started yet)")
        ca = tssl.Certificate.loadPEM(self.ca_path.read_bytes())
        return tssl.optionsForClientTLS(hostname, trustRoot=ca)

    def command(self, *args: Any, auth: bool = True, decode: bool = False,
                timeout: float = 10) -> Any:
        """Send one command on a fresh blocking connection and return the parsed
        reply: str for a status, bytes (str with ``decode``) for bulk strings,
        int, list or None; an error reply raises `RedisError`.  Authenticates
        first when the server has a password, unless ``auth=False``."""
        with self._connect(timeout) as sock, sock.makefile("rb") as f:
            if auth and self.password is not None:
                sock.sendall(self._pack("AUTH", self.password))
                _read_reply(f, decode)
            sock.sendall(self._pack(*args))
            return _read_reply(f, decode)

    def dbsize(self, db: int = 0) -> int:
        """Keys in database ``db``."""
        info = self.command("INFO", "keyspace", decode=True)
        for line in info.splitlines():
            if line.startswith(f"db{db}:"):
                return int(line.split(":", 1)[1].split(",")[0].split("=")[1])
        return 0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- internals ----------------------------------------------------------

    @staticmethod
    def _pack(*args: Any) -> bytes:
        parts = [_encode(a) for a in args]
        return b"*%d\r\n" % len(parts) + b"".join(
            b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if not self.tls:
            return sock
        try:
            return self.ssl_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def _config(self) -> str:
        lines = [
            f"bind {self.host}",
            "protected-mode yes",
            "daemonize no",
            'pidfile ""',
            f"dir {_quote(self.directory)}",
            f"logfile {_quote(self.log_path)}",
            "loglevel notice",
            "databases 16",
        ]
        if self.tls:
            lines += [
                "port 0",
                f"tls-port {self._port}",
                f"tls-cert-file {_quote(self.cert_path)}",
                f"tls-key-file {_quote(self.key_path)}",
                f"tls-ca-cert-file {_quote(self.ca_path)}",
                "tls-auth-clients no",
            ]
        else:
            lines.append(f"port {self._port}")
        if self.appendonly:
            lines += ["appendonly yes", f"appendfsync {self.appendfsync}"]
        else:
            lines += ['save ""', "appendonly no"]
        if self.password is not None:
            lines.append(f"requirepass {_quote(self.password)}")
        return "\n".join(lines) + "\n"

    def _log_since(self, offset: int) -> str:
        text = self.log_text()
        return text[offset:] if len(text) >= offset else text

    def _spawn_and_wait(self) -> bool:
        """One attempt: True once it answers, False if the port was taken;
        any other failure raises (with the log), leaving no process behind."""
        self.config_path.write_text(self._config())
        offset = len(self.log_text())
        with open(self.log_path, "ab") as out:  # early errors go to stderr
            self._proc = subprocess.Popen(
                [find_binary(self.binary), str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.directory)
        deadline = time.monotonic() + self.start_timeout
        last: BaseException | None = None
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    said = self._log_since(offset)
                    self._proc = None
                    if any(m in said for m in BIND_FAILED):
                        return False
                    raise RuntimeError(f"redis-server exited at start; log:\n{said}")
                try:
                    if self._answers():
                        return True
                except (OSError, RedisError) as e:  # not listening or still loading
                    last = e
                time.sleep(0.005)
        except BaseException:
            self.kill()
            raise
        self.kill()
        raise TimeoutError(f"redis-server did not answer PING within {self.start_timeout}s "
                           f"({last!r}); log:\n{self._log_since(offset)}")

    def _answers(self) -> bool:
        """PONG, from our own process (INFO's process_id), not from whoever
        else may hold the port while ours is failing to bind it."""
        if self.command("PING", timeout=1) != "PONG":
            return False
        info = self.command("INFO", "server", decode=True, timeout=1)
        return f"process_id:{self.pid}\r\n" in info

    def _end(self, sig: int | None, timeout: float) -> int | None:
        """Send ``sig`` (if any), wait up to ``timeout``, then SIGKILL."""
        proc = self._proc
        if proc is None:
            return None
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._proc = None
        return proc.returncode


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[Callable[..., list[RedisServer]]]:
    """``redis_servers(n=1, **options)`` -> ``n`` started servers, each in its
    own ``tmp_path/redis-K`` (options as for `RedisServer`); all stopped after
    the test."""
    started: list[RedisServer] = []

    def make(n: int = 1, **options: Any) -> list[RedisServer]:
        made = []
        for _ in range(n):
            server = RedisServer(tmp_path / f"redis-{len(started) + 1}", **options)
            started.append(server)
            made.append(server.start())
        return made

    yield make
    errors = []
    for server in reversed(started):
        try:
            server.stop()
        except Exception as e:  # stop the others anyway
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started plain `RedisServer` in ``tmp_path/redis``, stopped after the test."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


#: the backends ``each_backend`` runs a test on
BACKENDS = ("sqlite", "redis")


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def each_backend(request: pytest.FixtureRequest) -> str:
    """The ``[storage:default]`` body of each backend in turn: ``backend =
    sqlite``, then ``backend = redis`` with the ``url`` of this test's
    `redis_server` (the same server a test gets by asking for that fixture, and
    the one store of every tsnet server the test starts, where on SQLite each
    has its own ``data_dir``)."""
    if request.param == "sqlite":
        return "backend = sqlite\n"
    server = request.getfixturevalue("redis_server")
    return f"backend = redis\nurl = {server.url}\n"
