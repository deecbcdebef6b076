"""Run the real ``twistd -n tsnet`` and ``tsnet`` commands as subprocesses, for
tests that drive tsnet with blocking client libraries, or test the commands
themselves."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
BOUND = re.compile(r"listener (\S+) bound (?:tcp|ssl|udp):[\d.]+:(\d+)")


def tsnet(config: Path, *args: str, check: bool = True, env: dict | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run([str(BIN / "tsnet"), "--config", str(config), *args],
                       capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"tsnet {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class TsnetProcess:
    """``twistd -n tsnet --config FILE`` with its log in a file and its ports parsed."""

    def __init__(self, config: Path, env: dict | None = None) -> None:
        self.config = config
        self.log = config.parent / f"twistd-{time.monotonic_ns()}.log"
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "tsnet", "--config", str(config)],
            stdout=self._logf, stderr=subprocess.STDOUT, cwd=config.parent, env=env)
        self.ports: dict[str, int] = {}

    def text(self) -> str:
        return self.log.read_text()

    def wait_bound(self, names: set[str], timeout: float = 20) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ports = {m.group(1): int(m.group(2)) for m in BOUND.finditer(self.text())}
            if names <= set(self.ports):
                return self.ports
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"listeners {names} not bound; log:\n{self.text()}")

    def metric(self, name: str, port_name: str = "http") -> float:
        if port_name not in self.ports:  # listeners bind one after another
            self.wait_bound(set(self.ports) | {port_name})
        url = f"http://127.0.0.1:{self.ports[port_name]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def wait_metric(self, name: str, value: float, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.metric(name) >= value:
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} never reached {value}: {self.metric(name)}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._logf.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.wait()


@contextmanager
def running(directory: Path, config_text: str, listeners: set[str]) -> Iterator[TsnetProcess]:
    """``config_text`` written as DIRECTORY/tsnet.ini and served by a real
    ``twistd -n tsnet`` until the block ends (then killed); entered once every
    listener in ``listeners`` is bound."""
    cfg = directory / "tsnet.ini"
    cfg.write_text(textwrap.dedent(config_text))
    srv = TsnetProcess(cfg)
    try:
        srv.wait_bound(listeners)
        yield srv
    finally:
        srv.stop()


def send_lines(port: int, lines: list[str], read: bool = False, timeout: float = 10) -> str:
    """Send lines on a blocking socket, half-close, return all the server replied."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall("".join(lines).encode())
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode()


def send_until(port: int, lines: list[str], marker: str, count: int,
               timeout: float = 10) -> str:
    """Send lines and read (without closing) until ``marker`` arrived ``count`` times."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall("".join(lines).encode())
        out = b""
        while out.decode().count(marker) < count:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode()


def env_with_pythonpath(extra: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra), env.get("PYTHONPATH")) if p)
    return env
