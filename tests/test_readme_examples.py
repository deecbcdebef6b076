"""Every example of README.rst, run as a user runs it, so none goes stale.

One real ``twistd -n tsnet --config etc/tsnet.ini`` (Quick start's command) is
started in a temporary folder holding a copy of ``etc/tsnet.ini`` plus every
listener README's config blocks add (TLS, ts-store's socket, Graphite), all on
port 0; then every shell command of README is run with bash, in README's
order (later examples read what earlier ones wrote), with README's port
numbers replaced by the bound ones.  A command's output is compared with the
one README shows under it:

- ``...`` stands for any text; a quoted placeholder such as ``"k3f..."`` or
  ``"tsstore_3f0c..."`` captures what came, and the same placeholder in a
  later command (``token update k3f...``, ``KEY=tsstore_3f0c...``) is replaced
  by it, as the reader would do;
- nanosecond timestamps (19 digits) and ISO times stand for any such value;
- a listing (``solution list``, ``token list``...) shows the rows README
  speaks of: they must come, in that order, among the others;
- a command that reads what an unacknowledged write sent (telnet ``put`` is
  committed within the flush interval) is retried for a few seconds.

A command without output shown must exit 0.  How each block is used:

- shell blocks (a ``$`` prompt, or commands one a line): run, except
  `NOT_RUN` (each with the reason and the test that covers it instead) and
  `BEFORE_START` (run before the server starts, as the config needs them);
- config blocks (``[section]``): a listener etc/tsnet.ini lacks is served, one
  it has must be the same, and any other section must pass ``check-config``
  in place of etc/tsnet.ini's;
- every other block is in `OTHER`, with what checks it.

A block that fits none of these fails `test_every_block_is_covered`: a new
example must be runnable, or say here why not and what covers it.
"""

from __future__ import annotations

import configparser
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.test_readme import EXAMPLE, QUOTES, literal_blocks
from tsnet.testing.process import BIN, BOUND, json_lines

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.rst"

#: the command README's Quick start starts the server with
SERVER = "twistd -n tsnet --config etc/tsnet.ini"
#: shell commands not run, with why and what runs them instead
NOT_RUN = {
    r"^pip install -e \. && twistd": "the install is CI's (tools/install-test-deps); the "
                                     "twistd part is the server this test starts",
    r"^tools/install-test-deps && pytest": "what CI runs; this test is part of it",
    r"storage rebalance": "needs Redis grown from one shard to two: "
                          "tests/test_redis_cli.py runs it on real redis-servers",
    r"^tsnet --config t\.ini check-config$": "needs a machine without the example "
                                            "distribution, which CI installs: "
                                            "test_a_family_not_installed_is_named checks "
                                            "the message with a family none provides",
    r"^twistd -n tsnet --config etc/tsnet-tls\.ini$": "README's other way is taken: its "
                                                     "listeners copied into etc/tsnet.ini, "
                                                     "served by the one server",
    r"(^|\s)(sudo|useradd|systemctl|journalctl)\s|/etc/systemd/|/etc/tsnet/|/opt/tsnet/":
        "installs a systemd service (root, systemd as PID 1): tests/test_systemd.py "
        "checks the unit with systemd-analyze and runs its ExecStart",
}
#: shell commands that make what the config needs, so they run before the server
BEFORE_START = [r"^tsnet --config etc/tsnet-tls\.ini tls-cert$"]
#: the first words of a command block without a ``$`` prompt
SHELL_WORDS = {"pip", "tools/install-test-deps", "printf", "python3", "tsnet", "curl", "nc",
               "twistd", "mkdir", "openssl", "echo", "sudo", "install", "systemctl",
               "useradd", "journalctl", "cp"}
#: seconds a read of what an unacknowledged write sent is retried
READ_RETRY = 10.0
#: listings: README shows the rows it speaks of, which must come in that order
LISTINGS = re.compile(r"\b(solution|token|store|key) list\b")
#: commands that only read (retried while their output is not there yet)
READS = re.compile(r"\bexport\b|/metrics|/api/query\?|/api/suggest|/data/newest|\blist\b")


