"""contrib/systemd: the unit is valid for systemd (``systemd-analyze verify``),
hardened (``systemd-analyze security``), and its ExecStart line, run as the
unit runs it (its working directory, umask and a bare environment) on its
config with the data folder in a temporary directory, starts tsnet, serves,
keeps its files in the data folder, and stops cleanly on SIGTERM.

What is not run here: systemd itself starting the unit (no systemd as PID 1
on a test machine), so neither User= nor the file system protections are
exercised, only checked by systemd's own analyser."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tsnet.config import load_config
from tsnet.plugins import load_plugins
from tsnet.testing.process import BIN, BOUND, json_lines, tsnet

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "systemd" / "tsnet.service"
CONFIG = ROOT / "contrib" / "systemd" / "tsnet.ini"
#: where README's install commands put the virtualenv, the config and the data
VENV_BIN, ETC_CONFIG, STATE = "/opt/tsnet/bin/", "/etc/tsnet/tsnet.ini", "/var/lib/tsnet"


def unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections: key -> every value given (keys may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, value = line.split("=", 1)
        assert section is not None
        section.setdefault(key, []).append(value)
    return out


def one(service: dict[str, list[str]], key: str) -> str:
    (value,) = service[key]
    return value


def test_the_unit_runs_twistd_in_the_foreground_as_tsnet_with_the_data_in_its_state_dir() -> None:
    service = unit(UNIT.read_text())["Service"]
    assert one(service, "Type") == "simple"
    assert (one(service, "User"), one(service, "StateDirectory")) == ("tsnet", "tsnet")
    assert one(service, "WorkingDirectory") == STATE
    for key, value in [("ProtectSystem", "strict"), ("ReadWritePaths", STATE),
                       ("NoNewPrivileges", "yes"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("CapabilityBoundingSet", "")]:
        assert one(service, key) == value, key
    argv = shlex.split(one(service, "ExecStart"))
    assert argv[0] == VENV_BIN + "twistd"
    twistd_options = argv[1:argv.index("tsnet")]
    assert "--nodaemon" in twistd_options  # systemd watches the process itself
    assert "--pidfile=" in twistd_options  # no pidfile in a read-only world
    assert "--logfile=-" in twistd_options  # to journald
    assert argv[argv.index("tsnet") + 1:] == ["--config", ETC_CONFIG]
    # the config it names keeps everything in the state directory
    cfg = load_config(str(CONFIG), load_plugins())
    assert cfg.data_dir == STATE
    assert cfg.sections["tsstore"]["admin_key_file"].startswith(STATE + "/")
    assert all("interface=127.0.0.1" in ln.endpoint for ln in cfg.listeners.values())


def runnable_unit(tmp_path: Path) -> Path:
    """The unit with the virtualenv's path replaced by this one's, as a file
    systemd-analyze can load (it checks that ExecStart's program exists)."""
    path = tmp_path / "tsnet.service"
    path.write_text(UNIT.read_text().replace(VENV_BIN, f"{BIN}/"))
    return path


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    p = subprocess.run(["systemd-analyze", "verify", str(runnable_unit(tmp_path))],
                       capture_output=True, text=True, timeout=120)
    problems = [line for line in (p.stdout + p.stderr).splitlines() if "tsnet.service" in line]
    assert (p.returncode, problems) == (0, [])


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path) -> None:
    p = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                        str(runnable_unit(tmp_path))],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for tsnet.service: ([\d.]+) (\w+)", p.stdout)
    assert m, p.stdout + p.stderr
    # 0 is fully locked down, 10 not at all; systemd calls under 2 "OK" (a
    # plain unit with none of the options is 9.6 "UNSAFE")
    assert float(m.group(1)) < 2.0 and m.group(2) == "OK", p.stdout


def free_ports_config(state: Path, etc: Path) -> Path:
    """contrib/systemd/tsnet.ini with the data folder in ``state`` and every
    port 0, in a folder of its own, as /etc/tsnet would be."""
    text = CONFIG.read_text().replace(STATE, str(state))
    text = re.sub(r"endpoint = (tcp|udp):\d+:", r"endpoint = \1:0:", text)
    etc.mkdir()
    path = etc / "tsnet.ini"
    path.write_text(text)
    return path


def tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mode for p in sorted(path.rglob("*"))}


def test_the_unit_s_exec_start_serves_and_stops_cleanly(tmp_path: Path) -> None:
    service = unit(UNIT.read_text())["Service"]
    state, etc = tmp_path / "state", tmp_path / "etc"
    state.mkdir(mode=0o750)  # as StateDirectory= makes it
    cfg = free_ports_config(state, etc)
    argv = [a.replace(VENV_BIN, f"{BIN}/").replace(ETC_CONFIG, str(cfg))
            for a in shlex.split(one(service, "ExecStart"))]
    assert argv[0] == f"{BIN}/twistd" and str(cfg) in argv
    etc_before = tree(etc)
    journal = tmp_path / "journal"
    # systemd's environment is bare, the working directory and umask the unit's
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    with open(journal, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=one(service, "WorkingDirectory").replace(STATE, str(state)),
                                umask=int(one(service, "UMask"), 8))
    try:
        deadline = time.monotonic() + 30
        while "tsnet running" not in journal.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, journal.read_text()
            time.sleep(0.05)
        ports = {m.group(1): int(m.group(2)) for m in BOUND.finditer(journal.read_text())}
        assert set(ports) == {"opentsdb", "atsd", "atsd-udp", "http"}
        with socket.create_connection(("127.0.0.1", ports["opentsdb"]), timeout=10) as s:
            s.sendall(b"put sys.cpu.user 1356998400 42.5 host=web01\n")
        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/metrics",
                                        timeout=5) as r:
                if re.search(r"^tsnet_points_written_total\S* 1(\.0)?$", r.read().decode(),
                             re.M):
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == -signal.SIGTERM  # what systemd counts as a clean stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = journal.read_text()
    assert "tsnet stopped cleanly" in text
    assert "Traceback" not in text
    # every file in the state directory (no pidfile, no twistd.log), none
    # readable by others (UMask=0027); the config folder untouched
    files = tree(state)
    assert "default.sqlite" in files and "tsstore-admin.key" in files
    assert not [name for name in files if "twistd" in name or name.endswith(".pid")]
    assert not [name for name, mode in files.items() if mode & stat.S_IRWXO], files
    assert tree(etc) == etc_before
    assert set(os.listdir(tmp_path)) == {"etc", "journal", "state"}  # nothing in the cwd's parent
    rows = json_lines(tsnet(cfg, "export").stdout)
    assert [(r["metric"], r["value"]) for r in rows] == [("sys.cpu.user", 42.5)]
