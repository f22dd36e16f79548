"""`pairshift doctor`: check what the stack needs, one line per check with what to do when it fails."""

from __future__ import annotations

import asyncio
import os
from datetime import date

import typer

from pairshift.cli.common import EXIT_FAILED, console, emit_json


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
) -> None:
    """Check the stack: Temporal, namespace, workers on every task queue, registry, provider keys, Slack,
    the provider calendar's age; exit 1 when any check fails."""
    from pairshift.doctor import run_checks

    checks = asyncio.run(run_checks(os.environ, date.today()))
    failed = [c for c in checks if c.failed]
    if as_json:
        emit_json({"ok": not failed, "checks": [c.as_dict() for c in checks]})
    else:
        for c in checks:
            console.print(c.line(), soft_wrap=True, markup=False)
        console.print(
            f"{len(failed)} of {len(checks)} checks failed" if failed else f"all {len(checks)} checks passed"
        )
    if failed:
        raise typer.Exit(EXIT_FAILED)
