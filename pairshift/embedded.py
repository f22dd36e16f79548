"""The embedded stack as child processes (PRODUCT §12): Temporal dev server, worker, API and sim server.

Used by `pairshift demo` and end-to-end tests. Every process is started in its own session and stopped
(SIGINT, then SIGKILL after a grace period) when the ``EmbeddedStack`` context exits, so nothing is left
running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class EmbeddedStack(AbstractContextManager):
    """Start `pairshift server` and `pairshift worker` (and optional extra `pairshift ...` processes)."""

    def __init__(
        self, home: Path, *, port: int | None = None, ui_port: int | None = None, log_dir: Path | None = None
    ) -> None:
        self.home = home.resolve()
        self.port = port or free_port()
        self.ui_port = ui_port or free_port()
        self.log_dir = (log_dir or self.home / "logs").resolve()
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(
            os.environ,
            PAIRSHIFT_HOME=str(self.home),
            PAIRSHIFT_TEMPORAL_ADDRESS=self.address,
            PAIRSHIFT_UI_URL=f"http://localhost:{self.ui_port}",
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://localhost:{self.ui_port}"

    def start(
        self, name: str, *args: str, wait_port: int | None = None, timeout_s: float = 60
    ) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "w")
        exe = str(Path(sys.executable).parent / "pairshift")
        proc = subprocess.Popen(
            [exe, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        if wait_port is not None:
            deadline = time.monotonic() + timeout_s
            while not port_open(wait_port):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} did not listen on {wait_port} within {timeout_s:.0f}s")
                time.sleep(0.1)
        return proc

    def __enter__(self) -> EmbeddedStack:
        self.home.mkdir(parents=True, exist_ok=True)
        self.start(
            "server", "server", "--port", str(self.port), "--ui-port", str(self.ui_port), wait_port=self.port
        )
        self.start("worker", "worker")
        return self

    def stop(self, name: str, *, kill: bool = False) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGINT)
            proc.wait(timeout=20)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def __exit__(self, *exc) -> None:
        for name in [n for n in self.procs if n != "server"] + ["server"]:
            self.stop(name)
