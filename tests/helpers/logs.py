"""What bounded-log tests share: the events a namespace logs, and a real fault
to repeat (a SQLite trigger in the server's own database file).

A trigger that ``RAISE(ABORT, ...)``s fails the statement with SQLITE_CONSTRAINT,
as a constraint the data breaks would: the storage refuses the write (or the
catalog update) for real, every time, without a mock in sight."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.logger import formatEvent, globalLogPublisher

#: the text the triggers fail with: it must never reach a client
TRIGGER_TEXT = "refused by the test trigger"


def refuse(server: Any, table: str, operation: str = "INSERT") -> None:
    """Every ``operation`` (INSERT, UPDATE) on ``table`` of ``server``'s default
    storage fails from now on."""
    db = sqlite3.connect(server.core.config.storages["default"].path)
    try:
        db.execute(f"CREATE TRIGGER refuse_{operation.lower()}_{table} BEFORE {operation} ON "
                   f"{table} BEGIN SELECT RAISE(ABORT, '{TRIGGER_TEXT}'); END")
        db.commit()
    finally:
        db.close()


class Events:
    """The events of the namespaces watched (the namespace itself or below)."""

    def __init__(self, *namespaces: str) -> None:
        self.namespaces = namespaces
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        ns = event.get("log_namespace") or ""
        if any(ns == n or ns.startswith(n + ".") for n in self.namespaces):
            self.events.append(event)

    def full(self, kind: str | None = None) -> list[dict]:
        """Events logged in full (with ``log_kind`` ``kind``, if given)."""
        return [e for e in self.events if not e.get("log_summary")
                and (kind is None or e.get("log_kind") == kind)]

    def failures(self) -> list[dict]:
        """Events that carry a traceback."""
        return [e for e in self.events if e.get("log_failure") is not None]

    def summaries(self, kind: str | None = None) -> list[str]:
        """The summary lines (``N more KIND in the last T s``), formatted."""
        return [formatEvent(e) for e in self.events if e.get("log_summary")
                and (kind is None or e.get("log_kind") == kind)]


@contextmanager
def watching(*namespaces: str) -> Iterator[Events]:
    events = Events(*namespaces)
    globalLogPublisher.addObserver(events)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events)


#: what no reply may contain: Python's tracebacks, exception names and library
#: texts (SQLite's, zlib's), and the trigger's own text
LEAKS = ("Traceback", 'File "', "sqlite3", "BadBatch", "IntegrityError", "OperationalError",
         "zlib", "Error -", "while decompressing", "incorrect header check", TRIGGER_TEXT)


def leaks(text: str | bytes) -> list[str]:
    """The internal texts found in a reply (case-sensitive: a protocol's own
    "Unexpected exception" is not one)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [w for w in LEAKS if w in text]
