"""``tsnet tls-cert`` and the shipped ``etc/tsnet-tls.ini``, with real TLS
clients (Python ``ssl`` with ALPN and strict verification, curl, ``openssl
s_client``) against a real ``twistd -n tsnet``; and how an ``ssl:`` listener
reads its PEM files (`tsnet.certs.server_options`): chains sent, bad files
named, no pyOpenSSL deprecation (pyproject's filterwarnings makes one an error)."""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import ssl
import stat
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet import threads

from tests.helpers.certs import make_certs
from tsnet.certs import self_signed, server_options
from tsnet.errors import ConfigError
from tsnet.testing.fixtures import write_config
from tsnet.testing.process import TsnetProcess, json_lines, tsnet

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "etc" / "tsnet-tls.ini"
PORTS = {"opentsdb-tls": "ssl:4243:", "https": "ssl:21443:"}


def tls_cert(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return tsnet(config, "tls-cert", *args, check=check)


def load(directory: Path) -> tuple[x509.Certificate, Any]:
    cert = x509.load_pem_x509_certificate((directory / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "key.pem").read_bytes(), None)
    return cert, key


def sans(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in ext]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the command ----------------------------------------------------------------------------


def test_writes_a_pair_beside_the_config(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "tsnet.ini"  # need not exist: it is not read
    p = tls_cert(config, "--host", "gw.example.net", "--host", "10.1.2.3", "--days", "30")
    [out] = json_lines(p.stdout)
    tls = tmp_path / "etc" / "tls"
    assert out["cert"] == str(tls / "cert.pem") and out["key"] == str(tls / "key.pem")
    assert mode(tls / "key.pem") == 0o600
    assert mode(tls / "cert.pem") == 0o644
    cert, key = load(tls)
    assert sans(cert) == out["hosts"] == ["localhost", "127.0.0.1", "::1", "gw.example.net",
                                          "10.1.2.3"]
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.issuer == cert.subject  # self-signed
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    valid = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=29, hours=23) < valid <= datetime.timedelta(days=30)
    assert out["not_after"] == cert.not_valid_after_utc.isoformat().replace("+00:00", "Z")
    fp = subprocess.run(["openssl", "x509", "-in", str(tls / "cert.pem"), "-noout",
                         "-fingerprint", "-sha256"], capture_output=True, text=True, check=True)
    assert fp.stdout.strip().endswith("=" + out["sha256"])


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    config = tmp_path / "tsnet.ini"
    first = json_lines(tls_cert(config).stdout)[0]
    before = (tmp_path / "tls" / "key.pem").read_bytes()
    p = tls_cert(config, check=False)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == f"tsnet: {tmp_path / 'tls' / 'cert.pem'} exists (--force replaces it)\n"
    assert (tmp_path / "tls" / "key.pem").read_bytes() == before
    (tmp_path / "tls" / "cert.pem").unlink()  # the key alone is refused as well
    assert tls_cert(config, check=False).returncode == 1
    second = json_lines(tls_cert(config, "--force", "--rsa").stdout)[0]
    assert second["sha256"] != first["sha256"]
    _, key = load(tmp_path / "tls")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert mode(tmp_path / "tls" / "key.pem") == 0o600
    assert sorted(f.name for f in (tmp_path / "tls").iterdir()) == ["cert.pem", "key.pem"]


@pytest.mark.parametrize("args,error", [
    (["--days", "0"], "days must be from 1 to 3650, not 0"),
    (["--days", "3651"], "days must be from 1 to 3650, not 3651"),
    (["--host", "not a host"], "'not a host' is neither an IP address nor a host name"),
    (["--host=-bad.example"], "is neither an IP address nor a host name"),
    (["--host", "bücher.example"], "IDNA-encode"),
])
def test_bad_arguments_write_nothing(tmp_path: Path, args: list[str], error: str) -> None:
    p = tls_cert(tmp_path / "tsnet.ini", *args, check=False)
    assert p.returncode != 0 and error in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "tls").exists()


