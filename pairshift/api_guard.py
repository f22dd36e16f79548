"""What stands in front of every route of ``pairshift api``: bearer tokens and scopes, body size limits, and
per-token rate limits.

- :func:`require` is the FastAPI dependency a route declares to need a scope
  (``Depends(require("observe"))``): no token or an unknown/revoked one answers 401, a token without the
  scope 403, both as JSON errors. It returns the caller's :class:`~pairshift.tokens.TokenInfo`, so a route
  can rate-limit or record per token.
- :class:`BodyLimit` is ASGI middleware: it reads a request body up to its route's limit and answers 413 as
  soon as the limit is crossed (or at once from ``Content-Length``), so a 200 MB body never reaches memory.
- :class:`RowRateLimit` is a per-token token bucket of items (observations) per minute.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from pairshift.tokens import SCOPES, TokenInfo, authenticate

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY = 1_000_000  # JSON routes
SLACK_MAX_BODY = 64_000  # Slack's interaction payloads are far smaller
_bearer = HTTPBearer(auto_error=False, description="A token from `pairshift tokens create`.")


class AuthError(Exception):
    """401 (who are you?) or 403 (not allowed), answered as ``{"error", "detail"}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class AuthConfig:
    """How an app authenticates: ``enabled=False`` is ``pairshift api --no-auth`` (loopback only)."""

    enabled: bool = True


def require(scope: str) -> Callable[..., Awaitable[TokenInfo]]:
    """A dependency: the request must carry a live bearer token allowing ``scope`` (or ``admin``)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> TokenInfo:
        state = request.app.state.pairshift
        if not state.auth.enabled:
            return NO_AUTH
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AuthError(401, "authentication required: send 'Authorization: Bearer <token>'")
        # The hot path: no thread hop while the cache is fresh. A hop per request put every call through the
        # thread pool, and at 64 concurrent clients the threads' GIL convoy cut throughput 6x.
        hit, info = state.token_cache.fresh(credentials.credentials)
        if not hit:
            info = await run_in_threadpool(state.token_cache.lookup, state.registry, credentials.credentials)
        if info is None:
            raise AuthError(401, "invalid or revoked token")
        if not info.allows(scope):
            raise AuthError(403, f"token {info.name!r} lacks the {scope!r} scope (it has {info.scopes})")
        return info

    dependency.__name__ = f"require_{scope}"
    return dependency


NO_AUTH = TokenInfo(name="no-auth", scopes=["admin"], created_by="pairshift api --no-auth", created_at=0)


class TokenCache:
    """Token lookups cached for a few seconds: the hot routes do not query the registry on every request.

    A revocation therefore takes effect within ``ttl_s`` on every replica.
    """

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: dict[str, tuple[float, TokenInfo | None]] = {}
        self._lock = threading.Lock()

    def fresh(self, token: str) -> tuple[bool, TokenInfo | None]:
        """(hit, info) from the cache alone, no I/O: what the hot routes try before :meth:`lookup`."""
        with self._lock:
            hit = self._entries.get(token)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return True, hit[1]
        return False, None

    def lookup(self, registry: Any, token: str) -> TokenInfo | None:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(token)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        with registry.session() as s:
            info = authenticate(s, token)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # bounded: a flood of random tokens cannot grow memory
            self._entries[token] = (now, info)
        return info


class RowRateLimit:
    """Per-token token bucket of items per minute (a burst of up to one minute's worth)."""

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self._clock = per_minute, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # token name -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, n: int) -> float:
        """Take ``n`` items for ``key``: 0 when allowed, else the seconds to wait before retrying."""
        if self.per_minute <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.per_minute, now))
            tokens = min(self.per_minute, tokens + (now - at) * self.per_minute / 60.0)
            if n > tokens:
                self._buckets[key] = (tokens, now)
                needed = min(n, self.per_minute) - tokens
                return max(needed * 60.0 / self.per_minute, 0.001)
            self._buckets[key] = (tokens - n, now)
            return 0.0


class BodyLimit:
    """ASGI middleware: refuse a request body over its limit with 413, reading no more than limit + 1 chunk.

    ``limits`` maps a path prefix to its limit (the longest matching prefix wins); other paths get
    ``default``. The body is buffered (it is at most the limit) and replayed to the app.
    """

    def __init__(self, app: Any, *, default: int, limits: dict[str, int] | None = None) -> None:
        self.app, self.default, self.limits = app, default, dict(limits or {})

    def limit_for(self, path: str) -> int:
        matches = [p for p in self.limits if path.startswith(p)]
        return self.limits[max(matches, key=len)] if matches else self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": f"request body over the limit of {limit:,} bytes; nothing was read further", "detail": []}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