@dataclass
class Command:
    text: str
    output: list[str] = field(default_factory=list)


def chunks() -> list[str]:
    """README's literal blocks, split at blank lines (a config and the
    commands that use it may share one block)."""
    out = []
    for block in literal_blocks(README.read_text()):
        if any(block.startswith(q) for q in QUOTES):
            out.append(block)  # a quote of the example, whole: tests/test_readme.py
        else:
            out.extend(c.strip("\n") for c in re.split(r"\n\s*\n", block) if c.strip())
    return out


def kind(chunk: str) -> str:
    first = chunk.split("\n", 1)[0]
    if any(chunk.startswith(q) for q in QUOTES):
        return "quote"
    if re.fullmatch(r"\[[\w:.-]+\]", first):
        return "config"
    word = first.split(" ", 1)[0]
    if first.startswith("$ ") or word in SHELL_WORDS or re.match(r"[A-Z_]+=", word):
        return "shell"
    return "other"


def commands(chunk: str) -> list[Command]:
    """The commands of a shell block, each with the output README shows.
    With ``$`` prompts, the lines between prompts are output; without, every
    line is a command but one starting with ``{`` or ``[`` (output).  A line
    ending in a backslash goes on."""
    lines = chunk.split("\n")
    prompted = any(line.startswith("$ ") for line in lines)
    out: list[Command] = []
    for line in lines:
        if out and out[-1].text.endswith("\\"):
            out[-1].text += "\n" + line
        elif prompted and line.startswith("$ "):
            out.append(Command(line[2:]))
        elif prompted or line.startswith(("{", "[")):
            out[-1].output.append(line)
        else:
            out.append(Command(line))
    return out


def not_run(command: Command) -> str | None:
    return next((why for pattern, why in NOT_RUN.items() if re.search(pattern, command.text)),
                None)


# --- comparing output ------------------------------------------------------------

