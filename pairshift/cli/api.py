"""`pairshift api`: serve the HTTP API (router, observations, migrations; Slack when mounted) with uvicorn."""

from __future__ import annotations

import ipaddress
import os

import typer

from pairshift.cli.common import CLIError, console


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


ENV_AUTH, ENV_LIVE_STATUS = "PAIRSHIFT_API_WORKER_AUTH", "PAIRSHIFT_API_WORKER_LIVE_STATUS"


def app_from_environment():  # type: ignore[no-untyped-def]
    """The app of one `pairshift api --workers N` process (uvicorn calls this in each worker).

    Authentication is on unless the parent command wrote ``0`` (it did so only for ``--no-auth`` on a loopback
    address); a variable missing or holding anything else keeps it on.
    """
    from pairshift.api import create_app
    from pairshift.slack.interactions import interactions_router
    from pairshift.telemetry.tracing import setup_tracing
    from pairshift.temporal_client import connect

    setup_tracing("pairshift-api")
    return create_app(
        temporal_client_factory=connect if os.environ.get(ENV_LIVE_STATUS, "1") != "0" else None,
        extra_routers=[interactions_router()],
        auth=os.environ.get(ENV_AUTH) != "0",
    )


def api(
    port: int = typer.Option(8080, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Bind address (0.0.0.0 to serve other machines)."),
    live_status: bool = typer.Option(
        True,
        "--live-status/--no-live-status",
        help="Answer GET /v1/migrations/{id} with the workflow's live status from Temporal when it answers.",
    ),
    no_auth: bool = typer.Option(
        False, "--no-auth", help="Serve every route without a token (only on a loopback address)."
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Server processes sharing the port (uvicorn workers); each has its own routers, observation "
        "writer and per-token observe rate limit (so the limit is workers x "
        "PAIRSHIFT_API_OBSERVE_ROWS_PER_MINUTE).",
    ),
) -> None:
    """Serve the router/observations/migrations HTTP API (OpenAPI at /docs). Ctrl-C stops it.

    Every route but /healthz and /slack/interactions needs a bearer token (`pairshift tokens create`)."""
    import uvicorn

    from pairshift.api import create_app
    from pairshift.settings import get_settings, masked_url
    from pairshift.slack.interactions import interactions_router
    from pairshift.telemetry.tracing import setup_tracing, shutdown_tracing
    from pairshift.temporal_client import connect

    if no_auth and not is_loopback(host):
        raise CLIError(f"--no-auth serves anyone who can reach {host}: allowed on a loopback address only")
    registry = masked_url(get_settings().registry_url)
    if workers > 1:
        # uvicorn starts the worker processes from an import string; the options travel in the environment,
        # written here whatever it held before, so only this command decides them.
        os.environ[ENV_AUTH] = "0" if no_auth else "1"
        os.environ[ENV_LIVE_STATUS] = "1" if live_status else "0"
        console.print(
            f"pairshift api on http://{host}:{port} with {workers} workers (docs /docs, registry {registry})",
            soft_wrap=True,
        )
        if no_auth:
            console.print(
                f"[bold red]authentication OFF[/] (--no-auth): every route answers anyone on {host}"
            )
        uvicorn.run(
            "pairshift.cli.api:app_from_environment",
            factory=True,
            http="pairshift.cli.api_protocol:NoDelayHttpToolsProtocol",
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
        )
        return
    tracing = setup_tracing("pairshift-api")  # OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set
    app = create_app(
        temporal_client_factory=connect if live_status else None,
        extra_routers=[interactions_router()],
        auth=not no_auth,
    )
    console.print(
        f"pairshift api on http://{host}:{port} (docs /docs, registry {registry})",
        soft_wrap=True,
    )
    if no_auth:
        console.print(
            f"[bold red]authentication OFF[/] (--no-auth): every route answers anyone on {host}",
            soft_wrap=True,
        )
    if tracing:
        console.print("traces exported over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT)", soft_wrap=True)
    try:
        from pairshift.cli.api_protocol import NoDelayHttpToolsProtocol

        uvicorn.run(app, host=host, port=port, http=NoDelayHttpToolsProtocol, log_level="warning")
    finally:
        shutdown_tracing()  # flush the spans still batched
