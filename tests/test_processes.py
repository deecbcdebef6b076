"""The real commands as a user runs them: `twistd -n tsnet` and `tsnet`."""

from __future__ import annotations

import signal
import textwrap
import time
from pathlib import Path

import pytest

from tests.test_plugins import ECHO_PLUGIN
from tsnet.testing.process import (
    TsnetProcess,
    env_with_pythonpath,
    json_lines,
    send_lines,
    send_until,
    tsnet,
)

pytestmark = pytest.mark.subprocess

CONFIG = """
[tsnet]
data_dir = var
flush_interval = {flush}
auth_refresh = 1

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:iot]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1
auth = token

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = metrics
"""


def config(tmp_path: Path, flush: float = 0.1, extra: str = "") -> Path:
    p = tmp_path / "tsnet.ini"
    p.write_text(textwrap.dedent(CONFIG.format(flush=flush)) + textwrap.dedent(extra))
    return p


def puts(n: int, metric: str = "m", host: str = "a") -> list[str]:
    return [f"put {metric} {1356998400 + i} {i} host={host}\n" for i in range(n)]


def test_sigterm_commits_what_was_read(tmp_path: Path) -> None:
    cfg = config(tmp_path, flush=60)  # nothing would be committed by the timer
    srv = TsnetProcess(cfg)
    try:
        ports = srv.wait_bound({"opentsdb", "iot", "http"})
        assert "listener opentsdb bound tcp:127.0.0.1:" in srv.text()
        assert send_lines(ports["opentsdb"], puts(5000)) == ""
        srv.wait_metric("tsnet_points_received_total", 5000)
        assert srv.metric("tsnet_points_written_total") == 0
        srv.signal(signal.SIGTERM)
        assert srv.wait() == -signal.SIGTERM  # twistd re-raises the signal after a clean stop
    finally:
        srv.stop()
    assert "tsnet stopped cleanly" in srv.text()
    rows = json_lines(tsnet(cfg, "export").stdout)
    assert len(rows) == 5000
    assert rows[0] == {"kind": "series", "solution": "default", "metric": "m",
                       "tags": {"host": "a"}, "time_ms": 1356998400000, "value": 0}


def test_sigkill_after_acks_loses_nothing_acked(tmp_path: Path) -> None:
    site = tmp_path / "site" / "tsnet" / "plugins"
    site.mkdir(parents=True)
    (site / "echo_tsnet.py").write_text(ECHO_PLUGIN)
    env = env_with_pythonpath(tmp_path / "site")
    cfg = config(tmp_path, extra="""
        [listener:echo]
        protocol = echo
        endpoint = tcp:0:interface=127.0.0.1
        """)
    srv = TsnetProcess(cfg, env=env)
    try:
        ports = srv.wait_bound({"echo", "opentsdb"})
        # The echo plugin answers "stored" only after the commit of each line.
        replies = send_until(ports["echo"], [f"put acked{i} {i}\n" for i in range(200)],
                             "stored", 200)
        assert replies.count("stored") == 200
        srv.signal(signal.SIGKILL)
        assert srv.wait() == -signal.SIGKILL
    finally:
        srv.stop()
    rows = json_lines(tsnet(cfg, "export", env=env).stdout)
    assert sorted(r["metric"] for r in rows) == sorted(f"acked{i}" for i in range(200))
    srv = TsnetProcess(cfg, env=env)  # and the store opens again after the crash
    try:
        ports = srv.wait_bound({"opentsdb"})
        send_lines(ports["opentsdb"], puts(10, metric="after"))
        srv.wait_metric("tsnet_points_written_total", 10)
    finally:
        srv.signal(signal.SIGTERM)
        srv.wait()
    assert len(json_lines(tsnet(cfg, "export", env=env).stdout)) == 210


