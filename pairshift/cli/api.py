"""`pairshift api`: serve the HTTP API (router, observations, migrations; Slack when mounted) with uvicorn."""

from __future__ import annotations

import typer

from pairshift.cli.common import console


def api(
    port: int = typer.Option(8080, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Bind address (0.0.0.0 to serve other machines)."),
    live_status: bool = typer.Option(
        True,
        "--live-status/--no-live-status",
        help="Answer GET /v1/migrations/{id} with the workflow's live status from Temporal when it answers.",
    ),
) -> None:
    """Serve the router/observations/migrations HTTP API (OpenAPI at /docs). Ctrl-C stops it."""
    import uvicorn

    from pairshift.api import create_app
    from pairshift.settings import get_settings
    from pairshift.slack.interactions import interactions_router
    from pairshift.temporal_client import connect

    app = create_app(
        temporal_client_factory=connect if live_status else None, extra_routers=[interactions_router()]
    )
    console.print(
        f"pairshift api on http://{host}:{port} (docs /docs, registry {get_settings().registry_url})",
        soft_wrap=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
