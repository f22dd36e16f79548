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
