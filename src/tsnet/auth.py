"""Tokens: minting them, and turning the secret a client sends into a Principal.

Secrets never leave this module except once, printed by `tsnet token create`;
the catalog keeps SHA-256 hashes and compares them in constant time.  Verified
secrets are cached by hash; the cache is dropped whenever the catalog's
generation number moves (any token or solution change, by any node or by the
`tsnet` command), and at the latest every ``refresh`` seconds, so a revocation
or expiry takes effect within seconds everywhere.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from tsnet.errors import Forbidden, Unauthorized
from tsnet.interfaces import IAuthenticator
from tsnet.model import READ, WRITE, Principal
from tsnet.records import Credential, TokenRecord, hash_secret

log = Logger(namespace="tsnet.auth")

_ID_ALPHABET = string.ascii_lowercase + string.digits
_KEY_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 13  # as the IoT Lab's token ids (w3eaaaqaa7pff)
KEY_LENGTH = 32
IMPORTED_MIN, IMPORTED_MAX = 16, 256
CACHE_LIMIT = 10_000


def new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))


def new_secret(credential_id: str) -> str:
    """``<id>:<key>``: HTTP Basic user = id, password = key joins back to it."""
    return credential_id + ":" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(KEY_LENGTH))


def check_imported_secret(secret: str) -> None:
    """Imported secrets: printable, no spaces, 16 to 256 characters."""
    if not IMPORTED_MIN <= len(secret) <= IMPORTED_MAX:
        raise ValueError(f"a secret must have {IMPORTED_MIN} to {IMPORTED_MAX} characters")
    if not secret.isprintable() or any(c.isspace() for c in secret):
        raise ValueError("a secret must be printable and contain no spaces")


def mint_token(
    solution: str,
    scopes: Iterable[str] = (READ, WRITE),
    single: bool = False,
    description: str = "",
    expires_ns: int | None = None,
    tags: dict[str, str] | None = None,
    now_ns: int = 0,
    read_secret: str | None = None,
    write_secret: str | None = None,
) -> tuple[TokenRecord, dict[str, str]]:
    """Make a token: a READ/WRITE pair (or one credential with every scope when
    ``single``).  Returns the record (hashes only) and the secrets by role
    (``read``/``write``, or ``token`` when single), to be shown once."""
    scopes = frozenset(scopes)
    bad = scopes - {READ, WRITE}
    if bad or not scopes:
        raise ValueError(f"scopes are read and write, got {','.join(sorted(scopes)) or 'none'}")
    shown: dict[str, str] = {}
    creds: list[Credential] = []

    def add(role: str, cscopes: frozenset[str], imported: str | None) -> None:
        cid = new_id()
        if imported is not None:
            check_imported_secret(imported)
            secret = imported
        else:
            secret = new_secret(cid)
        creds.append(Credential(id=cid, scopes=cscopes, secret_hash=hash_secret(secret)))
        shown[role] = secret

    if single:
        if read_secret or write_secret:
            raise ValueError("--read-token/--write-token make a pair, not a single token")
        add("token", scopes, None)
    else:
        if READ in scopes:
            add("read", frozenset((READ,)), read_secret)
        elif read_secret:
            raise ValueError("--read-token given but the scope has no read")
        if WRITE in scopes:
            add("write", frozenset((WRITE,)), write_secret)
        elif write_secret:
            raise ValueError("--write-token given but the scope has no write")
    record = TokenRecord(
        id=new_id(), solution=solution, credentials=creds, description=description,
        expires_ns=expires_ns, tags=dict(tags or {}), created_ns=now_ns,
    )
    return record, shown


def basic_secrets(user: str, password: str) -> list[str]:
    """The secrets an HTTP Basic pair may stand for: ``user:password`` joined (the
    IoT Lab's id/key form), then the password alone (OVH Metrics' any-user form)."""
    out = [f"{user}:{password}"] if user else []
    if password and password not in out:
        out.append(password)
    return out


@implementer(IAuthenticator)
class TokenAuthenticator:
    """Authenticates secrets against the catalog, caching verified hashes."""

    def __init__(self, catalog: Any, reactor: Any, refresh: float = 2.0) -> None:
        self._catalog = catalog
        self._reactor = reactor
        self._refresh = refresh
        self._cache: dict[str, TokenRecord | None] = {}
        self._generation: int | None = None
        self._poll: task.LoopingCall | None = None
        #: called (may return a Deferred) when the catalog changed, e.g. to reload
        #: the solution list
        self.on_change: Any = None

    def start(self) -> defer.Deferred:
        """Read the catalog generation once, then poll it every ``refresh`` s."""
        self._poll = task.LoopingCall(self._check_generation)
        self._poll.clock = self._reactor

        def loop(_: Any) -> None:
            self._poll.start(self._refresh, now=False).addErrback(
                lambda f: log.failure("token refresh stopped", f))

        return self._check_generation().addCallback(loop)

    def stop(self) -> None:
        if self._poll is not None and self._poll.running:
            self._poll.stop()

    @defer.inlineCallbacks
    def _check_generation(self) -> Any:
        try:
            gen = yield self._catalog.catalog_generation()
        except Exception:
            log.failure("cannot read the token catalog")
            return
        if gen != self._generation:
            self._generation = gen
            self._cache.clear()
            if self.on_change is not None:
                try:
                    yield self.on_change()
                except Exception:
                    log.failure("reloading after a catalog change failed")

    def invalidate(self) -> None:
        self._cache.clear()

    @defer.inlineCallbacks
    def _lookup(self, secret: str, h: str) -> Any:
        """The token whose credential hashes to ``h`` (the hash of ``secret``)."""
        if h in self._cache:
            return self._cache[h]
        cred_id = secret.split(":", 1)[0] if ":" in secret else None
        token = yield self._catalog.find_credential(cred_id, h)
        if token is None and cred_id is not None:
            token = yield self._catalog.find_credential(None, h)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[h] = token
        return token

    def _principal(self, token: TokenRecord | None, secret_hash: str, scope: str) -> Principal:
        if token is None or token.revoked:
            raise Unauthorized("invalid token")
        if token.expires_ns is not None and token.expires_ns <= self._reactor.seconds() * 1e9:
            raise Unauthorized("token expired")
        cred = next((c for c in token.credentials
                     if secrets.compare_digest(c.secret_hash, secret_hash)), None)
        if cred is None:
            raise Unauthorized("invalid token")
        if scope not in cred.scopes:
            raise Forbidden(f"token has no {scope} scope")
        return Principal(
            solution=token.solution,
            scopes=cred.scopes,
            tags=tuple(sorted(token.tags.items())),
            token_id=token.id,
        )

    def cached(self, secret: str, scope: str) -> Principal | None:
        """The principal for a secret verified recently, without a Deferred; None
        when it must be looked up with `authenticate`.  Raises as it does."""
        h = hash_secret(secret)
        if h not in self._cache:
            return None
        return self._principal(self._cache[h], h, scope)

    @defer.inlineCallbacks
    def authenticate(self, secret: str | None, scope: str) -> Any:
        """Deferred[Principal]; Unauthorized or Forbidden otherwise."""
        if not secret:
            raise Unauthorized("no token")
        h = hash_secret(secret)
        token: TokenRecord | None = yield self._lookup(secret, h)
        return self._principal(token, h, scope)

    @defer.inlineCallbacks
    def authenticate_any(self, candidates: Iterable[str], scope: str) -> Any:
        """Try several readings of one credential (HTTP Basic); the first that is a
        known token decides, so a wrong scope is Forbidden, not Unauthorized."""
        last: Exception = Unauthorized("no token")
        for s in candidates:
            try:
                p = yield self.authenticate(s, scope)
                return p
            except Unauthorized as e:
                last = e
        raise last
