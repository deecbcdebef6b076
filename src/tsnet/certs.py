"""Keys and certificates as `cryptography` objects: read from the PEM files of
an ``ssl:`` endpoint, and made self-signed for local TLS (``tsnet tls-cert``).

Twisted's ``ssl:`` endpoint parser loads the files as pyOpenSSL ``X509`` and
``PKey`` objects, which pyOpenSSL (24.3 on) deprecates: every context built
from them warns, and a later pyOpenSSL will refuse them.  `server_options`
reads the files with `cryptography` instead and gives the objects to Twisted's
`CertificateOptions` (whose context passes them to pyOpenSSL as they are), so
tsnet keeps Twisted's TLS defaults (versions, ciphers, no tickets) without
pyOpenSSL's old objects.  It also sends the chain that may follow the
certificate in ``certKey``, which Twisted's parser dropped.

Nothing here knows about listeners or the config: `tsnet.config` checks an
endpoint with it and `tsnet.tls` serves one.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: names every certificate `self_signed` makes is valid for
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
#: the longest validity `self_signed` takes (days): a local certificate is not
#: a CA's, but it should still be renewed now and then
MAX_DAYS = 3650
#: at most this many names in one certificate
MAX_HOSTS = 100
#: the file names `tsnet tls-cert` writes (README and etc/tsnet-tls.ini use them)
CERT_FILE, KEY_FILE = "cert.pem", "key.pem"

_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


# --- reading an ssl: endpoint's files -----------------------------------------------------


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)  # a chain of certificates fits in far less
    except FileNotFoundError:
        raise ValueError(f"{what} {path}: no such file (for local use, `tsnet --config "
                         f"FILE tls-cert` writes a self-signed pair)") from None
    except OSError as e:
        raise ValueError(f"{what} {path}: {e.strerror}") from None


def load_private_key(path: str) -> Any:
    """The first private key of a PEM file (it may hold certificates too)."""
    data = _read(path, "privateKey")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted: a server cannot type a passphrase at each start
        raise ValueError(f"privateKey {path}: the key is encrypted; tsnet needs it "
                         f"unencrypted (readable by the server's user only)") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ValueError(f"privateKey {path}: no PEM private key ({e})") from None


def load_certificates(path: str, what: str = "certKey") -> list[x509.Certificate]:
    """Every certificate of a PEM file, in order (keys in it are skipped)."""
    data = _read(path, what)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{what} {path}: no PEM certificate") from None


def _public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def server_options(args: Mapping[str, str]) -> Any:
    """`twisted.internet.ssl.CertificateOptions` for the (unescaped) arguments
    of an ``ssl:`` endpoint: ``privateKey`` (required), ``certKey`` (default:
    the key's file), ``extraCertChain``, ``dhParameters``, ``sslmethod``, with
    Twisted's meaning.  ValueError naming the file for a missing or bad one, or
    a key that is not the certificate's."""
    from OpenSSL import SSL
    from twisted.internet import ssl
    from twisted.python.filepath import FilePath

    key_path = args["privateKey"]
    cert_path = args.get("certKey") or key_path
    key = load_private_key(key_path)
    cert, *chain = load_certificates(cert_path)
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise ValueError(f"privateKey {key_path} is not the key of the certificate in "
                         f"{cert_path}")
    if args.get("extraCertChain"):
        chain += load_certificates(args["extraCertChain"], "extraCertChain")
    kw: dict[str, Any] = {}
    if args.get("dhParameters"):
        kw["dhParameters"] = ssl.DiffieHellmanParameters.fromFile(
            FilePath(args["dhParameters"]))
    if args.get("sslmethod"):
        method = getattr(SSL, args["sslmethod"], None)
        if not args["sslmethod"].endswith("_METHOD") or not isinstance(method, int):
            raise ValueError(f"sslmethod {args['sslmethod']!r} is not an OpenSSL.SSL "
                             f"method such as TLS_METHOD")
        kw["method"] = method
    # CertificateOptions' types say X509/PKey; its context takes these as they are
    return ssl.CertificateOptions(privateKey=key, certificate=cert,
                                  extraCertChain=chain or None, **kw)


# --- making a self-signed certificate ---------------------------------------------------


def san_entry(text: str) -> x509.GeneralName:
    """A subjectAltName for a host name or an IP address; ValueError if ``text``
    is neither (host names in ASCII: IDNA-encode others; ``*.`` for a wildcard)."""
    host = text.strip().rstrip(".").lower()
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    labels = host.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if not host or len(host) > 253 or not all(_DNS_LABEL.match(la) for la in labels):
        raise ValueError(f"{text!r} is neither an IP address nor a host name "
                         f"(letters, digits, '-' and '.'; IDNA-encode other letters)")
    return x509.DNSName(host)


def self_signed(hosts: Iterable[str] = (), days: int = 365, use_rsa: bool = False,
                now: datetime.datetime | None = None) -> tuple[Any, x509.Certificate]:
    """(private key, certificate): a server certificate signed by its own key,
    valid for `LOCAL_HOSTS` and ``hosts`` from an hour ago (clocks differ) for
    ``days`` days.  EC P-256 (RSA 2048 with ``use_rsa``, for old clients).  Not
    a CA (``CA:FALSE``), with the key usages, key identifiers and subject names
    that strict verifiers (Python 3.13, browsers) ask of a server
    certificate: a client trusts it by being given this very file."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be from 1 to {MAX_DAYS}, not {days}")
    names: list[x509.GeneralName] = []
    for h in (*LOCAL_HOSTS, *hosts):
        entry = san_entry(h)
        if entry not in names:
            names.append(entry)
    if len(names) > MAX_HOSTS:
        raise ValueError(f"at most {MAX_HOSTS} host names and addresses")
    key: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if use_rsa
                else ec.generate_private_key(ec.SECP256R1()))
    extra_hosts = [n for n in names[len(LOCAL_HOSTS):] if isinstance(n, x509.DNSName)]
    common_name = extra_hosts[0].value if extra_hosts else "localhost"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tsnet local TLS")])
    now = now or datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=use_rsa, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256()))
    return key, cert


def _write_replacing(path: Path, data: bytes, mode: int) -> None:
    """``data`` in ``path`` with ``mode``, whole or not at all: a temporary file
    made with ``mode`` from the start (a key is never readable by others, not
    even for a moment), then renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_pair(directory: Path, key: Any, cert: x509.Certificate,
               force: bool = False) -> tuple[Path, Path]:
    """Writes ``key.pem`` (mode 0600, PKCS#8, unencrypted) and ``cert.pem``
    (0644) into ``directory`` (made if missing); FileExistsError if either is
    there and not ``force``.  Returns (cert path, key path)."""
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if not force:
        for p in (cert_path, key_path):
            if os.path.lexists(p):
                raise FileExistsError(f"{p} exists (--force replaces it)")
    directory.mkdir(parents=True, exist_ok=True)
    _write_replacing(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), 0o600)
    _write_replacing(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def hosts_of(cert: x509.Certificate) -> list[str]:
    """The host names and addresses of a certificate's subjectAltName."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in names]


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate as ``AB:CD:...``, as browsers and
    ``openssl x509 -fingerprint -sha256`` show it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
