"""`pairshift api` serves the app with uvicorn on the given host and port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e  # pairshift api as a process

# The command alone, mounted on a one-command Typer app: the test needs no other part of the CLI.
LAUNCH = (
    "import typer; from pairshift.cli.api import api; app = typer.Typer(); app.command()(api); "
    "app(standalone_mode=True)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_pairshift_api_serves_health_and_openapi(tmp_path: Path, workers: str):
    port = _free_port()
    env = os.environ | {"PAIRSHIFT_HOME": str(tmp_path / "home")}
    env.pop("PAIRSHIFT_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "--port", str(port), "--host", "127.0.0.1", "--no-live-status"]
        + ["--workers", workers],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # poll until the server answers
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "server exited"
                assert time.monotonic() < deadline, "pairshift api did not answer in 30 s"
                time.sleep(0.05)
        assert r.status_code == 200 and r.json()["ok"] is True
        assert "/v1/observations" in httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()["paths"]
        refused = httpx.get(f"http://127.0.0.1:{port}/v1/migrations")
        assert refused.status_code == 401, "every worker process checks tokens"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
