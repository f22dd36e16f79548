"""`pairshift models sync|list`, `deprecations scan` and `schedules install` (PRODUCT §4, §8, §11).

`models` works on the registry only. `deprecations scan` and `schedules install` are Temporal clients: the
scan runs DeprecationScanWorkflow once and waits for it (a worker must be polling); the install creates the
two Schedules idempotently (a second install changes nothing). The async functions (:func:`run_scan`,
:func:`install_schedules`) take a client so tests and the demo call them directly.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import typer
from sqlmodel import select
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    WorkflowFailureError,
)
from temporalio.exceptions import FailureError

from pairshift.cli.common import (
    EXIT_FAILED,
    CLIError,
    connect_or_fail,
    console,
    emit_json,
    err_console,
    table,
)
from pairshift.deprecation_plan import active_snapshot, by_id, is_alias
from pairshift.provider_calendar import CalendarError, load_calendar, newest_read_on, sync
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, Model
from pairshift.settings import get_settings

models_app = typer.Typer(
    help="The provider calendar: retirement dates, prices, unpinned aliases.", no_args_is_help=True
)
deprecations_app = typer.Typer(help="Deprecation reminders and automatic migrations.", no_args_is_help=True)
schedules_app = typer.Typer(help="The Temporal Schedules that run the scans.", no_args_is_help=True)

SCAN_SCHEDULE, DRIFT_SCHEDULE = "pairshift-deprecation-scan", "pairshift-alias-drift"
RETENTION_SCHEDULE = "pairshift-retention"
SCAN_EVERY, DRIFT_EVERY, RETENTION_EVERY = timedelta(days=1), timedelta(hours=6), timedelta(days=1)
CALENDAR_STALE_AFTER = timedelta(days=90)  # providers rewrite their pages; a quarter-old calendar misleads
CATCHUP = timedelta(days=1)  # a server down overnight still runs the missed scan once, not a backlog
SCAN_TIMEOUT = timedelta(minutes=10)  # without a polling worker the CLI would otherwise wait forever


# ----------------------------------------------------------------------------------------- models


@models_app.command("sync")
def models_sync(
    source: Path | None = typer.Option(
        None,
        "--from",
        help="A calendar YAML or LiteLLM's "
        "model_prices_and_context_window.json (default: the bundled calendar).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Load the provider calendar into the registry; models from config are never changed."""
    try:
        entries = load_calendar(source)  # all validated before the registry is touched
    except CalendarError as exc:
        raise CLIError(str(exc)) from None
    with open_registry().session() as s:
        result = sync(s, entries)
    if json_out:
        return emit_json({"source": str(source or "bundled"), "entries": len(entries), **result.model_dump()})
    for name in result.created:
        console.print(f"  created {name}")
    for name in result.updated:
        console.print(f"  updated {name}")
    if result.kept_config:
        console.print(f"  kept (from config): {', '.join(result.kept_config)}")
    console.print(
        f"{len(result.created)} created, {len(result.updated)} updated, {result.unchanged} unchanged, "
        f"{len(result.kept_config)} owned by config"
    )


def model_rows(today: date) -> list[dict[str, Any]]:
    """Each model with its days to retirement, the deployments pinned to it and those reaching it by alias."""
    with open_registry().session() as s:
        models = s.exec(select(Model).order_by(Model.id)).all()
        deployments = s.exec(select(Deployment).order_by(Deployment.name)).all()
    table_ = by_id(models)
    pinned: dict[str, list[str]] = {}
    via_alias: dict[str, list[dict[str, str]]] = {}
    for dep in deployments:
        snap = active_snapshot(dep.active_model, table_)
        if snap is None:
            continue
        if is_alias(dep.active_model, table_):
            via_alias.setdefault(snap.id, []).append({"deployment": dep.name, "alias": dep.active_model})
        else:
            pinned.setdefault(snap.id, []).append(dep.name)
    out = []
    for m in models:
        days = (m.retires_on - today).days if m.retires_on else None
        out.append(
            {
                "id": m.id,
                "provider": m.provider,
                "aliases": m.aliases,
                "is_alias": m.is_alias,
                "resolved_snapshot": m.resolved_snapshot,
                "deprecated_on": m.deprecated_on,
                "retires_on": m.retires_on,
                "days_to_retirement": days,
                "retired": days is not None and days <= 0,
                "replacement": m.replacement,
                "price": {"input_per_mtok": m.input_per_mtok, "output_per_mtok": m.output_per_mtok},
                "source": m.source,
                "pinned": pinned.get(m.id, []),
                "via_alias": via_alias.get(m.id, []),
            }
        )
    return out


