"""uvicorn's httptools protocol with TCP_NODELAY on every connection, for `pairshift api --workers N`.

With ``--workers`` uvicorn binds the socket itself (``socket.socket(AF_INET, SOCK_STREAM)``, protocol 0), and
asyncio disables Nagle's algorithm only on sockets whose protocol is IPPROTO_TCP: a response's headers and
body then wait on the client's delayed ACK, 45 ms a request instead of 0.9 (bench/results/api_load.md). A
module of its own: uvicorn's worker processes import it by name, and the CLI does not import uvicorn to start.

httptools (a dependency) is uvicorn's C parser; pure-Python h11, its fallback, was the largest single cost of
a gateway request in the profile (about 1.3 ms of the added 3 ms, bench/results/gateway.md).
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
