"""OpenTSDB's JSON error object, the one dialect of every OpenTSDB route."""

from __future__ import annotations

import json
from typing import Any

from zope.interface import implementer

from tsnet.interfaces import IHTTPErrors

JSON_CONTENT_TYPE = b"application/json; charset=UTF-8"


def error_body(code: int, message: str, **extra: Any) -> bytes:
    """``{"error":{"code":..,"message":..}}``, compact as clients match it."""
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(extra)
    return json.dumps({"error": body}, separators=(",", ":")).encode()


def json_error(request: Any, code: int, message: str, **extra: Any) -> bytes:
    """Write the status and return `error_body`."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON_CONTENT_TYPE)
    return error_body(code, message, **extra)


@implementer(IHTTPErrors)
class OpenTSDBErrors:
    """What the shared site answers on OpenTSDB routes (and on an `opentsdb`
    listener's port, whatever the path)."""

    def error_reply(self, code: int, message: str, details: str | None = None,
                    ) -> tuple[bytes, bytes]:
        extra = {"details": details} if details else {}
        return JSON_CONTENT_TYPE, error_body(code, message, **extra)