@models_app.command("list")
def models_list(
    today: str | None = typer.Option(None, "--today", help="Count days as of this date (YYYY-MM-DD)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Models with days to retirement, pinned deployments, deployments on unpinned aliases, RETIRED flags."""
    day = _parse_day(today) or date.today()
    stale = calendar_staleness(day)
    if stale:
        err_console.print(f"warning: {stale}")
    rows = model_rows(day)
    if json_out:
        return emit_json(rows)
    table(
        "models",
        ["id", "provider", "retires_on", "days left", "replacement", "pinned", "via alias", "source"],
        [
            [
                r["id"] + (" (alias)" if r["is_alias"] else ""),
                r["provider"],
                r["retires_on"],
                ("RETIRED" if r["retired"] else r["days_to_retirement"]),
                r["replacement"],
                ", ".join(("RETIRED " if r["retired"] else "") + d for d in r["pinned"]),
                ", ".join(f"{a['deployment']} ({a['alias']}, unpinned)" for a in r["via_alias"]),
                r["source"],
            ]
            for r in rows
        ],
    )


def calendar_staleness(today: date) -> str | None:
    """A warning when the bundled calendar's newest read date is over 90 days before ``today``, else None."""
    newest = newest_read_on(load_calendar())
    if newest is None or today - newest <= CALENDAR_STALE_AFTER:
        return None
    return (
        f"the bundled provider calendar was last read on {newest} ({(today - newest).days} days ago): "
        "providers move retirement dates and replacements; check the models you depend on against their "
        "pages, or refresh (`pairshift models sync --from model_prices_and_context_window.json`)"
    )


def _parse_day(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CLIError(f"--today: {text!r} is not a date (expected YYYY-MM-DD)") from None


# ----------------------------------------------------------------------------------------- Temporal


async def run_scan(client: Client, today: date | None = None, *, task_queue: str | None = None) -> Any:
    """Run DeprecationScanWorkflow once and wait for its result (a worker must poll ``task_queue``)."""
    from pairshift.contracts.deprecation_scan import ScanRequest
    from workflows.deprecation_scan import DeprecationScanWorkflow

    return await client.execute_workflow(
        DeprecationScanWorkflow.run,
        ScanRequest(today=today),
        id=f"{SCAN_SCHEDULE}-manual-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue or get_settings().task_queue,
        execution_timeout=SCAN_TIMEOUT,
    )


@deprecations_app.command("scan")
def deprecations_scan(
    today: str | None = typer.Option(
        None, "--today", help="Scan as of this date (YYYY-MM-DD); default today."
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Run the deprecation scan once, now, and print what it did."""
    day = _parse_day(today)

    async def _go() -> Any:
        try:
            return await run_scan(await connect_or_fail(), day)
        except WorkflowFailureError as exc:
            cause = exc.cause.message if isinstance(exc.cause, FailureError) else str(exc.cause or exc)
            raise CLIError(
                f"the deprecation scan failed: {cause} (is `pairshift worker` running?)", code=EXIT_FAILED
            ) from None

    result = asyncio.run(_go())
    if json_out:
        return emit_json(result.model_dump(mode="json", exclude={"reminders": {"__all__": {"notice"}}}))
    console.print(f"deprecation scan as of {result.today}")
    for m in result.started:
        console.print(f"  started {m.id}: {m.from_model} -> {m.to_model} (reason: deprecation)")
    for name in result.already_running:
        console.print(f"  {name}: a migration is already running, left alone")
    for r in result.reminders:
        console.print(f"  reminder: {r.title}")
    for f in result.flags:
        console.print(f"  [red]RETIRED[/]: {f.deployment} is still on {f.model} (retired {f.retired_on})")
    for name, why in result.blocked.items():
        console.print(f"  {name}: not started: {why}")
    if not (result.started or result.reminders or result.flags or result.already_running or result.blocked):
        console.print("  nothing to do")


def schedules(task_queue: str) -> dict[str, Schedule]:
    """The Schedules: the daily deprecation scan, the alias-drift check every six hours, daily retention."""
    from pairshift.contracts.alias_drift import AliasDriftRequest
    from pairshift.contracts.deprecation_scan import ScanRequest
    from pairshift.contracts.retention import RetentionRequest

    policy = SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP)
    return {
        SCAN_SCHEDULE: Schedule(
            action=ScheduleActionStartWorkflow(
                "DeprecationScanWorkflow", ScanRequest(), id=SCAN_SCHEDULE, task_queue=task_queue
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=SCAN_EVERY)]),
            policy=policy,
        ),
        DRIFT_SCHEDULE: Schedule(
            action=ScheduleActionStartWorkflow(
                "AliasDriftWorkflow", AliasDriftRequest(), id=DRIFT_SCHEDULE, task_queue=task_queue
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=DRIFT_EVERY)]),
            policy=policy,
        ),
        RETENTION_SCHEDULE: Schedule(
            action=ScheduleActionStartWorkflow(
                "RetentionWorkflow", RetentionRequest(), id=RETENTION_SCHEDULE, task_queue=task_queue
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=RETENTION_EVERY)]),
            policy=policy,
        ),
    }


async def install_schedules(client: Client, *, task_queue: str | None = None) -> dict[str, str]:
    """Create each Schedule unless it exists: schedule id -> "installed" | "already installed"."""
    out = {}
    for schedule_id, schedule in schedules(task_queue or get_settings().task_queue).items():
        try:
            await client.create_schedule(schedule_id, schedule)
            out[schedule_id] = "installed"
        except ScheduleAlreadyRunningError:
            out[schedule_id] = "already installed"
    return out


@schedules_app.command("install")
def schedules_install(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Create the deprecation-scan (daily), alias-drift (every 6 hours) and retention (daily) Schedules."""

    async def _go() -> dict[str, str]:
        return await install_schedules(await connect_or_fail())

    result = asyncio.run(_go())
    if json_out:
        return emit_json([{"id": k, "status": v} for k, v in result.items()])
    for schedule_id, status in result.items():
        console.print(f"  {schedule_id}: {status}")