def test_out_and_wildcards(tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "certs"
    tls_cert(tmp_path / "tsnet.ini", "--out", str(out), "--host", "*.lan.example",
             "--host", "fd00::7", "--host", "localhost")  # given twice: listed once
    cert, _ = load(out)
    assert sans(cert) == ["localhost", "127.0.0.1", "::1", "*.lan.example", "fd00::7"]
    assert cert.subject.rfc4514_string() == "O=tsnet local TLS,CN=*.lan.example"


def test_openssl_verifies_it_strictly(tmp_path: Path) -> None:
    tls_cert(tmp_path / "tsnet.ini", "--host", "gw.example.net")
    pem = str(tmp_path / "tls" / "cert.pem")
    for check in (["-verify_hostname", "localhost"], ["-verify_ip", "127.0.0.1"],
                  ["-verify_ip", "::1"], ["-verify_hostname", "gw.example.net"]):
        p = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslserver",
                            *check, "-CAfile", pem, pem], capture_output=True, text=True)
        assert p.returncode == 0, (check, p.stdout, p.stderr)
    p = subprocess.run(["openssl", "verify", "-verify_hostname", "other.example", "-CAfile",
                        pem, pem], capture_output=True, text=True)
    assert p.returncode != 0 and "hostname mismatch" in p.stdout + p.stderr


# --- the shipped config, served by twistd, reached by real clients ---------------------------


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """etc/tsnet-tls.ini as shipped, in a folder of its own (so its ../var)."""
    (tmp_path / "etc").mkdir()
    return Path(shutil.copy(SHIPPED, tmp_path / "etc" / "tsnet-tls.ini"))


def test_shipped_config_needs_the_command_then_checks(shipped: Path) -> None:
    p = tsnet(shipped, "check-config", check=False)
    key = shipped.parent / "tls" / "key.pem"
    assert p.returncode == 1
    assert f"[listener:opentsdb-tls] endpoint: privateKey {key}: no such file" in p.stderr
    assert "tls-cert" in p.stderr and "Traceback" not in p.stderr
    tls_cert(shipped)
    p = tsnet(shipped, "check-config")
    assert "OK (2 listeners: opentsdb-tls, https;" in p.stdout


def python_client(port: int, ca: Path, payload: bytes, hostname: str) -> tuple[Any, str, bytes]:
    """A verified connection as strict as Python 3.13's default, offering ALPN
    as browsers do; returns (ALPN chosen, TLS version, the reply)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=hostname) as s:
        s.sendall(payload)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return s.selected_alpn_protocol(), s.version(), out


@pytest.mark.subprocess
def test_shipped_config_with_real_clients(shipped: Path) -> None:
    tls_cert(shipped)
    text = shipped.read_text()
    for endpoint in PORTS.values():  # the file's ports, made free ones for the test
        assert text.count(endpoint) == 1
        text = text.replace(endpoint, "ssl:0:")
    shipped.write_text(text)
    ca = shipped.parent / "tls" / "cert.pem"
    server = TsnetProcess(shipped)
    try:
        ports = server.wait_bound(set(PORTS))
        telnet, https = ports["opentsdb-tls"], ports["https"]
        # openssl s_client, verifying chain and name, writes a point over telnet
        p = subprocess.run(
            ["openssl", "s_client", "-quiet", "-verify_return_error", "-verify_hostname",
             "localhost", "-connect", f"127.0.0.1:{telnet}", "-CAfile", str(ca)],
            input="put tls.t 1356998400 21.5 room=lab\nversion\nexit\n",
            capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert "net.opentsdb" in p.stdout
        # Python's ssl, strict and with ALPN, on both ports, by name and by address
        for port, host in ((telnet, "localhost"), (https, "127.0.0.1")):
            alpn, version, reply = python_client(
                port, ca, b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n"
                          b"Connection: close\r\n\r\n", host)
            assert (alpn, version) == ("http/1.1", "TLSv1.3")
            assert reply.startswith(b"HTTP/1.1 200 ") and b'"version":"2.4.0"' in reply
        # curl, verifying against the same file, reads the point back over https
        q = urllib.parse.quote("sum:tls.t{room=*}")
        for _ in range(50):  # telnet put is committed within flush_interval
            p = subprocess.run(
                ["curl", "-sS", "--cacert", str(ca), "-w", "\n%{http_code} %{http_version}",
                 f"https://localhost:{https}/api/query?start=1356998000&end=1356999000&m={q}"],
                capture_output=True, text=True, timeout=30)
            assert p.returncode == 0, p.stderr
            body, _, status = p.stdout.rpartition("\n")
            if status == "200 1.1" or "No such name" not in body:  # (not yet committed)
                break
            time.sleep(0.1)
        assert status == "200 1.1", body
        assert json.loads(body)[0]["dps"] == {"1356998400": 21.5}
        # a client given no CA refuses the self-signed certificate
        p = subprocess.run(["curl", "-sS", f"https://localhost:{https}/api/version"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 60, p.stderr  # curl: peer certificate cannot be authenticated
    finally:
        server.stop()


# --- how an ssl: listener reads its files ----------------------------------------------------


TLS_LISTENER = """
[tsnet]
data_dir = var
flush_interval = 0.05

