"""`pairshift migrate ...`: start, watch and decide migrations. A client of Temporal only: every decision goes
through the workflow's `decide` update or its signals, so the CLI, Slack and the Temporal UI obey one set of
rules."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.live import Live
from rich.table import Table
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from pairshift.cli.common import EXIT_FAILED, CLIError, connect_or_fail, console, emit_json, os_user
from pairshift.contracts.migration import (
    TERMINAL_PHASES,
    AbortSignal,
    DecideUpdate,
    MigrationRequest,
    MigrationStatus,
    PauseSignal,
    PromoteNowSignal,
    RefusedAttempt,
    ResumeSignal,
    migration_id,
)
from pairshift.settings import get_settings

app = typer.Typer(help="Start, watch and decide migrations.", no_args_is_help=True)
AS_HELP = "Who is acting (default: the operating-system user)."


def _normalise_id(ident: str) -> str:
    return ident if ident.startswith("migration-") else migration_id(ident)


async def _handle(ident: str) -> WorkflowHandle:
    return (await connect_or_fail()).get_workflow_handle(_normalise_id(ident))


async def _status(handle: WorkflowHandle) -> MigrationStatus:
    try:
        return await handle.query("status", result_type=MigrationStatus)
    except RPCError as exc:
        raise CLIError(f"no migration {handle.id}: {exc.message}") from None


def status_json(st: MigrationStatus) -> dict:
    """The ``status`` query as ``migrate status --json`` prints it (PRODUCT §11)."""
    out = st.model_dump(mode="json")
    if out.get("stage"):
        keep = (
            "index",
            "percent",
            "started_at",
            "min_hours",
            "max_hours",
            "samples",
            "decision",
            "elapsed_hours",
            "time_left_hours",
            "paused",
            "gate",
        )
        out["stage"] = {k: out["stage"].get(k) for k in keep}
    return out


@app.command()
def start(
    deployment: str = typer.Argument(..., help="Deployment to migrate."),
    to_model: str = typer.Option(..., "--to-model", help="Target model snapshot (or alias)."),
    to_prompt: str | None = typer.Option(None, "--to-prompt", help="Target prompt name@version."),
    reason: str = typer.Option("manual", help="manual | deprecation | alias-drift"),
    as_user: str | None = typer.Option(None, "--as", help=AS_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Evaluate only; move no traffic."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Start a migration of DEPLOYMENT to a new model (and optionally prompt)."""
    from pydantic import ValidationError

    from pairshift.registry import open_registry
    from pairshift.resolver import InvalidMigration, plan_migration

    try:
        req = MigrationRequest(
            deployment=deployment,
            to_model=to_model,
            to_prompt=to_prompt,
            reason=reason,
            requested_by=as_user or os_user(),
            dry_run=dry_run,
        )
    except ValidationError as exc:
        raise CLIError(f"bad request: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
    try:
        with open_registry().session() as s:
            plan = plan_migration(
                s, deployment=deployment, to_model=to_model, to_prompt=to_prompt, policy=None
            )
    except InvalidMigration as exc:
        raise CLIError(str(exc)) from None
    handle = asyncio.run(start_migration(req))
    out = {
        "id": handle.id,
        "run_id": handle.result_run_id,
        "deployment": deployment,
        "from_pair": plan.from_pair,
        "to_pair": plan.to_pair,
    }
    if json_out:
        return emit_json(out)
    console.print(f"started {handle.id}: {plan.from_pair} -> {plan.to_pair}")
    console.print(
        f"Web UI: {get_settings().ui_url}/namespaces/{get_settings().namespace}/workflows/{handle.id}",
        soft_wrap=True,
    )


async def start_migration(req: MigrationRequest) -> WorkflowHandle:
    """Start MigrationWorkflow; a live migration of the same deployment is refused, naming it."""
    from workflows.migration import MigrationWorkflow

    client = await connect_or_fail()
    wid = migration_id(req.deployment)
    try:
        return await client.start_workflow(
            MigrationWorkflow.run,
            req,
            id=wid,
            task_queue=get_settings().task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError:
        raise CLIError(
            f"a migration of {req.deployment} is already running: {wid}; watch it with "
            f"`pairshift migrate status {wid}` or abort it first"
        ) from None


def _render(st: MigrationStatus) -> Table:
    t = Table(title=f"{st.id}: {st.from_pair} -> {st.to_pair}", title_justify="left", show_header=False)
    t.add_row("phase", f"[bold]{st.phase}[/]" + (f" ({st.outcome})" if st.outcome else ""))
    if st.eval and st.eval.get("gate"):
        t.add_row(
            "eval gate",
            f"{st.eval['gate']['decision']}: " + "; ".join(st.eval["gate"].get("reasons", [])[:2]),
        )
    if st.waiting:
        t.add_row("waiting for", f"a decision on stage {st.waiting.stage}: {st.waiting.why}")
    if st.stage:
        s = st.stage
        left = f"{s.time_left_hours:.3f} h left" if s.time_left_hours is not None else ""
        share = f"shadow {s.shadow:g}% (mirrored, 0% served)" if s.shadow else f"{s.percent:g}%"
        t.add_row(
            "stage",
            f"{s.index} at {share}  elapsed {s.elapsed_hours:.3f} h / min {s.min_hours:g} h  "
            f"{left}{'  PAUSED' if s.paused else ''}",
        )
        t.add_row(
            "samples",
            f"control {s.samples.get('control', 0):,}  candidate {s.samples.get('candidate', 0):,}"
            + (f"  gate: {s.decision}" if s.decision else ""),
        )
    for a in st.approvals[-3:]:
        t.add_row("decision", f"{a.decision} by {a.by} via {a.channel} (stage {a.stage})")
    for h in st.history[-3:]:
        t.add_row("event", f"{h.at:%H:%M:%S} {h.event} {h.detail}"[:160])
    return t


@app.command()
def status(
    ident: str = typer.Argument(
        ..., metavar="ID", help="Migration id (migration-<deployment>) or deployment."
    ),
    watch: bool = typer.Option(False, "--watch", help="Follow live until the migration ends."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show a migration's phase, stage, gate countdown, samples per arm and decisions."""

    async def go() -> MigrationStatus:
        handle = await _handle(ident)
        st = await _status(handle)
        if not watch:
            return st
        with Live(_render(st), console=console, refresh_per_second=4) as live:
            while st.phase not in TERMINAL_PHASES:
                await asyncio.sleep(0.5)  # polling a query: there is nothing to await on the client side
                st = await _status(handle)
                live.update(_render(st))
        return st

    st = asyncio.run(go())
    if json_out:
        return emit_json(status_json(st))
    if not watch:
        console.print(_render(st))


def _decide(
    ident: str, decision: str, as_user: str | None, comment: str | None, stage: int | None, json_out: bool
) -> None:
    by = as_user or os_user()

    async def go():
        handle = await _handle(ident)
        try:
            return await handle.execute_update(
                "decide", DecideUpdate(by=by, decision=decision, comment=comment, stage=stage, channel="cli")
            )
        except WorkflowUpdateFailedError as exc:
            reason = str(exc.cause or exc)
            await handle.signal(
                "note_refusal",
                RefusedAttempt(by=by, decision=decision, reason=reason, channel="cli", stage=stage),
            )
            raise CLIError(f"{decision} refused: {reason}") from None
        except RPCError as exc:
            raise CLIError(f"no live migration {handle.id}: {exc.message}") from None

    result = asyncio.run(go())
    data = result if isinstance(result, dict) else result
    if json_out:
        return emit_json(data)
    console.print(
        f"{decision}d by {by}: phase {data['phase']} ({data['approvals']}/{data['required']} approvals)"
    )


@app.command()
def approve(
    ident: str = typer.Argument(..., metavar="ID"),
    as_user: str | None = typer.Option(None, "--as", help=AS_HELP),
    comment: str | None = typer.Option(None, "--comment"),
    stage: int | None = typer.Option(
        None, "--stage", help="The stage you approve (default: the waiting one)."
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Approve the stage that waits for a decision (refused, with the reason, when the policy forbids it)."""
    _decide(ident, "approve", as_user, comment, stage, json_out)


@app.command()
def reject(
    ident: str = typer.Argument(..., metavar="ID"),
    as_user: str | None = typer.Option(None, "--as", help=AS_HELP),
    comment: str | None = typer.Option(None, "--comment"),
    stage: int | None = typer.Option(None, "--stage"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Reject the stage that waits for a decision: traffic returns to the baseline pair."""
    _decide(ident, "reject", as_user, comment, stage, json_out)


def _signal(ident: str, name: str, payload) -> None:
    async def go():
        handle = await _handle(ident)
        try:
            await handle.signal(name, payload)
        except RPCError as exc:
            raise CLIError(f"no live migration {handle.id}: {exc.message}") from None
        return handle.id

    wid = asyncio.run(go())
    console.print(f"sent {name} to {wid}")


@app.command()
def pause(
    ident: str = typer.Argument(..., metavar="ID"),
    as_user: str | None = typer.Option(None, "--as", help=AS_HELP),
) -> None:
    """Pause the canary: the stage clock stops and the split holds."""
    _signal(ident, "pause", PauseSignal(by=as_user or os_user(), channel="cli"))


@app.command()
def resume(
    ident: str = typer.Argument(..., metavar="ID"),
    as_user: str | None = typer.Option(None, "--as", help=AS_HELP),
) -> None:
    """Resume a paused canary."""
    _signal(ident, "resume", ResumeSignal(by=as_user or os_user(), channel="cli"))


@app.command()
def abort(
    ident: str = typer.Argument(..., metavar="ID"),
    as_user: str | None = typer.Option(None, "--as", help=AS_HELP),
    comment: str = typer.Option("aborted from the CLI", "--comment", help="Why."),
) -> None:
    """Abort: traffic returns to the baseline pair and the migration ends."""
    _signal(ident, "abort", AbortSignal(by=as_user or os_user(), channel="cli", reason=comment))


@app.command("promote-now")
def promote_now(
    ident: str = typer.Argument(..., metavar="ID"),
    as_user: str | None = typer.Option(None, "--as", help=AS_HELP),
) -> None:
    """Skip the remaining canary stages and promote (an approver's decision)."""
    _signal(ident, "promote_now", PromoteNowSignal(by=as_user or os_user(), channel="cli"))


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List migrations, live and finished."""
    from pairshift.cli.registry import Kind, get

    get(Kind.migrations, None, json_out)


@app.command()
def report(
    ident: str = typer.Argument(..., metavar="ID"),
    html: Path | None = typer.Option(None, "--html", help="Also write the self-contained HTML report here."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Show a migration's report: the eval (the 2x2, effects with CIs, flipped cases, gate) and the canary's
    quality (figures per stage and variant, invalid rate by check per stage, the canary judge's scores and
    spend per stage, top failing online checks with redacted examples) and the shadow stages (win rate, both
    arms on the mirrored requests, side-by-side examples)."""

    async def go():
        handle = await _handle(ident)
        try:
            return handle.id, await handle.query("report", result_type=dict)
        except RPCError as exc:
            raise CLIError(f"no migration {handle.id}: {exc.message}") from None

    handle_id, data = asyncio.run(go())
    if data is None:
        raise CLIError("this migration has no eval report yet", code=EXIT_FAILED)
    from pairshift import stage_quality
    from pairshift.contracts.evals import EvalReport
    from pairshift.evals import EvalInputError, flipped_outputs, load_report
    from pairshift.output_samples import canary_quality
    from pairshift.output_samples import render_markdown as quality_markdown
    from pairshift.registry import open_registry
    from pairshift.reports import render_html, render_markdown
    from pairshift.shadow_report import render_markdown as shadow_markdown
    from pairshift.shadow_report import shadow_figures

    report = EvalReport.model_validate(data)
    registry = open_registry()
    try:  # the workflow carries a capped summary; the registry holds the full report
        report = load_report(registry, report.report_id) if report.report_id else report
    except EvalInputError:
        pass
    quality = canary_quality(registry, report.deployment, handle_id)
    stage_checks, judge = stage_quality.report_figures(registry, report.deployment, handle_id)
    shadow = shadow_figures(registry, handle_id)  # the shadow stages' section (issue 17 item 3)
    if json_out:
        emit_json(
            {
                **report.model_dump(mode="json"),
                "canary_quality": {v: [c.model_dump() for c in cs] for v, cs in quality.checks.items()},
                "canary_stages": [f.model_dump() for f in quality.stages],
                "canary_stage_checks": [r.model_dump() for r in stage_checks],
                "canary_judge": [j.model_dump() for j in judge],
                "shadow_stages": [f.model_dump() for f in shadow],
            }
        )
    else:
        console.print(render_markdown(report))
        console.print(quality_markdown(quality.checks, quality.stages), markup=False)
        if stage_checks or judge:
            console.print(stage_quality.render_markdown(stage_checks, judge), markup=False)
        if shadow:
            console.print(shadow_markdown(shadow), markup=False)
    if html:
        html.write_text(render_html(report, flipped_outputs(registry, report)))
        console.print(f"HTML report: {html}")


__all__ = ["app", "start_migration", "status_json"]
