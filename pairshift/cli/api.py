"""`pairshift api`: serve the HTTP API (router, observations, migrations; Slack when mounted) with uvicorn."""

from __future__ import annotations

import ipaddress

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
    tracing = setup_tracing("pairshift-api")  # OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set
    app = create_app(
        temporal_client_factory=connect if live_status else None,
        extra_routers=[interactions_router()],
        auth=not no_auth,
    )
    registry = masked_url(get_settings().registry_url)
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
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        shutdown_tracing()  # flush the spans still batched