_TOKEN = re.compile(r'"([^"]*\.\.\.[^"]*)"|\.\.\.|\b\d{19}\b|'
                    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")


def pattern(documented: list[str]) -> tuple[re.Pattern, list[str]]:
    """A regex of README's output, and the placeholders its groups capture."""
    text, parts, names, pos = "\n".join(documented), [], [], 0
    for m in _TOKEN.finditer(text):
        parts.append(re.escape(text[pos:m.start()]))
        if m.group(1) is not None:
            parts.append('"([^"]*)"')
            names.append(m.group(1))
        elif m.group(0) == "...":
            parts.append(".*?")
        elif m.group(0).isdigit():
            parts.append(r"\d{19}")
        else:
            parts.append(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")
        pos = m.end()
    parts.append(re.escape(text[pos:]))
    return re.compile("".join(parts)), names


# --- the server and the session ------------------------------------------------


def documented_port(endpoint: str) -> int | None:
    m = re.match(r"(?:tcp6?|ssl|udp):(\d+)", endpoint)
    return int(m.group(1)) if m else None


def free_ports(config: str) -> str:
    return re.sub(r"^(endpoint = (?:tcp6?|ssl|udp)):\d+", r"\1:0", config, flags=re.M)


def shipped() -> dict[str, dict[str, str]]:
    """The sections of the configs in etc/ (a listener README shows from one
    of them must be the same there)."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted((ROOT / "etc").glob("*.ini")):
        parsed = ini(path.read_text())
        out.update({name: dict(parsed[name]) for name in parsed.sections()})
    return out


def ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # as tsnet reads it
    parser.read_string(text)
    return parser


class Session:
    """The folder README's commands run in, its server, and what they left."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        self.assignments: list[str] = []  # NAME=... lines, replayed before each command
        self.captured: dict[str, str] = {}  # README placeholder -> what came
        self.ports: dict[int, int] = {}  # README's port -> the bound one
        self.proc: subprocess.Popen | None = None
        self.log = directory / "server.log"
        self.ran: list[Command] = []
        self.matched: list[str] = []  # every output line README shows that was seen

    def config(self, blocks: list[str]) -> dict[str, int]:
        """etc/tsnet.ini with README's extra listeners, every port 0; returns
        each listener's README port."""
        base = (ROOT / "etc" / "tsnet.ini").read_text()
        names = set(ini(base).sections())
        extra = [b for b in blocks if not set(ini(b).sections()) & names
                 and all(s.startswith("listener:") for s in ini(b).sections())]
        text = base + "".join(f"\n{b}\n" for b in extra)
        # README: "With apis = metrics opentsdb influx in [listener:http]" (the
        # Graphite and InfluxDB section, from the example distribution)
        text = re.sub(r"^(apis = metrics opentsdb atsd tsstore(?: console)?)$", r"\1 influx", text,
                      flags=re.M)
        ports = {name: documented_port(ini(text)[name]["endpoint"])
                 for name in ini(text).sections() if name.startswith("listener:")}
        (self.dir / "etc").mkdir()
        for path in (ROOT / "etc").glob("*.ini"):  # the other shipped configs, as they are
            (self.dir / "etc" / path.name).write_text(free_ports(path.read_text()))
        (self.dir / "etc" / "tsnet.ini").write_text(free_ports(text))
        # README: the socket's "folder must exist" (the Quick start's first run made it)
        (self.dir / "var").mkdir()
        return {name.split(":", 1)[1]: port for name, port in ports.items() if port}

    def start(self, documented: dict[str, int]) -> None:
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(SERVER.split(), cwd=self.dir, env=self.env,
                                     stdout=self._logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while "tsnet running" not in self.log.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, \
                self.log.read_text()
            time.sleep(0.05)
        bound = {m.group(1): int(m.group(2)) for m in BOUND.finditer(self.log.read_text())}
        by_port: dict[int, set[int]] = {}
        for name, port in documented.items():
            by_port.setdefault(port, set()).add(bound[name])
        self.ports = {port: next(iter(got)) for port, got in by_port.items() if len(got) == 1}

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self._logf.close()

    def localise(self, text: str) -> str:
        """README's ports replaced by the bound ones, placeholders by what came."""
        for placeholder, value in sorted(self.captured.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(placeholder, value)

        def port(m: re.Match) -> str:
            return m.group(1) + str(self.ports.get(int(m.group(2)), m.group(2)))

        return re.sub(r"((?:127\.0\.0\.1|localhost)(?::|\s+|',\s*))(\d{2,5})\b", port, text)

    def bash(self, text: str, timeout: float = 60) -> subprocess.CompletedProcess:
        script = "\n".join([*self.assignments, text])
        return subprocess.run(["bash", "-c", script], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def run(self, command: Command) -> None:
        text = self.localise(command.text)
        if re.fullmatch(r"[A-Z_]+=.*", text):
            self.assignments.append(text)
        deadline = time.monotonic() + (READ_RETRY if READS.search(text) else 0)
        while True:
            p = self.bash(text)
            problem = self.check(command, p)
            if problem is None:
                self.ran.append(command)
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"README's\n  $ {command.text}\nran as\n  $ {text}\n"
                                     f"{problem}\nserver log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def check(self, command: Command, p: subprocess.CompletedProcess) -> str | None:
        if p.returncode != 0:
            return f"exit status {p.returncode}; stderr:\n{p.stderr}"
        if not command.output:
            return None
        regex, names = pattern(command.output)
        got = p.stdout.rstrip("\n")
        if LISTINGS.search(command.text):  # the rows README shows, in order, among others
            rows = iter(got.split("\n"))
            got = "\n".join(next((r for r in rows if pattern([line])[0].fullmatch(r)), "")
                            for line in command.output)
        m = regex.fullmatch(got)
        if m is None:
            return ("output:\n" + p.stdout + "README shows:\n" + "\n".join(command.output))
        # (a bare "..." is any text, not a value a later command uses)
        self.captured.update((n, v) for n, v in zip(names, m.groups(), strict=True) if n != "...")
        self.matched.extend(command.output)
        return None


# --- what is not a shell command ------------------------------------------------


def diagram(chunk: str, session: Session) -> None:
    """The data-flow figure of *How it is built*: no example."""


def export_line(chunk: str, session: Session) -> None:
    """The export's line: what the Quick start's export showed, and was seen."""
    assert chunk in session.matched


def tls_log(chunk: str, session: Session) -> None:
    """The TLS handshake log lines: a client that refuses the certificate
    (curl without ``--cacert``) makes the first; the summary line needs a
    minute, so only its format is checked, by tests/test_logbound.py."""
    first = chunk.split("\n")[0]
    tls = session.ports[4243]
    p = session.bash(f"curl -s https://localhost:{tls}/api/version")
    assert p.returncode == 60  # curl: the peer's certificate is not trusted
    expected = re.escape(first).replace("51234", r"\d+")
    deadline = time.monotonic() + 10
    while not re.search(expected, session.log.read_text()):
        assert time.monotonic() < deadline, session.log.read_text()[-2000:]
        time.sleep(0.05)


def sink_calls(chunk: str, session: Session) -> None:
    """The point sink's three calls, abridged from the example's graphite.py."""
    source = (EXAMPLE / "src" / "tsnet_lineproto" / "graphite.py").read_text()
    for call in ("ingest.sink(", ".columns()", ".added(n)", "parser.take(lines, "):
        assert call in chunk and call in source, call


def sweep_table(chunk: str, session: Session) -> None:
    """The bench's series sweep (a measurement, not an example): it must be
    what bench/run.py prints for its rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = []
    for line in chunk.split("\n")[1:]:
        series, pps, cpu, rss, ratio = line.split()
        rows.append({"series": int(series.replace(",", "")),
                     "points_per_sec": float(pps.replace(",", "")),
                     "server_cpu_us_per_point": float(cpu), "peak_rss_mib": float(rss),
                     "rate_vs_first": float(ratio)})
    assert bench.render_sweep(rows) == chunk


#: blocks that are neither shell nor config, by their first line
OTHER: dict[str, Callable[[str, Session], None]] = {
    "    series    points/s": sweep_table,
    "bytes -> framing -> parse": diagram,
    '{"kind":"series"': export_line,
    "[tsnet.tls#warn]": tls_log,
    "self._sink = core.ingest.sink(": sink_calls,
}


def other_check(chunk: str) -> Callable[[str, Session], None] | None:
    return next((check for first, check in OTHER.items() if chunk.startswith(first)), None)


# --- the tests -----------------------------------------------------------------


def test_every_block_is_covered() -> None:
    """Each block is run, served, quoted (tests/test_readme.py) or checked by
    `OTHER`; each exception in the tables is still needed."""
    loose = [c for c in chunks() if kind(c) == "other" and other_check(c) is None]
    assert loose == [], "README blocks no test covers: add them to OTHER, or make them run"
    cmds = [cmd for c in chunks() if kind(c) == "shell" for cmd in commands(c)]
    for pattern_ in [*NOT_RUN, *BEFORE_START]:
        assert any(re.search(pattern_, cmd.text) for cmd in cmds), f"{pattern_!r}: stale"
    assert any(SERVER in cmd.text for cmd in cmds)
    for first in OTHER:
        assert any(c.startswith(first) for c in chunks()), f"{first!r}: stale"


def test_readme_examples(tmp_path: Path) -> None:
    all_chunks = chunks()
    configs = [c for c in all_chunks if kind(c) == "config"]
    session = Session(tmp_path)
    documented = session.config(configs)
    shell = [cmd for c in all_chunks if kind(c) == "shell" for cmd in commands(c)]
    for cmd in shell:
        if any(re.search(p, cmd.text) for p in BEFORE_START):
            session.run(cmd)
    check_configs(session, configs)
    session.start(documented)
    try:
        # README leaves $READ_ID and $READ_KEY to the reader: a READ token's
        # own id and key (Solutions and tokens), here of the default solution
        tok = json_lines(session.bash("tsnet --config etc/tsnet.ini token create default "
                                      "--scope read").stdout)[0]
        session.env["READ_ID"], session.env["READ_KEY"] = tok["read"].split(":", 1)
        for chunk in all_chunks:
            if kind(chunk) == "shell":
                for cmd in commands(chunk):
                    if not (not_run(cmd) or SERVER == cmd.text
                            or any(re.search(p, cmd.text) for p in BEFORE_START)):
                        session.run(cmd)
            elif kind(chunk) == "other":
                check = other_check(chunk)
                assert check is not None
                check(chunk, session)
    finally:
        status = session.stop()
    # Quick start: SIGTERM, "logs tsnet stopped cleanly", status 143
    assert status == -signal.SIGTERM
    assert "tsnet stopped cleanly" in session.log.read_text()
    assert len(session.ran) >= 30  # (every command, not a few, did run)


def check_configs(session: Session, configs: list[str]) -> None:
    """README's config blocks: a listener a config in etc/ has must be the
    same there (and every listener is served); any other section, its keys
    set in the served config, must pass ``check-config``."""
    base = shipped()
    for block in configs:
        parsed = ini(block)
        for name in parsed.sections():
            if name.startswith("listener:"):
                if name in base:
                    assert dict(parsed[name]) == base[name], f"[{name}] drifted"
                continue
            served = ini((session.dir / "etc" / "tsnet.ini").read_text())
            if not served.has_section(name):
                served.add_section(name)
            served[name].update(parsed[name])
            path = session.dir / "etc" / "check.ini"
            with open(path, "w") as f:
                served.write(f)
            p = session.bash(f"tsnet --config {path} check-config")
            assert p.returncode == 0, f"[{name}] of README: {p.stderr}"
            path.unlink()


def test_a_family_not_installed_is_named(tmp_path: Path) -> None:
    """*Shipping*'s ``check-config`` without the distribution: the same line,
    for a family no distribution provides, and README's list of installed
    families is the built-in one (what a machine without it has)."""
    [chunk] = [c for c in chunks() if c.startswith("$ tsnet --config t.ini check-config")]
    [cmd] = commands(chunk)
    [line] = cmd.output
    m = re.fullmatch(r"tsnet: /path/t\.ini: \[listener:g\] protocol: no installed plugin "
                     r"provides 'graphite' \(installed: ([\w, ]+)\)", line)
    assert m, line
    (tmp_path / "t.ini").write_text("[listener:g]\nprotocol = nosuch\nendpoint = tcp:0\n")
    p = subprocess.run([str(BIN / "tsnet"), "--config", "t.ini", "check-config"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    got = re.fullmatch(rf"tsnet: {re.escape(str(tmp_path))}/t\.ini: \[listener:g\] protocol: "
                       r"no installed plugin provides 'nosuch' \(installed: ([\w, ]+)\)\n",
                       p.stderr)
    assert got, p.stderr
    from tsnet.plugins import load_plugins

    example = {name for name, plugin in load_plugins().items()
               if type(plugin).__module__.startswith("tsnet_lineproto")}
    assert m.group(1).split(", ") == [n for n in got.group(1).split(", ") if n not in example]


def test_output_patterns() -> None:
    """The comparison itself can fail: a wrong value, a missing line."""
    regex, names = pattern(['{"id": "k3f...", "n": 1, "t": 1764760000123456789}'])
    m = regex.fullmatch('{"id": "abc", "n": 1, "t": 1796591551650917421}')
    assert m and dict(zip(names, m.groups(), strict=True)) == {"k3f...": "abc"}
    assert not regex.fullmatch('{"id": "abc", "n": 2, "t": 1796591551650917421}')
    assert not pattern(["ok", "ok"])[0].fullmatch("ok")
