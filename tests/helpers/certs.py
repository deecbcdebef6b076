"""Certificates made for a test: a CA and a server certificate for 127.0.0.1,
and a plain TLS server endpoint serving them (a test's remote peer)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.endpoints import SSL4ServerEndpoint

from tsnet.certs import server_options


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key: Any, issuer: tuple[x509.Name, Any] | None, ca: bool,
           hosts: tuple[str, ...] = ()) -> x509.Certificate:
    """A certificate for ``key`` signed by ``issuer`` (name, key), or by itself."""
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1)))
    b = (b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                         critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer_key.public_key()), critical=False))
    if ca:  # what strict verifiers (Python 3.13's default) ask of a CA
        b = (b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(
                 digital_signature=False, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=True,
                 crl_sign=True, encipher_only=False, decipher_only=False), critical=True))
    if hosts:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.DNSName(h) if h[0].isalpha() else x509.IPAddress(ipaddress.ip_address(h))
            for h in hosts]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def make_certs(directory: Path, intermediate: bool = False) -> dict[str, Path]:
    """Writes ca.pem, server.pem (cert) and server.key; returns their paths.
    With ``intermediate``, a CA under ca.pem signs the server's certificate, and
    is written to chain.pem (what ``extraCertChain=`` or the end of ``certKey``
    holds) and to fullchain.pem after the server's certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("tsnet test CA", ca_key, None, ca=True)
    signer, chain = (ca.subject, ca_key), []
    if intermediate:
        mid_key = ec.generate_private_key(ec.SECP256R1())
        chain = [_issue("tsnet test intermediate CA", mid_key, signer, ca=True)]
        signer = (chain[0].subject, mid_key)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue("localhost", key, signer, ca=False, hosts=("localhost", "127.0.0.1"))
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem",
             "key": directory / "server.key"}
    paths["ca"].write_bytes(_pem(ca))
    paths["cert"].write_bytes(_pem(cert))
    paths["key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    if intermediate:
        paths["chain"], paths["fullchain"] = directory / "chain.pem", directory / "fullchain.pem"
        paths["chain"].write_bytes(_pem(*chain))
        paths["fullchain"].write_bytes(_pem(cert, *chain))
    return paths


def tls_endpoint(reactor: Any, certs: dict[str, Path], port: int = 0,
                 interface: str = "127.0.0.1") -> SSL4ServerEndpoint:
    """Twisted's TLS server endpoint (no tsnet ALPN, no handshake log) serving
    ``certs``' key and certificate, loaded as tsnet loads them: a remote peer's
    ``ssl:`` endpoint without Twisted's parser and its deprecated pyOpenSSL objects."""
    options = server_options({"privateKey": str(certs["key"]), "certKey": str(certs["cert"])})
    return SSL4ServerEndpoint(reactor, port, options, interface=interface)
