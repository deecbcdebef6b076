"""Error replies of the shared site, in the dialect of the route's family.

The site itself answers a few errors (an unknown path, a body over the cap, a
fast handler that crashed).  On a family's route it answers in that family's
format (its plugin's ``http_errors``, an `IHTTPErrors`); elsewhere, on a path
no family owns, in neutral plain text, so no client is told another family's
dialect.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from tsnet.interfaces import IHTTPErrors

TEXT_CONTENT_TYPE = b"text/plain; charset=utf-8"

REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 411: "Length Required", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 429: "Too Many Requests", 500: "Internal Server Error",
    503: "Service Unavailable",
}


@implementer(IHTTPErrors)
class PlainErrors:
    """``404 Not Found`` and the like, as one line of text."""

    def error_reply(self, code: int, message: str, details: str | None = None,
                    ) -> tuple[bytes, bytes]:
        line = f"{code} {REASONS.get(code, message)}"
        if details:
            line += f": {details}"
        return TEXT_CONTENT_TYPE, (line + "\n").encode("utf-8")


PLAIN_ERRORS = PlainErrors()


def retry_after(error: Any) -> tuple[bytes, bytes]:
    """The ``Retry-After`` header of a 503 for ``error`` (a StorageUnavailable:
    whole seconds until the write queue tries the storage again; 1 for any
    other error), so a client backs off instead of counting its data as bad."""
    seconds = getattr(error, "retry_after", 1)
    return b"Retry-After", b"%d" % max(1, int(seconds))


def send_body(request: Any, body: bytes) -> bool:
    """Write ``body`` (status and content type already set) as the whole answer
    of a request answered off ``render`` (``NOT_DONE_YET``); False when the
    client already left."""
    if request.finished or request.channel is None:
        return False
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()
    return True


def send_error(request: Any, errors: Any, code: int, message: str,
               details: str | None = None) -> bytes:
    """Set the status and content type of ``request``; return the body to write."""
    content_type, body = errors.error_reply(code, message, details)
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    return body
