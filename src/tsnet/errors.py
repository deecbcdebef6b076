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
