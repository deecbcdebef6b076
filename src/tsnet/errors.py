"""Errors that cross module boundaries; each protocol renders them in its own dialect."""

from __future__ import annotations


class TsnetError(Exception):
    """Base of tsnet's own errors."""


class ConfigError(TsnetError):
    """A config file that cannot be used; the message names the section and key."""


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


class StorageUnavailable(TsnetError):
    """A storage that keeps failing did not commit an acked write in time
    (``kept``: the items stay queued and are retried, so the outcome is unknown,
    as after a timeout), or refused it because the write queue is full while it
    is down (not ``kept``: nothing was queued).  Protocols answer it with their
    own "unavailable, retry" error (HTTP 503)."""

    def __init__(self, message: str, kept: bool = True) -> None:
        super().__init__(message)
        self.kept = kept
