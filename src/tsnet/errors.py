"""Errors that cross module boundaries; each protocol renders them in its own dialect."""

from __future__ import annotations


class TsnetError(Exception):
    """Base of tsnet's own errors."""


class ConfigError(TsnetError):
    """A config file that cannot be used; the message names the section and key."""


class ListenError(TsnetError):
    """A listener that cannot bind its endpoint (a port taken, a socket's
    folder missing); the message names the listener and the address."""


class Unauthorized(TsnetError):
    """No credentials, or credentials that are unknown, expired or revoked."""


class Forbidden(TsnetError):
    """Valid credentials without the scope the request needs."""


class Conflict(TsnetError):
    """The thing to create exists already."""


class NotFound(TsnetError):
    """The thing named does not exist."""


class Overloaded(TsnetError):
    """The write queue is past its hard ceiling; the item was not accepted."""


class TooManyPoints(TsnetError):
    """A bounded series read (`IBoundedReads`) read more than its ``limit``
    samples and stopped; the read APIs answer it as ``max_query_points``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the read passed {limit} points")
        self.limit = limit


class StorageUnavailable(TsnetError):
    """A storage that keeps failing did not commit an acked write in time
    (``kept``: the items stay queued and are retried, so the outcome is unknown,
    as after a timeout), or refused it because the write queue is full while it
    is down (not ``kept``: nothing was queued).  Protocols answer it with their
    own "unavailable, retry" error (HTTP 503, with ``retry_after`` as the
    ``Retry-After`` header: whole seconds until the write queue's next attempt)."""

    def __init__(self, message: str, kept: bool = True, retry_after: int = 1) -> None:
        super().__init__(message)
        self.kept = kept
        self.retry_after = max(1, retry_after)


class BadBatch(TsnetError, ValueError):
    """A storage refused the items themselves (a constraint they break, a value
    it cannot hold), not because it is failing: a retry would fail forever, so
    the write queue drops them and fails their ack.  A ValueError, so every
    protocol answers it as bad input (HTTP 400)."""
