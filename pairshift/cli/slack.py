"""`pairshift slack ...`: Slack without a public URL (Socket Mode). Register with
``app.add_typer(slack.app, name="slack")`` in ``pairshift/cli/__init__.py``."""

from __future__ import annotations

import asyncio
import signal

import typer

from pairshift.cli.common import EXIT_BAD_INPUT, CLIError, console

app = typer.Typer(
    help="Slack: approval buttons over Socket Mode for installs without a public URL.", no_args_is_help=True
)


@app.callback()
def _slack() -> None:
    """Slack: approval buttons over Socket Mode for installs without a public URL."""


@app.command()
def socket() -> None:
    """Receive Approve / Reject clicks over Socket Mode (SLACK_APP_TOKEN, SLACK_BOT_TOKEN); Ctrl-C stops."""
    from pairshift.slack import slack_settings
    from pairshift.slack.socket_mode import require_socket_settings, run_socket_mode

    settings = slack_settings()
    try:
        require_socket_settings(settings)
    except ValueError as exc:
        raise CLIError(str(exc), code=EXIT_BAD_INPUT) from None

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_socket_mode(stop, settings=settings)

    console.print("pairshift slack socket: connecting (Ctrl-C stops)")
    asyncio.run(go())
    console.print("pairshift slack socket: stopped")
