"""`pairshift api --workers N`: each worker process builds its app from what the parent command decided."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from pairshift.cli.api import ENV_AUTH, ENV_LIVE_STATUS, app_from_environment


@pytest.mark.parametrize(
    ("auth_env", "status"),
    [("1", 401), (None, 401), ("yes", 401), ("", 401), ("0", 200)],
    ids=["on", "missing: on", "garbage: on", "empty: on", "--no-auth on loopback"],
)
def test_a_worker_checks_tokens_unless_the_command_said_no_auth(
    pairshift_env, monkeypatch: pytest.MonkeyPatch, auth_env: str | None, status: int
) -> None:
    if auth_env is None:
        monkeypatch.delenv(ENV_AUTH, raising=False)
    else:
        monkeypatch.setenv(ENV_AUTH, auth_env)
    monkeypatch.setenv(ENV_LIVE_STATUS, "0")
    with TestClient(app_from_environment()) as client:
        assert client.get("/v1/migrations").status_code == status


def test_workers_is_bounded(cli) -> None:
    result = cli("api", "--workers", "0")
    assert result.code == 2 and "--workers" in result.err


def test_worker_connections_send_without_nagles_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's --workers socket has protocol 0, so asyncio leaves Nagle on: 45 ms a request."""
    import socket

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from pairshift.cli.api_protocol import NoDelayHttpToolsProtocol

    monkeypatch.setattr(HttpToolsProtocol, "connection_made", lambda self, transport: None)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:  # as uvicorn binds it
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0

                class Transport:
                    def get_extra_info(self, name: str) -> object:
                        return accepted if name == "socket" else None

                NoDelayHttpToolsProtocol.connection_made(
                    object.__new__(NoDelayHttpToolsProtocol), Transport()
                )
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


async def test_a_response_head_goes_out_with_its_first_body_bytes() -> None:
    """uvicorn writes a response's head at http.response.start: held for the body's first write of the same
    turn (one send), else sent at the turn's end; closing sends what is held first."""
    from pairshift.cli.api_protocol import HeadWithBody

    class Transport:
        def __init__(self) -> None:
            self.writes: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.writes.append(data)

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

        def get_extra_info(self, name: str) -> object:
            return name

    transport = Transport()
    wrapped = HeadWithBody(transport)  # type: ignore[arg-type]
    wrapped.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    wrapped.write(b"{}")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    wrapped.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")  # a stream not ready yet
    assert len(transport.writes) == 1
    await asyncio.sleep(0)  # the turn ends: the head goes alone
    assert transport.writes[-1].startswith(b"HTTP/1.1 200") and len(transport.writes) == 2
    wrapped.write(b"5\r\nhello\r\n")
    wrapped.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    wrapped.close()
    assert transport.writes[2:] == [b"5\r\nhello\r\n", b"HTTP/1.1 500 Internal Server Error\r\n\r\n"]
    assert transport.closed and wrapped.get_extra_info("socket") == "socket"
    wrapped.write(memoryview(b"HTTP/1.1 in a streamed body"))  # a body's bytes-like chunk goes on as it is
    assert transport.writes[-1] == b"HTTP/1.1 in a streamed body"
