"""The IoT token profile end to end, as a device owner meets it: a token made
with `tsnet token create`, points pushed over TLS, read back with the READ token
over HTTPS on the same port, and everything refused after `tsnet token revoke`."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.certs import make_certs
from tsnet.testing.process import TsnetProcess, json_lines, tsnet

pytestmark = pytest.mark.subprocess

CONFIG = """
[tsnet]
data_dir = var
flush_interval = 0.1
auth_refresh = 1

[listener:iot]
protocol = opentsdb
endpoint = ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}
auth = token

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = metrics
"""


def tls_lines(port: int, ca: Path, lines: list[str]) -> str:
    """Send lines over verified TLS, half-close, return what the server said."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall("".join(lines).encode())
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ssl.SSLEOFError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
            if out.endswith(b"\n") and (b"ok\n" in out or b"invalid" in out):
                break
    return out.decode()


def https(port: int, ca: Path, path: str, secret: str | None) -> tuple[int, object, dict]:
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(f"https://localhost:{port}{path}")
    if secret is not None:
        user, _, key = secret.partition(":")
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode())
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


def test_iot_profile_end_to_end(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "tls")
    cfg = tmp_path / "tsnet.ini"
    cfg.write_text(CONFIG.format(key=certs["key"], cert=certs["cert"]))
    tsnet(cfg, "solution", "create", "greenhouse")
    tok = json_lines(tsnet(cfg, "token", "create", "greenhouse", "--tag", "device=d1").stdout)[0]
    srv = TsnetProcess(cfg)
    try:
        ports = srv.wait_bound({"iot", "http"})
        t0 = 1356998400
        reply = tls_lines(ports["iot"], certs["ca"], [
            f"auth {tok['write']}\n",
            *(f"put humidity {t0 + i} {40 + i} zone=north\n" for i in range(5)),
        ])
        assert reply == "ok\n"
        srv.wait_metric("tsnet_points_written_total", 5)

        path = f"/api/query?start={t0}&end={t0 + 10}&m=sum:humidity{{zone=north}}"
        status, body, _ = https(ports["iot"], certs["ca"], path, tok["read"])
        assert status == 200, body
        assert [(q["metric"], q["tags"], q["dps"]) for q in body] == [
            ("humidity", {"device": "d1", "zone": "north"},
             {str(t0 + i): 40 + i for i in range(5)})]
        status, body, headers = https(ports["iot"], certs["ca"], path, None)
        assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Basic")
        status, body, _ = https(ports["iot"], certs["ca"], path, tok["write"])
        assert status == 403

        tsnet(cfg, "token", "revoke", tok["id"])
        deadline = time.monotonic() + 5
        while tls_lines(ports["iot"], certs["ca"], [f"auth {tok['write']}\n"]) == "ok\n":
            assert time.monotonic() < deadline, "revocation not in force within 5 s"
            time.sleep(0.2)
        assert https(ports["iot"], certs["ca"], path, tok["read"])[0] == 401
    finally:
        srv.stop()
