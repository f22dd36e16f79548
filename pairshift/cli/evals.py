"""`pairshift eval DEPLOYMENT --to-model M [--to-prompt P@V] [--epochs K] [--json] [--html F] [--no-cache]`.

Runs the 2x2 eval as an EvalWorkflow on the worker (so a long eval survives a crash of this process or of
the worker), shows a progress bar per arm from the workflow's ``progress`` query, prints the 2x2 table
with effects and CIs, and writes the HTML report. Exit codes: 0 gate pass, 1 gate fail or inconclusive
(or the eval failed), 2 bad input (unknown deployment, model, prompt or dataset: one line).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pairshift.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    CLIError,
    connect_or_fail,
    console,
    emit_json,
    err_console,
    os_user,
    table,
)
from pairshift.contracts.evals import EvalReport
from pairshift.settings import get_settings

POLL_S = 0.5


def eval_cmd(
    deployment: str = typer.Argument(..., help="Deployment whose active pair is the baseline."),
    to_model: str = typer.Option(..., "--to-model", help="Target model (snapshot id or alias)."),
    to_prompt: str | None = typer.Option(None, "--to-prompt", help="Target prompt version name@version."),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, max=20, help="Repeats per case (default: policy)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON (PRODUCT §11)."),
    html: Path | None = typer.Option(None, "--html", help="Write a self-contained HTML report to FILE."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Bypass the response cache and baseline reuse."),
) -> None:
    """Run the 2x2 regression eval (no canary): exit 0 when the eval gate passes, 1 otherwise."""
    from pairshift import evals
    from pairshift.registry import open_registry

    request = evals.EvalRequest(
        deployment=deployment,
        to_model=to_model,
        to_prompt=to_prompt,
        epochs=epochs,
        no_cache=no_cache,
        requested_by=os_user(),
    )
    registry = open_registry()
    try:
        evals.validate_request(registry, request)
    except evals.EvalInputError as exc:
        raise CLIError(str(exc), EXIT_BAD_INPUT) from None
    report = asyncio.run(_run(request, show_progress=not json_out))
    if json_out:
        emit_json(report.model_dump(mode="json"))
    else:
        print_report(report)
    if html is not None:
        _write_html(registry, report.report_id, html)
        err_console.print(f"HTML report written to {html}")
    if report.gate.decision != "pass":
        # A CLIError, not typer.Exit: pairshift.cli.run drops Exit codes under standalone_mode=False.
        raise CLIError(f"eval gate {report.gate.decision} (report {report.report_id})", EXIT_FAILED)


def print_report(report: EvalReport) -> None:
    """The 2x2 table, the arms, the effects with CIs, the gate and its reasons, as rich tables."""
    from pairshift.reports import grid

    console.print(
        f"[bold]{report.deployment}[/]: {report.baseline_pair} -> {report.target_pair}  "
        f"({report.dataset.cases} cases x {report.epochs} epochs)"
    )
    table("pass rate [95% CI]", ["", "old model", "new model"], grid(report))
    rows = [
        [
            name + (" (reused)" if a.reused else ""),
            a.pair,
            f"{a.pass_rate:.1%}",
            f"[{a.ci[0]:.1%}, {a.ci[1]:.1%}]",
            a.calls,
            a.errors,
            a.cached_calls,
            f"{a.latency_p95_ms:.0f}",
            f"{a.cost_usd:.4f}",
        ]
        for name, a in report.arms.items()
    ]
    table("arms", ["arm", "pair", "pass", "95% CI", "calls", "errors", "cached", "p95 ms", "cost $"], rows)
    table(
        "effects on pass rate (points)",
        ["effect", "estimate", "95% CI", "p"],
        [
            [
                n,
                f"{e.estimate * 100:+.1f}",
                f"[{e.ci[0] * 100:+.1f}, {e.ci[1] * 100:+.1f}]",
                f"{e.p_value:.3g}",
            ]
            for n, e in report.effects.items()
        ],
    )
    if report.flipped_count:
        shown = ", ".join(f"{f.case} ({f.direction} in {f.to_arm})" for f in report.flipped[:10])
        console.print(
            f"flipped cases: {report.flipped_count}: {shown}{' ...' if report.flipped_count > 10 else ''}"
        )
    colour = {"pass": "green", "fail": "red"}.get(report.gate.decision, "yellow")
    console.print(f"Gate: [bold {colour}]{report.gate.decision.upper()}[/]")
    for reason in report.gate.reasons:
        console.print(f"  - {reason}", soft_wrap=True)
    console.print(report.power_note, style="dim", soft_wrap=True)
    for warning in report.warnings:
        console.print(f"warning: {warning}", style="yellow", soft_wrap=True)


def _write_html(registry, report_id: str, path: Path) -> None:  # type: ignore[no-untyped-def]
    from pairshift.evals import flipped_outputs, load_report
    from pairshift.reports import render_html

    full = load_report(registry, report_id)
    path.write_text(render_html(full, flipped_outputs(registry, full)), encoding="utf-8")


async def _run(request, *, show_progress: bool):  # type: ignore[no-untyped-def]
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError

    from workflows.evals import EvalWorkflow

    settings = get_settings()
    client = await connect_or_fail()
    handle = await client.start_workflow(
        EvalWorkflow.run,
        request,
        task_queue=settings.task_queue,
        id=f"eval-{request.deployment}-{uuid.uuid4().hex[:8]}",
    )
    err_console.print(f"eval workflow {handle.id} started on task queue {settings.task_queue}")
    try:
        return await _follow(handle, EvalWorkflow, show_progress)
    except WorkflowFailureError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            code = EXIT_BAD_INPUT if cause.type == "EvalInputError" else EXIT_FAILED
            raise CLIError(cause.message, code) from None
        raise CLIError(f"eval workflow {handle.id} failed: {cause or exc}", EXIT_FAILED) from None


async def _follow(handle, workflow_cls, show_progress: bool):  # type: ignore[no-untyped-def]
    """Await the result while drawing one progress bar per arm from the `progress` query."""
    result = asyncio.ensure_future(handle.result())
    if not show_progress:
        return await result
    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bars:
        tasks: dict[str, int] = {}
        while not result.done():
            try:
                progress = await handle.query(workflow_cls.progress)
            except Exception:  # noqa: BLE001 - a query can fail while no worker is up; keep waiting for the result
                progress = None
            for arm, p in progress.arms.items() if progress else []:
                if arm not in tasks:
                    tasks[arm] = bars.add_task(arm, total=p.total)
                bars.update(tasks[arm], completed=p.done, total=p.total)
            await asyncio.wait({result}, timeout=POLL_S)
    return await result
