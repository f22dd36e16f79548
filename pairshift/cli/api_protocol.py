"""uvicorn's httptools protocol as `pairshift api` serves with it: TCP_NODELAY on every connection, and a
response's head sent in the same write as its first body bytes.

With ``--workers`` uvicorn binds the socket itself (``socket.socket(AF_INET, SOCK_STREAM)``, protocol 0), and
asyncio disables Nagle's algorithm only on sockets whose protocol is IPPROTO_TCP: a response's headers and
body then wait on the client's delayed ACK, 45 ms a request instead of 0.9 (bench/results/api_load.md). A
module of its own: uvicorn's worker processes import it by name, and the CLI does not import uvicorn to start.

uvicorn writes a response's status line and headers to the socket at ``http.response.start`` and its body at
each ``http.response.body``: two sends for every JSON answer, and for a stream's head and first event, each
waking the client for a part of the answer (bench/results/gateway.md). :class:`HeadWithBody` holds the head
until the body's first write of the same event-loop turn, or the turn's end (a stream whose first event is
not ready yet gets its head then, as before).

httptools (a dependency) is uvicorn's C parser; pure-Python h11, its fallback, was the largest single cost of
a gateway request in the profile (about 1.3 ms of the added 3 ms, bench/results/gateway.md).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD = b"HTTP/1.1 "  # uvicorn's status lines (every response's head) start so


class HeadWithBody:
    """A connection's transport as uvicorn's protocol writes to it (module doc); anything else is the
    transport's own."""

    __slots__ = ("_transport", "_held")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif type(data) is bytes and data.startswith(HEAD):  # a body may be any bytes-like object
            self._held = data
            asyncio.get_running_loop().call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send a held head now (the turn ended before a body write)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(HeadWithBody(transport))  # type: ignore[arg-type]
