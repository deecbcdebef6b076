"""``twistd tsnet`` as a daemon (no ``-n``), and the pidfile in both modes: a
start that fails reaches the shell as status 1 with one line naming the
problem and leaves no pidfile; a good start returns 0 only once the server
accepts, and SIGTERM stops it and removes its pidfile."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tsnet.testing.process import BIN, BOUND, json_lines, send_lines, tsnet

pytestmark = pytest.mark.subprocess

GOOD = """\
[tsnet]
data_dir = var
flush_interval = 0.1

[listener:opentsdb]
protocol = opentsdb
endpoint = tcp:0:interface=127.0.0.1

[listener:udp]
protocol = atsd
endpoint = udp:0:interface=127.0.0.1
"""


def twistd(directory: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``twistd ARGS`` run in ``directory`` as a user runs it; returns once the
    command does (a daemon's parent exits when the child reports its start)."""
    return subprocess.run([str(BIN / "twistd"), *args], cwd=directory, capture_output=True,
                          text=True, timeout=timeout)


@contextmanager
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def wait_for_text(path: Path, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never in {path}:\n{content}")


def gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def port_in_use_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "tsnet.ini"
    cfg.write_text(GOOD + f"\n[listener:taken]\nprotocol = opentsdb\n"
                   f"endpoint = tcp:{port}:interface=127.0.0.1\n")
    return cfg


def test_daemon_with_a_port_taken_exits_1_naming_it_and_leaves_no_pidfile(
        tmp_path: Path) -> None:
    with taken_port() as port:
        cfg = port_in_use_config(tmp_path, port)
        p = twistd(tmp_path, "tsnet", "--config", str(cfg))
        assert p.returncode == 1, p
        assert not (tmp_path / "twistd.pid").exists()
        problem = f"listener taken cannot listen on tcp:127.0.0.1:{port}: Address already in use"
        assert p.stderr.splitlines()[0] == f"An error has occurred: {problem.encode()!r}"
        log = wait_for_text(tmp_path / "twistd.log", "tsnet stopped after a failed start")
    assert f"tsnet cannot start: {problem}" in log
    assert "Traceback" not in log
    # it failed before the storage opened: nothing was made in data_dir
    assert not (tmp_path / "var").exists()


def test_daemon_whose_storage_cannot_open_exits_1_and_leaves_no_pidfile(
        tmp_path: Path) -> None:
    cfg = tmp_path / "tsnet.ini"
    cfg.write_text(GOOD)
    (tmp_path / "var").write_text("a file where the data folder should be")
    p = twistd(tmp_path, "tsnet", "--config", str(cfg))
    assert p.returncode == 1, p
    assert p.stderr.startswith("An error has occurred: ") and "var" in p.stderr
    assert not (tmp_path / "twistd.pid").exists()
    wait_for_text(tmp_path / "twistd.log", "tsnet stopped after a failed start")


def test_foreground_failure_leaves_no_pidfile(tmp_path: Path) -> None:
    with taken_port() as port:
        cfg = port_in_use_config(tmp_path, port)
        p = twistd(tmp_path, "-n", "--pidfile=tsnet.pid", "tsnet", "--config", str(cfg))
    assert p.returncode == 1
    assert not (tmp_path / "tsnet.pid").exists()
    lines = [line for line in p.stdout.splitlines() if "tsnet cannot start" in line]
    assert len(lines) == 1 and lines[0].endswith(
        f"listener taken cannot listen on tcp:127.0.0.1:{port}: Address already in use")


def test_daemon_returns_0_once_serving_and_sigterm_removes_the_pidfile(
        tmp_path: Path) -> None:
    cfg = tmp_path / "tsnet.ini"
    cfg.write_text(GOOD)
    p = twistd(tmp_path, "tsnet", "--config", str(cfg))
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    pid = int((tmp_path / "twistd.pid").read_text())
    try:
        # the shell got its 0 only once every listener accepts: no wait needed
        log = (tmp_path / "twistd.log").read_text()
        ports = {m.group(1): int(m.group(2)) for m in BOUND.finditer(log)}
        assert set(ports) == {"opentsdb", "udp"}
        assert "tsnet running: 2 listeners" in log
        assert send_lines(ports["opentsdb"], ["put m 1356998400 1 host=a\n", "bogus\n"]) == \
            "unknown command: bogus.  Try `help'.\n"
        wait_for_text(tmp_path / "twistd.log", "tsnet running")
    finally:
        os.kill(pid, 15)
    assert gone(pid)
    assert not (tmp_path / "twistd.pid").exists()
    assert "tsnet stopped cleanly" in (tmp_path / "twistd.log").read_text()
    assert [r["metric"] for r in json_lines(tsnet(cfg, "export").stdout)] == ["m"]


def test_a_second_daemon_on_the_same_ports_fails_and_the_first_keeps_its_pidfile(
        tmp_path: Path) -> None:
    """The usual way a port is taken: the server runs already."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with taken_port() as port:
        pass  # a free port, now closed again
    text = f"[listener:a]\nprotocol = opentsdb\nendpoint = tcp:{port}:interface=127.0.0.1\n"
    (first / "tsnet.ini").write_text(text)
    (second / "tsnet.ini").write_text(text)
    assert twistd(first, "tsnet", "--config", "tsnet.ini").returncode == 0
    pid = int((first / "twistd.pid").read_text())
    try:
        p = twistd(second, "tsnet", "--config", "tsnet.ini")
        assert p.returncode == 1 and "Address already in use" in p.stderr
        assert not (second / "twistd.pid").exists()
        assert (first / "twistd.pid").read_text() == str(pid)
        os.kill(pid, 0)  # still running
    finally:
        os.kill(pid, 15)
    assert gone(pid)
    assert not (first / "twistd.pid").exists()
