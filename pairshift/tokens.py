"""API bearer tokens: created once, stored hashed, checked on every request of ``pairshift api``.

A token is ``ps_`` followed by 43 URL-safe characters (256 random bits). The registry keeps its SHA-256
only: a high-entropy secret needs no slow hash, and a database dump gives nobody a usable token. The token
itself is shown once, by ``pairshift tokens create``.

Scopes (PRODUCT §14): ``resolve`` (ask the router), ``observe`` (send observations), ``complete`` (call a
deployment through the gateway), ``read`` (migrations, reports), ``admin`` (everything the others allow).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pairshift.registry.models import ApiToken, utcnow

Scope = Literal["resolve", "observe", "complete", "read", "admin"]
SCOPES: tuple[str, ...] = get_args(Scope)
TOKEN_ENV = "PAIRSHIFT_API_TOKEN"  # what the Python clients send
PREFIX = "ps_"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class TokenError(ValueError):
    """A token request that cannot be done (bad name or scope, a name taken, an unknown name)."""


class TokenInfo(BaseModel):
    """A token as listed: never the token itself."""

    name: str
    scopes: list[str]
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None

    def allows(self, scope: str) -> bool:
        return self.revoked_at is None and (scope in self.scopes or "admin" in self.scopes)


class NewToken(BaseModel):
    """What ``tokens create`` shows once: the name, the token and its scopes."""

    name: str
    token: str
    scopes: list[str]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def parse_scopes(raw: str | Iterable[str]) -> list[str]:
    """Scopes from ``resolve,observe`` (or a list): known names only, at least one, in canonical order."""
    items = [s.strip() for s in (raw.split(",") if isinstance(raw, str) else raw)]
    items = [s for s in items if s]
    unknown = sorted(set(items) - set(SCOPES))
    if unknown:
        raise TokenError(f"unknown scope(s) {', '.join(unknown)}; scopes are {', '.join(SCOPES)}")
    if not items:
        raise TokenError(f"give at least one scope ({', '.join(SCOPES)})")
    return [s for s in SCOPES if s in items]


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        name=row.name,
        scopes=list(row.scopes),
        created_by=row.created_by,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create_token(session: Session, name: str, scopes: str | Iterable[str], *, by: str) -> NewToken:
    """Store a new token's hash and return the token (the only time it is known)."""
    if not _NAME.match(name):
        raise TokenError(f"token name {name!r}: use 1-100 letters, digits, '_', '.', '-'")
    wanted = parse_scopes(scopes)
    if session.get(ApiToken, name) is not None:
        raise TokenError(f"a token named {name!r} exists already (revoke it, or pick another name)")
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_hash=hash_token(token), scopes=wanted, created_by=by))
    try:
        session.flush()
    except IntegrityError:
        raise TokenError(f"a token named {name!r} exists already") from None
    return NewToken(name=name, token=token, scopes=wanted)


def list_tokens(session: Session) -> list[TokenInfo]:
    return [_info(r) for r in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def revoke_token(session: Session, name: str) -> bool:
    """Revoke ``name``; False when it was revoked already. Unknown names raise :class:`TokenError`."""
    row = session.get(ApiToken, name)
    if row is None:
        raise TokenError(f"no token named {name!r}")
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.add(row)
    return True


def authenticate(session: Session, token: str) -> TokenInfo | None:
    """The live token ``token`` is, or None (unknown, malformed or revoked)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    return _info(row)
