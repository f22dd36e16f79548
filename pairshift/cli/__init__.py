"""The `pairshift` command line (PRODUCT §11). Exit codes: 0 ok, 1 the thing asked for failed, 2 bad input.

Errors are one readable line; `--debug` (or PAIRSHIFT_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from pairshift.cli import (
    api,
    datasets,
    demo,
    doctor,
    evals,
    migration,
    observations,
    provider_calendar,
    registry,
    slack,
    stack,
    tokens,
)
from pairshift.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, CLIError, err_console

app = typer.Typer(
    name="pairshift",
    help="Durable, evidence-gated migrations of LLM prompt x model pairs, orchestrated by Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(help=registry.apply.__doc__)(registry.apply)
app.command(help=registry.get.__doc__)(registry.get)
app.command(help=registry.ledger.__doc__)(registry.ledger)
app.command(help=stack.server.__doc__)(stack.server)
app.command(help=stack.worker.__doc__)(stack.worker)
app.add_typer(stack.sim_app, name="sim")
app.command(help=demo.demo.__doc__)(demo.demo)
app.command(help=doctor.doctor.__doc__)(doctor.doctor)
app.add_typer(migration.app, name="migrate")
app.command(name="api", help=api.api.__doc__)(api.api)
app.command("eval", help=evals.eval_cmd.__doc__)(evals.eval_cmd)
app.add_typer(provider_calendar.models_app, name="models")
app.add_typer(provider_calendar.deprecations_app, name="deprecations")
app.add_typer(provider_calendar.schedules_app, name="schedules")
app.add_typer(slack.app, name="slack")
app.add_typer(tokens.app, name="tokens")
app.add_typer(datasets.app, name="datasets")
app.add_typer(observations.app, name="observations")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    if debug:
        os.environ["PAIRSHIFT_DEBUG"] = "1"


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from pairshift.config import ConfigError
    from pairshift.resolver import InvalidRequest

    return (ConfigError, InvalidRequest, ValidationError)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this in-process)."""
    try:
        # With standalone_mode=False click returns typer.Exit's code instead of raising it.
        code = app(args=argv, standalone_mode=False)
        return code if isinstance(code, int) else 0
    except SystemExit as exc:
        return int(exc.code or 0)
    except CLIError as exc:
        err_console.print(f"error: {exc}", soft_wrap=True)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one line, not a traceback
        import click

        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        # typer >= 0.20 vendors its own click (typer._click), whose exceptions are not click's: both are
        # usage errors (a bad option value, a missing argument), answered with one line and exit 2.
        if isinstance(exc, click.ClickException | typer.TyperException) and hasattr(exc, "format_message"):
            err_console.print(f"error: {exc.format_message()}", soft_wrap=True)
            return int(getattr(exc, "exit_code", EXIT_BAD_INPUT))
        if os.environ.get("PAIRSHIFT_DEBUG"):
            traceback.print_exc()
        code = EXIT_BAD_INPUT if isinstance(exc, _bad_input_types()) else EXIT_FAILED
        err_console.print(f"error: {exc}", soft_wrap=True)
        return code


def main() -> None:
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit without interpreter finalisation: the Temporal core runtime can abort in PyGILState_Release at
    # teardown (sdk-python#300) after all work is done, which would turn a success into a crash.
    os._exit(code)
