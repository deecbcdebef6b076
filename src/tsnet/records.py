"""Catalog records: solutions (tenants) and tokens, as stored by every backend.

A token is what `tsnet token create` makes: a READ/WRITE pair (two credentials)
or a single credential with both scopes.  Each credential has its own id, the
part of its secret before the colon, and only the SHA-256 of its secret is kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a secret.  Secrets are 16+ random characters, so a fast hash
    is the right tool (as for API keys); nothing reversible is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass
class SolutionRecord:
    name: str
    description: str = ""
    storage: str = "default"
    created_ns: int = 0
    #: family-specific settings (a ts-store store keeps its type and sizes here)
    attributes: dict = field(default_factory=dict)


@dataclass
class Credential:
    id: str
    scopes: frozenset[str]
    secret_hash: str


@dataclass
class TokenRecord:
    id: str
    solution: str
    credentials: list[Credential]
    description: str = ""
    expires_ns: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    revoked: bool = False
    created_ns: int = 0

    def credential(self, credential_id: str) -> Credential | None:
        for c in self.credentials:
            if c.id == credential_id:
                return c
        return None

    def public(self) -> dict:
        """What `token list` prints: everything but secrets and hashes."""
        out = {
            "id": self.id,
            "solution": self.solution,
            "description": self.description,
            "credentials": [
                {"id": c.id, "scopes": sorted(c.scopes)} for c in self.credentials
            ],
            "tags": dict(self.tags),
            "revoked": self.revoked,
        }
        if self.expires_ns is not None:
            out["expires_ns"] = self.expires_ns
        return out