def test_bad_config_exits_nonzero_before_listening(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[listener:x]\nprotocol = opentsdb\nendpoint = tcp:0\ncolour = red\n")
    srv = TsnetProcess(cfg)
    assert srv.wait() == 1
    # one line that names the problem, not twistd's usage text before it
    assert srv.text().strip().splitlines() == [
        f"tsnet: {cfg}: [listener:x] unknown key 'colour' (known keys: "
        "auth, close_on_error, console, endpoint, idle_timeout, line_timeout, max_body, "
        "max_connections, max_connections_per_address, min_rate, protocol, request_timeout, "
        "solution)"]
    p = tsnet(cfg, "check-config", check=False)
    assert p.returncode == 1 and "[listener:x] unknown key 'colour'" in p.stderr
    good = config(tmp_path)
    p = tsnet(good, "check-config")
    assert "OK (3 listeners: opentsdb, iot, http" in p.stdout


def test_port_in_use_exits_nonzero(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = tmp_path / "t.ini"
        cfg.write_text("[listener:a]\nprotocol = opentsdb\n"
                       f"endpoint = tcp:{port}:interface=127.0.0.1\n")
        srv = TsnetProcess(cfg)
        assert srv.wait() == 1
    assert "tsnet cannot start" in srv.text()
    assert "stopped cleanly" not in srv.text()  # a failed start is no clean stop
    assert "tsnet stopped after a failed start" in srv.text()


def test_solution_and_token_commands(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert tsnet(cfg, "solution", "create", "plant-1", "--description", "boilers").stdout
    p = tsnet(cfg, "solution", "create", "plant-1", check=False)
    assert p.returncode == 1 and "exists already" in p.stderr
    p = tsnet(cfg, "solution", "create", "bad name", check=False)
    assert p.returncode == 1 and "is not a solution name" in p.stderr
    sols = json_lines(tsnet(cfg, "solution", "list").stdout)
    assert [(s["name"], s["description"]) for s in sols] == [("plant-1", "boilers")]

    tok = json_lines(tsnet(cfg, "token", "create", "plant-1", "--description", "dev",
                           "--tag", "device=d1", "--expires", "2099-01-01T00:00:00Z").stdout)[0]
    assert set(tok) == {"id", "solution", "read", "write", "read_id", "write_id"}
    assert tok["read"].split(":")[0] != tok["write"].split(":")[0]
    # what HTTP Basic needs as its user: each secret's own id, not the token's
    assert (tok["read_id"], tok["write_id"]) == (tok["read"].split(":")[0],
                                                 tok["write"].split(":")[0])
    assert tok["id"] not in (tok["read_id"], tok["write_id"])
    single = json_lines(tsnet(cfg, "token", "create", "plant-1", "--scope", "read,write",
                              "--single").stdout)[0]
    assert set(single) == {"id", "solution", "token", "token_id"}
    imported = json_lines(tsnet(cfg, "token", "create", "plant-1",
                                "--read-token", "r" * 20, "--write-token", "w" * 20).stdout)[0]
    assert (imported["read"], imported["write"]) == ("r" * 20, "w" * 20)
    p = tsnet(cfg, "token", "create", "plant-1", "--write-token", "short", check=False)
    assert p.returncode == 1 and "16 to 256" in p.stderr
    p = tsnet(cfg, "token", "create", "nosuch", check=False)
    assert p.returncode == 1 and "no solution 'nosuch'" in p.stderr

    listed = tsnet(cfg, "token", "list", "plant-1").stdout
    for secret in (tok["read"], tok["write"], single["token"], "r" * 20):
        assert secret not in listed and secret.split(":")[-1] not in listed
    rows = {r["id"]: r for r in json_lines(listed)}
    assert rows[tok["id"]]["tags"] == {"device": "d1"}
    assert rows[tok["id"]]["expires"] == "2099-01-01T00:00:00Z"

    upd = json_lines(tsnet(cfg, "token", "update", tok["id"], "--tag", "device=d2",
                           "--description", "moved", "--expires", "never").stdout)[0]
    assert (upd["tags"], upd["description"], "expires" in upd) == ({"device": "d2"}, "moved",
                                                                   False)
    assert json_lines(tsnet(cfg, "token", "revoke", tok["id"]).stdout)[0]["revoked"] is True
    p = tsnet(cfg, "token", "revoke", "nosuch", check=False)
    assert p.returncode == 1 and "no token 'nosuch'" in p.stderr

    # a solution holding data is only deleted with --force
    srv = TsnetProcess(config(tmp_path).parent / "tsnet.ini")
    try:
        ports = srv.wait_bound({"iot"})
        assert send_lines(ports["iot"], [f"auth {single['token']}\n", *puts(3)]) == "ok\n"
        srv.wait_metric("tsnet_points_written_total", 3)
    finally:
        srv.signal(signal.SIGTERM)
        srv.wait()
    p = tsnet(cfg, "solution", "delete", "plant-1", check=False)
    assert p.returncode == 1 and "--force" in p.stderr
    assert len(json_lines(tsnet(cfg, "export", "--solution", "plant-1").stdout)) == 3
    tsnet(cfg, "solution", "delete", "plant-1", "--force")
    assert tsnet(cfg, "export").stdout == ""
    assert "plant-1" not in tsnet(cfg, "solution", "list").stdout
    p = tsnet(cfg, "solution", "delete", "default", check=False)
    assert p.returncode == 1


def test_token_changes_reach_running_server_within_5s(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    srv = TsnetProcess(cfg)
    try:
        ports = srv.wait_bound({"iot", "http"})
        tsnet(cfg, "solution", "create", "live")
        tok = json_lines(tsnet(cfg, "token", "create", "live", "--tag", "unit=u1").stdout)[0]
        t0 = time.monotonic()
        while send_lines(ports["iot"], [f"auth {tok['write']}\n"]) != "ok\n":
            assert time.monotonic() - t0 < 5, "new token not in force within 5 s"
            time.sleep(0.2)
        assert send_lines(ports["iot"], [f"auth {tok['write']}\n", *puts(2)]) == "ok\n"
        srv.wait_metric("tsnet_points_written_total", 2)
        tsnet(cfg, "token", "revoke", tok["id"])
        t0 = time.monotonic()
        while send_lines(ports["iot"], [f"auth {tok['write']}\n"]) == "ok\n":
            assert time.monotonic() - t0 < 5, "revocation not in force within 5 s"
            time.sleep(0.2)
        assert send_lines(ports["iot"], [f"auth {tok['write']}\n"]) == "auth: invalid token\n"
    finally:
        srv.signal(signal.SIGTERM)
        assert srv.wait() == -signal.SIGTERM  # twistd re-raises the signal after a clean stop
    rows = json_lines(tsnet(cfg, "export", "--solution", "live").stdout)
    assert [r["tags"] for r in rows] == [{"host": "a", "unit": "u1"}] * 2


def test_twistd_help_and_tsnet_help() -> None:
    import subprocess

    from tsnet.testing.process import BIN

    out = subprocess.run([str(BIN / "twistd"), "tsnet", "--help"], capture_output=True,
                         text=True, timeout=30).stdout
    assert "--config" in out
    out = subprocess.run([str(BIN / "tsnet"), "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    for word in ("check-config", "solution", "token", "export"):
        assert word in out


def test_the_tsnet_command_finds_its_config_in_tsnet_config(tmp_path: Path) -> None:
    import os
    import subprocess

    from tsnet.testing.process import BIN

    good = config(tmp_path)
    env = {**os.environ, "TSNET_CONFIG": str(good)}
    p = subprocess.run([str(BIN / "tsnet"), "check-config"], capture_output=True, text=True,
                       env=env, cwd=tmp_path.parent, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith(f"{good}: OK")
    p = subprocess.run([str(BIN / "tsnet"), "--help"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert "TSNET_CONFIG" in p.stdout
