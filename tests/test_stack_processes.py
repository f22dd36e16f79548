"""`pairshift server` and `pairshift worker` as real processes: a workflow runs on them, both stop cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pairshift.contracts.health import HealthRequest
from pairshift.temporal_client import connect
from workflows.health import HealthWorkflow

pytestmark = pytest.mark.e2e  # pairshift server and worker as processes

PAIRSHIFT = str(Path(sys.executable).parent / "pairshift")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_for_port(port: int, proc: subprocess.Popen, deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, f"process exited early with {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=30)


async def test_server_and_worker_processes_run_a_workflow(tmp_path: Path):
    port, ui_port = free_port(), free_port()
    env = dict(
        os.environ, PAIRSHIFT_HOME=str(tmp_path / "home"), PAIRSHIFT_TEMPORAL_ADDRESS=f"127.0.0.1:{port}"
    )
    env.pop("PAIRSHIFT_DATABASE_URL", None)
    server = subprocess.Popen(
        [PAIRSHIFT, "server", "--port", str(port), "--ui-port", str(ui_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    worker = None
    try:
        await _wait_for_port(port, server)
        await _wait_for_port(ui_port, server)
        worker = subprocess.Popen(
            [PAIRSHIFT, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        client = await connect(f"127.0.0.1:{port}", "default")
        report = await client.execute_workflow(
            HealthWorkflow.run,
            HealthRequest(note="from-test"),
            id=f"health-{port}",
            task_queue="pairshift",
        )
        assert report.note == "from-test" and report.registry.deployments == 0
        assert _stop(worker) == 0
        out = worker.stdout.read()
        assert "polling task queue 'pairshift'" in out and "worker stopped" in out
        worker = None
        assert _stop(server) == 0
        server_out = server.stdout.read()
        assert f"http://localhost:{ui_port}/namespaces/default/workflows" in server_out
        assert (tmp_path / "home" / "temporal.db").exists(), "state file under PAIRSHIFT_HOME"
    finally:
        for p in (worker, server):
            if p is not None and p.poll() is None:
                p.kill()


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's prctl")
async def test_a_killed_server_takes_its_temporal_process_with_it(tmp_path: Path):
    """SIGKILL of `pairshift server` (no handler runs) still stops the Temporal dev server it started: before,
    the dev server (in a session of its own) kept serving, holding the port and the state file."""
    port, ui_port = free_port(), free_port()
    env = dict(os.environ, PAIRSHIFT_HOME=str(tmp_path / "home"))
    server = subprocess.Popen(
        [PAIRSHIFT, "server", "--port", str(port), "--ui-port", str(ui_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _wait_for_port(port, server)
        (temporal,) = _children(server.pid)
        server.kill()
        server.wait(timeout=10)
        end = time.monotonic() + 30
        while Path(f"/proc/{temporal}").exists() and _state(temporal) != "Z":
            assert time.monotonic() < end, "the Temporal dev server outlived pairshift server"
            await asyncio.sleep(0.1)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "something still listens on the server's port"
    finally:
        if server.poll() is None:
            server.kill()


def _state(pid: int) -> str:
    """The process state letter of /proc/PID/stat ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""
