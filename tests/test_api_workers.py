"""`pairshift api --workers N`: each worker process builds its app from what the parent command decided."""

from __future__ import annotations

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
