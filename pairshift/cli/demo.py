"""`pairshift demo`: a whole migration on the embedded stack from a fresh state folder, leaving nothing on.

Scenarios (the `demo` policy of examples/pairshift.yaml scales every gate to seconds):
- happy: support-triage moves from prompt v1 on the retiring sim-classic snapshot to prompt v2 on sim-fresh.
  The 2x2 shows a model regression (sim-fresh wraps JSON in prose under v1) that the new prompt fixes: an
  interaction. Approval, a canary on simulated production traffic, promotion, the ledger.
- regression: the same migration, but in production the candidate fails 15% of calls: the first stage's gate
  breaches and traffic goes back to the baseline.
- deprecation: a deprecation scan, dated 45 days before sim-classic retires, starts the migration towards its
  replacement by itself (prompt unchanged), and the eval gate stops it: the replacement needs the new prompt.

The demo is a client like any other: it talks to Temporal (start, query, update) and reads the registry.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import threading
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

import typer

from pairshift.cli.common import EXIT_FAILED, CLIError, console
from pairshift.settings import get_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEPLOYMENT = "support-triage"
SAME = {"error_rate": 0.004, "latency_median_ms": 420, "input_tokens": 60, "output_tokens": 20}
BEHAVIOURS = {
    "happy": {"sim-classic-2024-06": SAME, "sim-fresh-2025-09": {**SAME, "latency_median_ms": 380}},
    "regression": {"sim-classic-2024-06": SAME, "sim-fresh-2025-09": {**SAME, "error_rate": 0.15}},
}
EXPECTED = {"happy": "promoted", "regression": "rolled_back", "deprecation": "failed_eval"}


class Scenario(StrEnum):
    """The story a demo tells: a promotion, a rollback on regression, a failed eval on retirement."""

    happy = "happy"
    regression = "regression"
    deprecation = "deprecation"


def demo(
    scenario: Scenario = typer.Option(Scenario.happy, help="happy | regression | deprecation"),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="Approve without asking (also when stdin is not a terminal)."
    ),
    examples: Path = typer.Option(EXAMPLES, help="Config folder to apply."),
) -> None:
    """Run a whole migration on the embedded stack (dev server + Web UI, worker, API), then stop it."""
    from pairshift.embedded import EmbeddedStack, free_port

    if not examples.exists():
        raise CLIError(f"{examples}: no such folder")
    home = (get_settings().home / "demo").resolve()
    if home.exists():
        shutil.rmtree(home)  # a demo always starts from nothing, so its story is the same every time
    _point_settings_at(home)
    ask = not yes and sys.stdin.isatty()
    with EmbeddedStack(home) as stack:
        os.environ["PAIRSHIFT_TEMPORAL_ADDRESS"] = stack.address
        os.environ["PAIRSHIFT_UI_URL"] = stack.ui_url
        api_port = free_port()
        os.environ["PAIRSHIFT_API_URL"] = f"http://127.0.0.1:{api_port}"
        get_settings.cache_clear()
        stack.env.update(PAIRSHIFT_API_URL=os.environ["PAIRSHIFT_API_URL"])
        stack.start("api", "api", "--port", str(api_port), wait_port=api_port)
        console.rule(f"pairshift demo: {scenario.value}")
        console.print(
            f"Temporal Web UI: {stack.ui_url}   API: http://127.0.0.1:{api_port}/docs   state: {home}"
        )
        outcome = asyncio.run(_run(scenario, examples, home, ask, stack.ui_url, api_port))
    console.print("stopped the embedded stack (server, worker, API)")
    if outcome != EXPECTED[scenario.value]:
        raise CLIError(
            f"the {scenario.value} scenario ended {outcome}, expected {EXPECTED[scenario.value]}",
            code=EXIT_FAILED,
        )


def _point_settings_at(home: Path) -> None:
    os.environ["PAIRSHIFT_HOME"] = str(home)
    os.environ.pop("PAIRSHIFT_DATABASE_URL", None)
    get_settings.cache_clear()


async def _run(scenario: Scenario, examples: Path, home: Path, ask: bool, ui_url: str, api_port: int) -> str:
    from pairshift.apply import apply_path
    from pairshift.cli.common import os_user
    from pairshift.registry import open_registry
    from pairshift.temporal_client import connect

    result = apply_path(open_registry(), examples, by=os_user())
    console.print(f"[bold]1. apply[/] {examples}: {len(result.changes)} objects created")
    _show_deployment()
    client = await connect()
    if scenario is Scenario.deprecation:
        handle = await _scan_starts_migration(client)
    else:
        from pairshift.cli.migration import start_migration
        from pairshift.contracts.migration import MigrationRequest

        req = MigrationRequest(
            deployment=DEPLOYMENT,
            to_model="sim-fresh-2025-09",
            to_prompt="support-triage@2",
            reason="manual",
            requested_by="demo-requester",
        )
        handle = await start_migration(req)
        console.print(f"[bold]2. migrate[/] started {handle.id}: v1 on sim-classic -> v2 on sim-fresh")
    ns = get_settings().namespace
    console.print(
        f"   follow it in the Web UI: {ui_url}/namespaces/{ns}/workflows/{handle.id}", soft_wrap=True
    )
    traffic = _Traffic(BEHAVIOURS.get(scenario.value, BEHAVIOURS["happy"]))
    try:
        st = await _follow(handle, ask, traffic)
    finally:
        traffic.stop()
    await _finale(handle, st, home, api_port)
    return st.phase


async def _scan_starts_migration(client):
    from pairshift.cli.provider_calendar import run_scan
    from pairshift.registry import open_registry
    from pairshift.registry.models import Model

    with open_registry().session() as s:
        retires = s.get(Model, "sim-classic-2024-06").retires_on
    today = retires - timedelta(days=45)
    console.print(f"[bold]2. deprecation scan[/] as of {today}: sim-classic-2024-06 retires on {retires}")
    result = await run_scan(client, today)
    for r in result.reminders:
        console.print(f"   reminder sent: {r.title}")
    if not result.started:
        raise CLIError(
            f"the scan started no migration: {result.blocked or result.already_running}", code=EXIT_FAILED
        )
    started = result.started[0]
    console.print(f"   the scan started {started.id} towards {started.to_model} (reason: deprecation)")
    return client.get_workflow_handle(started.id)


class _Traffic:
    """Simulated production traffic in a background thread: ~400 requests/s through the router."""

    def __init__(self, behaviours: dict) -> None:
        from pairshift.registry import open_registry
        from pairshift.router import Router
        from pairshift.sim.traffic import TrafficGenerator, profile_for

        self.router = Router(DEPLOYMENT, registry=open_registry(), refresh_s=3600).start()
        self.gen = TrafficGenerator(self.router, profile_for(behaviours, seed=11))
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="demo-traffic", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.halt.wait(0.25):  # one batch every 250 ms, stamped now
            self.gen.generate(100, spread_s=0.25)

    def stop(self) -> None:
        self.halt.set()
        self.thread.join(timeout=10)
        self.router.close()


async def _follow(handle, ask: bool, traffic: _Traffic):
    """Live progress from the status query until the migration ends; answers approval requests."""
    from rich.live import Live

    from pairshift.cli.migration import _render
    from pairshift.contracts.migration import TERMINAL_PHASES, DecideUpdate
    from workflows.migration import MigrationWorkflow

    answered: set[str] = set()
    st = await handle.query(MigrationWorkflow.status)
    with Live(_render(st), console=console, refresh_per_second=4, transient=False) as live:
        while st.phase not in TERMINAL_PHASES:
            if st.waiting and st.waiting.key not in answered:
                live.stop()
                if st.waiting.key == "start-0" and st.eval:
                    _show_eval(st.eval)
                answered.add(st.waiting.key)
                decision = _ask(f"{st.waiting.why} (stage {st.waiting.stage})", ask)
                await handle.execute_update(
                    MigrationWorkflow.decide,
                    DecideUpdate(
                        by="demo-approver", decision=decision, channel="cli", comment="from the demo"
                    ),
                )
                console.print(f"   {decision}d by demo-approver")
                live.start()
            await asyncio.sleep(0.25)  # polling a query: nothing on the client side to await
            st = await handle.query(MigrationWorkflow.status)
            live.update(_render(st))
    if st.phase == "failed_eval" and st.eval:
        _show_eval(st.eval)
    return st


def _ask(question: str, ask: bool) -> str:
    if not ask:
        console.print(f"[bold]approval[/]: {question} -> approve (--yes or no terminal)")
        return "approve"
    return "approve" if typer.confirm(f"{question}: approve?", default=True) else "reject"


def _show_eval(summary: dict) -> None:
    from pairshift.evals import load_report
    from pairshift.registry import open_registry
    from pairshift.reports import render_markdown

    console.print(
        "[bold]3. the 2x2 eval[/]: baseline (v1 + classic), prompt-only, model-only, joint (v2 + fresh)"
    )
    console.print(render_markdown(load_report(open_registry(), summary["report_id"])), soft_wrap=True)


def _show_deployment() -> None:
    from pairshift.cli.registry import Kind, get

    get(Kind.deployments, None, False)


async def _finale(handle, st, home: Path, api_port: int) -> None:
    from pairshift.cli.registry import ledger

    console.rule(f"{handle.id}: {st.phase}")
    console.print(st.outcome or "")
    if st.phase == "failed_eval":
        console.print(
            "Nothing moved. The replacement needs the new prompt; migrate the pair together:\n"
            f"  pairshift migrate start {DEPLOYMENT} --to-model sim-fresh-2025-09 --to-prompt "
            "support-triage@2"
        )
    ledger(DEPLOYMENT, False)
    report_id = (st.eval or {}).get("report_id")
    if report_id:
        from pairshift.evals import flipped_outputs, load_report
        from pairshift.registry import open_registry
        from pairshift.reports import render_html

        reg = open_registry()
        report = load_report(reg, report_id)
        path = home / "report.html"
        path.write_text(render_html(report, flipped_outputs(reg, report)))
        console.print(f"HTML report: {path}")
        _report_over_the_api(reg, api_port, report_id)


def _report_over_the_api(reg, api_port: int, report_id: str) -> None:
    """Read the report from `pairshift api` as a client in production would: with a `read` bearer token."""
    import httpx

    from pairshift.cli.common import os_user
    from pairshift.tokens import create_token

    with reg.session() as s:
        token = create_token(s, "demo-reader", "read", by=os_user()).token
    url = f"http://127.0.0.1:{api_port}/reports/{report_id}"
    unauthenticated = httpx.get(url, timeout=10).status_code
    served = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code
    console.print(
        f"the API serves it to a `read` token (HTTP {served}; without a token: HTTP {unauthenticated}): "
        f"`pairshift tokens create NAME --scopes read`, then curl -H 'Authorization: Bearer <token>' {url}",
        soft_wrap=True,
    )
