"""Who an HTTP request is: the listener's solution, or the token it carries.

Every HTTP API resolves its principal here, so the token sources of DESIGN §5
are read the same way everywhere: HTTP Basic (``user:password`` joined, or the
password alone), ``X-API-Key``, ``Authorization: Bearer``, and the ``api_key``
query argument.  The listener serving the request (``request.channel.site
.listener``) decides whether a token is needed at all.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet import defer

from tsnet.errors import Unauthorized
from tsnet.model import anonymous


def listener_of(request: Any) -> Any:
    """The `tsnet.config.Listener` whose site received ``request``."""
    return request.channel.site.listener


def core_of(request: Any) -> Any:
    """The `tsnet.core.Core` of the server that received ``request``."""
    return request.channel.site.core


def _header(request: Any, name: bytes) -> str | None:
    """A header as text (Twisted gives bytes); Latin-1 keeps every byte."""
    v = request.getHeader(name)
    return v.decode("latin-1") if isinstance(v, bytes) else v


def request_secrets(request: Any) -> list[str]:
    """Every secret the request offers, most specific first."""
    out = header_secrets(_header(request, b"authorization"), _header(request, b"x-api-key"))
    for v in request.args.get(b"api_key", ()):
        try:
            out.append(v.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return [s for s in out if s]


def header_secrets(authorization: str | None, api_key: str | None) -> list[str]:
    """The secrets of the ``Authorization`` and ``X-API-Key`` headers, in order."""
    out: list[str] = []
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True) \
                    .decode("utf-8").partition(":")
            except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8:
                user = password = ""  # no credentials, as any unreadable one
            from tsnet.auth import basic_secrets

            out.extend(basic_secrets(user, password))
        elif scheme == "bearer" and value.strip():
            out.append(value.strip())
    if api_key:
        out.append(api_key.strip())
    return [s for s in out if s]


def principal_for(request: Any, scope: str, extra: list[str] | None = None) -> defer.Deferred:
    """Deferred[Principal] for ``request`` needing ``scope``.

    With ``auth = none`` every request is the listener's solution.  Otherwise
    the first secret that names a known token decides: fails with
    `Unauthorized` (none, unknown, expired, revoked) or `Forbidden` (wrong
    scope).  ``extra`` are secrets found in the body (``ovh.auth`` tags)."""
    listener = listener_of(request)
    if listener.auth == "none":
        return defer.succeed(anonymous(listener.solution))
    candidates = request_secrets(request) + list(extra or ())
    if not candidates:
        return defer.fail(Unauthorized("no token"))
    return core_of(request).auth.authenticate_any(candidates, scope)

