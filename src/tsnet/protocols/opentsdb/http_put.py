"""OpenTSDB HTTP /api/put (being written)."""

from __future__ import annotations

from typing import Any


def put_resources(core: Any) -> dict:
    return {}
