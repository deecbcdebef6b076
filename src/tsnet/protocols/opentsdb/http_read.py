"""OpenTSDB HTTP /api/query, /api/suggest, /api/version, /api/aggregators (being written)."""

from __future__ import annotations

from typing import Any


def read_resources(core: Any) -> dict:
    return {}
