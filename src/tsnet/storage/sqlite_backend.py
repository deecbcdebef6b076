"""The ``sqlite`` storage backend as a plugin: the embedded default."""

from __future__ import annotations

import os
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from tsnet.config import Config, Key, StorageConfig, non_negative_float
from tsnet.interfaces import IStorage, IStorageBackend


@implementer(IPlugin, IStorageBackend)
class SqliteBackend:
    name = "sqlite"
    description = "embedded SQLite file, one writer thread, WAL (the default)"
    storage_keys = {
        "path": Key(str, None, "the database file (default DATA_DIR/NAME.sqlite)"),
        "busy_timeout": Key(non_negative_float, 5.0,
                            "seconds a write waits for another process's lock before it "
                            "fails (and is retried)"),
    }

    def check(self, storage: StorageConfig, config: Config) -> None:
        """Make ``path`` absolute: relative to the config file's folder, and
        DATA_DIR/NAME.sqlite when absent."""
        path = storage.options.get("path") or os.path.join(config.data_dir,
                                                           f"{storage.name}.sqlite")
        storage.options["path"] = os.path.normpath(os.path.join(config.directory, path))

    def makeStorage(self, storage: StorageConfig, reactor: Any) -> IStorage:
        from tsnet.storage.sqlite import SqliteStorage

        return SqliteStorage(storage.name, storage.options["path"], reactor,
                             busy_timeout=storage.options.get("busy_timeout", 5.0))
