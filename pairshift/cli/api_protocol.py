"""uvicorn's h11 protocol with TCP_NODELAY on every connection, for `pairshift api --workers N`.

With ``--workers`` uvicorn binds the socket itself (``socket.socket(AF_INET, SOCK_STREAM)``, protocol 0), and
asyncio disables Nagle's algorithm only on sockets whose protocol is IPPROTO_TCP: a response's headers and
body then wait on the client's delayed ACK, 45 ms a request instead of 0.9 (bench/results/api_load.md). A
module of its own: uvicorn's worker processes import it by name, and the CLI does not import uvicorn to start.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