[listener:tls]
protocol = opentsdb
endpoint = ssl:0:{args}
"""


def exchange(port: int, ca: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"version\nexit\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize("where", ["certKey", "extraCertChain"])
@pytest_twisted.inlineCallbacks
def test_the_chain_is_sent(tmp_path: Path, make_server: Any, where: str) -> None:
    """A client that trusts only the root verifies a certificate signed by an
    intermediate CA, whether the chain follows the certificate in ``certKey``
    (as fullchain.pem files have it) or is in ``extraCertChain``."""
    certs = make_certs(tmp_path / "certs", intermediate=True)
    args = (f"privateKey={certs['key']}:certKey={certs['fullchain']}" if where == "certKey"
            else f"privateKey={certs['key']}:certKey={certs['cert']}:"
                 f"extraCertChain={certs['chain']}")
    server = yield make_server(TLS_LISTENER.format(args=args))
    out = yield threads.deferToThread(exchange, server.port("tls"), certs["ca"])
    assert b"net.opentsdb" in out


@pytest_twisted.inlineCallbacks
def test_without_the_chain_the_client_refuses(tmp_path: Path, make_server: Any) -> None:
    certs = make_certs(tmp_path / "certs", intermediate=True)
    server = yield make_server(TLS_LISTENER.format(
        args=f"privateKey={certs['key']}:certKey={certs['cert']}"))
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        yield threads.deferToThread(exchange, server.port("tls"), certs["ca"])


def test_one_file_holding_key_and_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    both = tmp_path / "both.pem"
    both.write_bytes(certs["cert"].read_bytes() + certs["key"].read_bytes())
    server_options({"privateKey": str(both)}).getContext()  # certKey defaults to the key's


def _config_error(tmp_path: Path, args: str) -> str:
    from tsnet.config import load_config
    from tsnet.plugins import load_plugins

    path = write_config(tmp_path / "cfg", TLS_LISTENER.format(args=args))
    with pytest.raises(ConfigError) as e:
        load_config(str(path), load_plugins())
    return str(e.value)


def test_bad_files_are_named(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "a")
    other = make_certs(tmp_path / "b")
    key, cert = certs["key"], certs["cert"]
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(serialization.load_pem_private_key(key.read_bytes(), None)
                          .private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"pw")))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM\n")
    cases = {
        f"privateKey={other['key']}:certKey={cert}":
            f"privateKey {other['key']} is not the key of the certificate in {cert}",
        f"privateKey={encrypted}:certKey={cert}": "the key is encrypted",
        f"privateKey={garbage}:certKey={cert}": f"privateKey {garbage}: no PEM private key",
        f"privateKey={key}:certKey={garbage}": f"certKey {garbage}: no PEM certificate",
        f"privateKey={key}:certKey={cert}:extraCertChain={garbage}":
            f"extraCertChain {garbage}: no PEM certificate",
        f"privateKey={key}": f"certKey {key}: no PEM certificate",
        f"privateKey={key}:certKey={cert}:sslmethod=NOPE":
            "sslmethod 'NOPE' is not an OpenSSL.SSL method",
        "privateKey=tls/key.pem:certKey=tls/cert.pem":
            f"privateKey {tmp_path / 'cfg' / 'tls' / 'key.pem'}: no such file",
    }
    for args, message in cases.items():
        assert message in _config_error(tmp_path, args), args


def test_self_signed_is_bounded() -> None:
    with pytest.raises(ValueError, match="at most 100"):
        self_signed([f"10.0.{i // 256}.{i % 256}" for i in range(100)])


def test_readme_quotes_the_shipped_config() -> None:
    from tests.test_readme import in_order, literal_blocks

    text = (ROOT / "README.rst").read_text()
    section = text[text.index("\nTLS\n---\n"):text.index("\nLimits and failure behaviour\n")]
    [block] = [b for b in literal_blocks(section) if b.startswith("[listener:opentsdb-tls]")]
    shipped = [line.strip() for line in SHIPPED.read_text().split("\n")]
    assert in_order([line.strip() for line in block.split("\n") if line.strip()], shipped)
