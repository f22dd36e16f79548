"""`pairshift observations prune`: fold observations older than the retention into daily rollups."""

from __future__ import annotations

import typer

from pairshift.cli.common import console, emit_json

app = typer.Typer(help="Production observations: retention.", no_args_is_help=True)


@app.command("prune")
def prune(
    older_than_days: int | None = typer.Option(
        None,
        "--older-than-days",
        min=1,
        max=3650,
        help="Keep this many days of calls (default PAIRSHIFT_RETENTION_DAYS, 30).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Roll observations older than the retention up into daily rollups and delete them (idempotent).

    A running migration's observations are kept whatever their age. The daily `pairshift-retention` Schedule
    (`pairshift schedules install`) does the same on the worker.
    """
    from pairshift.observations.retention import cutoff_for, roll_up
    from pairshift.registry import open_registry
    from pairshift.registry.models import utcnow
    from pairshift.settings import get_settings

    days = older_than_days or get_settings().retention_days
    result = roll_up(open_registry(), cutoff_for(utcnow(), days))
    if as_json:
        return emit_json(result.model_dump(mode="json"))
    console.print(
        f"rolled up {result.rolled_up:,} observation(s) older than {days} day(s) into {result.rollup_rows:,} "
        f"daily rollup row(s) over {result.days} day(s); kept {result.kept_live:,} of running migrations"
    )
