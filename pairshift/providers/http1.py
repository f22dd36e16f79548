"""The serving path's HTTP client: HTTP/1.1 over pooled keep-alive connections, on asyncio and httptools.

:mod:`pairshift.providers.direct` sends every serving call through it. It is the part of ``httpx.AsyncClient``
that module uses (``post`` and ``stream``, with the same arguments, answers and exceptions: ``httpx.
ConnectError``, ``httpx.ReadTimeout`` and the like, so the errors map as before) without httpx's machinery
on each request: httpcore, the pure-Python h11 parser and anyio's cancel scopes cost about 1.5 ms of CPU a
call on the shared two-core machine, against 0.2 ms here (bench/results/gateway.md), and httpcore writes a
request's head and body in two sends where this writes one. Responses are parsed by httptools (uvicorn's C
parser, a dependency), each connection an ``asyncio.Protocol``.

- Connections are per origin (scheme, host, port), reused last-in first-out while the server keeps them
  alive, idle at most :data:`KEEPALIVE_S` seconds, at most :data:`MAX_IDLE` idle per origin and
  :data:`MAX_CONNECTIONS` open at once (a request waits for one beyond that, as with httpx's pool). A
  response read to its end gives its connection back; one abandoned mid-body closes it.
- ``timeout``: the seconds a connect, and each wait for the next bytes of the answer, may take (httpx's
  single-number timeout); beyond it ``httpx.ConnectTimeout`` or ``httpx.ReadTimeout``.
- A request sent on a reused connection that the server had closed meanwhile (it closed without a byte of
  answer) is sent once more on a new connection, as httpx does for a connection it finds closed.
- TLS with httpx's own context (certifi's roots, ``SSL_CERT_FILE``/``SSL_CERT_DIR``); an origin that the
  environment sends through a proxy (``HTTPS_PROXY``, ``ALL_PROXY``... outside ``NO_PROXY``) is sent through
  an ``httpx.AsyncClient`` instead, which speaks to proxies; the answer is the same either way.
- No ``accept-encoding`` is sent (an identity answer costs no decompression); a gzip or deflate body a server
  sends anyway is decoded.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.request
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httptools
import httpx

KEEPALIVE_S = 30.0
MAX_IDLE = 128  # idle connections kept per origin
MAX_CONNECTIONS = 512  # open at once, over every origin
HIGH_WATER = 256 * 1024  # bytes of answer read but not consumed yet: reading pauses beyond them
USER_AGENT = b"pairshift"

Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: a request at a time, its answer parsed as it arrives."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False  # whether a previous exchange ran on it (a closed reused one is sent again)
        self.idle_since = 0.0
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        # the read timeout: one timer a connection, re-armed when it fires early, instead of one per wait
        self._timer: asyncio.TimerHandle | None = None
        self._timeout: float | None = None
        self._progress = 0.0  # loop time of the last bytes received, or of the current wait's start
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.keep_alive = False  # read at the head: the parser forgets it at the answer's end
        self.complete = False
        self.failure: Exception | None = None
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.received = False  # a byte of the answer came
        self.paused = False
        self.framed = True  # content-length or chunked: the end is in the bytes, not the close

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self._timer is not None:
            self._progress = self._loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server upgraded the connection"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP answer: {exc}"))

    def eof_received(self) -> bool | None:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stop_timer()
        if self.headers_done and not self.complete and not self.framed and self.failure is None:
            self.complete = True  # an answer without content-length or chunking ends at the close
        elif not self.complete and self.failure is None:
            what = "without sending an answer" if not self.received else "before the answer's end"
            self.failure = httpx.RemoteProtocolError(f"the server closed the connection {what}")
        self._wake()

    # ---- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an informational answer (100, 103): the real one follows
            self.raw_headers = []
            return
        self.status = status
        names = {name.lower() for name, _ in self.raw_headers}
        self.framed = b"content-length" in names or b"transfer-encoding" in names
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        # no wake-up for the head alone: its reader goes on to wait for the body anyway, so it is woken by the
        # first body bytes, the end or a failure (one task step less per answer whose head comes apart)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status:
            self.complete = True
            self._wake()

    # ---- the request side

    def _fail(self, exc: Exception) -> None:
        self.failure = exc
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Until the parser says something new (body bytes, the end, a failure); ReadTimeout when no bytes
        came for ``timeout`` seconds. The timer is the connection's, armed at the first wait and moved on
        lazily (:meth:`_check_timeout`): a stream's reads cost no timer each."""
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        self._timeout = timeout
        if timeout is not None:
            self._progress = now = loop.time()
            timer = self._timer
            if timer is None or timer.when() > now + timeout:  # none yet, or armed for a longer timeout
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(now + timeout, self._check_timeout)
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_timeout(self) -> None:
        self._timer = None
        waiter, timeout = self._waiter, self._timeout
        if waiter is None or waiter.done() or timeout is None:
            return  # not waiting: the next wait arms it again
        due = self._progress + timeout
        if self._loop.time() >= due:
            waiter.set_exception(httpx.ReadTimeout("no answer within the timeout"))
        else:
            self._timer = self._loop.call_at(due, self._check_timeout)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def take(self) -> bytes:
        """The body read so far and not taken yet."""
        data = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks, self.buffered = [], 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return (
            self.complete
            and self.failure is None
            and not self.closed
            and self.keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )


