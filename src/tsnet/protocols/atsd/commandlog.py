"""ATSD's command logs, in the data directory: what was dropped, and why.

``command_malformed.log`` records commands refused for their syntax or
content, ``command_discarded.log`` data refused for its meta (a disabled
metric or entity), and ``command.log`` the accepted commands of the listeners
that enable it (``command_log = yes``).  Lines are ``received_iso;channel;
command`` as ATSD writes them (the malformed log adds the reason before the
command).  Each file is rotated past `ROTATE_BYTES`, keeping `KEEP` old files
(``.1`` the newest), so a flood of bad input costs bounded disk; lines are
written in bulk once a reactor turn, never one file write per command.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger

from tsnet.protocols.atsd.parse import iso_ms

log = Logger(namespace="tsnet.atsd")

ROTATE_BYTES = 10 * 1024 * 1024
KEEP = 5
#: characters of a command kept in a log line (commands may be 128 KiB)
MAX_LOGGED = 4096
#: lines held for the next write at most; more are counted and left out
MAX_PENDING = 100_000



def flat(command: str) -> str:
    """One log line per command: LFs and CRs inside quoted values are escaped."""
    text = command if len(command) <= MAX_LOGGED else command[:MAX_LOGGED] + "..."
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class CommandLogs:
    """The three logs of one data directory."""

    def __init__(self, directory: str, reactor: Any) -> None:
        self.directory = directory
        self.reactor = reactor
        self._pending: dict[str, list[str]] = {}
        self._call: Any = None
        self._skipped = 0

    def _add(self, name: str, fields: list[str]) -> None:
        lines = self._pending.setdefault(name, [])
        if len(lines) >= MAX_PENDING:
            self._skipped += 1
            return
        lines.append(";".join([iso_ms(int(self.reactor.seconds() * 1000)), *fields]) + "\n")
        if self._call is None:
            self._call = self.reactor.callLater(0, self.flush)

    def malformed(self, channel: str, command: str, reason: str) -> None:
        self._add("command_malformed.log", [channel, reason, flat(command)])

    def discarded(self, channel: str, command: str, reason: str) -> None:
        self._add("command_discarded.log", [channel, reason, flat(command)])

    def accepted(self, channel: str, command: str) -> None:
        self._add("command.log", [channel, flat(command)])

    def flush(self) -> None:
        """Write what is pending (called once a turn, and when a listener stops)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        pending, self._pending = self._pending, {}
        try:
            os.makedirs(self.directory, exist_ok=True)
            for name, lines in pending.items():
                path = os.path.join(self.directory, name)
                self._rotate(path)
                with open(path, "a", encoding="utf-8", errors="replace") as f:
                    f.writelines(lines)
        except OSError as e:
            log.error("cannot write the ATSD command logs in {directory}: {error}",
                      directory=self.directory, error=e)
        if self._skipped:
            log.warn("{n} command log lines left out: too many at once", n=self._skipped)
            self._skipped = 0

    @staticmethod
    def _rotate(path: str) -> None:
        try:
            if os.path.getsize(path) < ROTATE_BYTES:
                return
        except OSError:
            return  # not there yet
        for i in range(KEEP - 1, 0, -1):
            if os.path.exists(f"{path}.{i}"):
                os.replace(f"{path}.{i}", f"{path}.{i + 1}")
        os.replace(path, f"{path}.1")
