"""The config of the ts-store tests: SQLite, an admin key, an http listener
mounting ``apis``, and whatever else a test appends."""

from __future__ import annotations

ADMIN = "admin-key-of-twenty-chars"


def tsstore_config(apis: str = "tsstore", http_keys: str = "", extra: str = "") -> str:
    """``[storage:default]`` is BASE_CONFIG's, so `make_server` swaps in Redis
    for the modules that run on every backend."""
    return f"""
[tsnet]
data_dir = var
flush_interval = 0.05

[storage:default]
backend = sqlite

[tsstore]
admin_key = {ADMIN}

[listener:http]
protocol = http
endpoint = tcp:0:interface=127.0.0.1
apis = {apis}
{http_keys}
{extra}"""