class Response:
    """What :mod:`pairshift.providers.direct` reads of an answer, as ``httpx.Response`` names it."""

    def __init__(self, conn: _Connection, client: Client, timeout: float | None) -> None:
        self.status_code = conn.status
        self._raw_headers = conn.raw_headers
        self._conn: _Connection | None = conn
        self._client, self._timeout = client, timeout
        self._decoder = _decoder(conn.raw_headers)
        self.content = b""

    @property
    def headers(self) -> httpx.Headers:
        return httpx.Headers(self._raw_headers)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded when the server encoded it)."""
        conn = self._conn
        if conn is None:
            return
        while True:
            if conn.chunks:
                data = conn.take()
                yield self._decoder.decompress(data) if self._decoder is not None else data
                continue
            if conn.failure is not None:
                raise conn.failure
            if conn.complete:
                break
            await conn.wait(self._timeout)
        if self._decoder is not None and (rest := self._decoder.flush()):
            yield rest
        self.close()

    async def aread(self) -> bytes:
        self.content = b"".join([part async for part in self.aiter_bytes()])
        return self.content

    def close(self) -> None:
        """The exchange is over: the connection goes back to the pool when the answer was read to its end
        (else it is closed: it cannot carry another request)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client.release(conn)


def _decoder(headers: list[tuple[bytes, bytes]]) -> Any:
    for name, value in headers:
        if name.lower() == b"content-encoding":
            coding = value.strip().lower()
            if coding in (b"", b"identity"):
                return None
            if coding in (b"gzip", b"x-gzip"):
                return zlib.decompressobj(zlib.MAX_WBITS | 16)
            if coding == b"deflate":
                return zlib.decompressobj()
            raise httpx.DecodingError(f"unsupported content-encoding {coding.decode(errors='replace')!r}")
    return None


class Client:
    """Pooled HTTP/1.1 connections of one event loop (module doc)."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = asyncio.Semaphore(MAX_CONNECTIONS)
        self._targets: dict[str, tuple[Origin, bytes, bool]] = {}  # url -> (origin, request target, proxied)
        self._ssl: ssl.SSLContext | None = None
        self._proxied: httpx.AsyncClient | None = None

    def _target(self, url: str) -> tuple[Origin, bytes, bool]:
        known = self._targets.get(url)
        if known is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise httpx.UnsupportedProtocol(f"not an http(s) URL: {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host = parts.hostname
            proxies = urllib.request.getproxies_environment()
            proxied = bool(
                (proxies.get(parts.scheme) or proxies.get("all"))
                and not urllib.request.proxy_bypass_environment(host, proxies)
            )
            default_port = port == (443 if parts.scheme == "https" else 80)
            host_header = (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{port}")
            head = f" {target} HTTP/1.1\r\nhost: {host_header}\r\n".encode("ascii")
            if len(self._targets) > 1024:
                self._targets.clear()  # bounded: model URLs are few
            known = self._targets[url] = ((parts.scheme, host, port), head, proxied)
        return known

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
                self._ssl.set_alpn_protocols(["http/1.1"])
            context = self._ssl
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(origin),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
        return conn

    def _pooled(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                return conn
            self._discard(conn)
        return None

    def release(self, conn: _Connection) -> None:
        """A connection whose exchange is over: pooled when it can carry another, else closed."""
        if conn.reusable():
            idle = self._idle.setdefault(conn.origin, [])
            if len(idle) < MAX_IDLE:
                conn._reset()
                conn.reused, conn.idle_since = True, time.monotonic()
                idle.append(conn)
                self._open.release()
                return
        self._discard(conn)
        self._open.release()

    def _discard(self, conn: _Connection) -> None:
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.close()

    async def _exchange(self, url: str, headers: dict[str, str], body: bytes, timeout: float | None) -> Any:
        """Send a POST and wait for the answer's head: (connection, None), or the httpx client's response
        context for a proxied origin."""
        origin, head, proxied = self._target(url)
        request = _request_bytes(head, headers, body)
        await self._open.acquire()
        try:
            for attempt in (1, 2):
                conn = self._pooled(origin) or await self._connect(origin, timeout)
                assert conn.transport is not None
                conn.transport.write(request)
                try:
                    while not conn.headers_done:
                        if conn.failure is not None:
                            raise conn.failure
                        await conn.wait(timeout)
                except httpx.RemoteProtocolError:
                    self._discard(conn)
                    if attempt == 1 and conn.reused and not conn.received:
                        continue  # the server had closed the idle connection: once more on a new one
                    raise
                except BaseException:
                    self._discard(conn)
                    raise
                return conn
        except BaseException:
            self._open.release()
            raise
        raise AssertionError("unreachable")

    async def post(
        self, url: str, *, json: Any, headers: dict[str, str], timeout: float | None = None
    ) -> Response:
        """A POST of ``json``, read whole (``response.content``)."""
        body = _json_bytes(json)
        if self._target(url)[2]:
            return await self._proxy().post(
                url, content=body, headers=_json_headers(headers), timeout=timeout
            )  # type: ignore[return-value]
        conn = await self._exchange(url, headers, body, timeout)
        response = Response(conn, self, timeout)
        try:
            await response.aread()
        finally:
            response.close()
        return response

    @asynccontextmanager
    async def stream(
        self, method: str, url: str, *, json: Any, headers: dict[str, str], timeout: float | None = None
    ) -> AsyncIterator[Response]:
        """A POST of ``json`` whose answer is read as it arrives (``aiter_bytes``); the connection goes back
        to the pool when the answer was read to its end, else it is closed."""
        if method != "POST":
            raise ValueError("the serving path only POSTs")
        body = _json_bytes(json)
        if self._target(url)[2]:
            async with self._proxy().stream(
                "POST", url, content=body, headers=_json_headers(headers), timeout=timeout
            ) as proxied:
                yield proxied  # type: ignore[misc]
            return
        conn = await self._exchange(url, headers, body, timeout)
        response = Response(conn, self, timeout)
        try:
            yield response
        finally:
            response.close()

    def _proxy(self) -> httpx.AsyncClient:
        if self._proxied is None:
            limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_IDLE)
            self._proxied = httpx.AsyncClient(limits=limits, timeout=None)
        return self._proxied


def _json_bytes(value: Any) -> bytes:
    # as httpx encodes ``json=``: compact, UTF-8, no NaN
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _json_headers(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "content-type": "application/json"}


def _request_bytes(head: bytes, headers: dict[str, str], body: bytes) -> bytes:
    lines = [b"POST", head]
    for name, value in headers.items():
        line = f"{name}: {value}\r\n"
        if "\r" in line[:-2] or "\n" in line[:-2] or "\0" in line:
            raise httpx.LocalProtocolError(f"header {name!r}: a line break or NUL in its value")
        try:
            lines.append(line.encode("ascii"))
        except UnicodeEncodeError:
            raise httpx.LocalProtocolError(f"header {name!r}: not ASCII") from None
    lines.append(
        b"user-agent: %s\r\naccept: application/json, text/event-stream\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % (USER_AGENT, len(body))
    )
    lines.append(body)
    return b"".join(lines)
