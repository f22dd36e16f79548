"""`pairshift demo`: the embedded stack on the example config, end to end, leaving nothing running."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import typer

from pairshift.cli.common import CLIError, console, os_user
from pairshift.settings import get_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def demo(
    examples: Path = typer.Option(EXAMPLES, help="Config folder to apply."),
    keep_state: bool = typer.Option(False, help="Keep the demo's state folder from the previous run."),
) -> None:
    """Run the whole demo on the embedded stack (Temporal dev server + Web UI, worker) and stop everything after."""
    import os

    from pairshift.apply import apply_path
    from pairshift.embedded import EmbeddedStack
    from pairshift.registry.store import open_registry

    home = (get_settings().home / "demo").resolve()
    if home.exists() and not keep_state:
        shutil.rmtree(home)
    os.environ["PAIRSHIFT_HOME"] = str(home)
    os.environ.pop("PAIRSHIFT_DATABASE_URL", None)
    get_settings.cache_clear()
    if not examples.exists():
        raise CLIError(f"{examples}: no such folder")
    with EmbeddedStack(home) as stack:
        os.environ["PAIRSHIFT_TEMPORAL_ADDRESS"] = stack.address
        get_settings.cache_clear()
        console.print(f"[bold]Temporal[/] dev server on {stack.address}; Web UI {stack.ui_url}")
        result = apply_path(open_registry(), examples, by=os_user())
        console.print(f"applied {examples}: {len(result.changes)} changed")
        from pairshift.cli import registry_cmds

        for kind in (registry_cmds.Kind.models, registry_cmds.Kind.prompts, registry_cmds.Kind.datasets,
                     registry_cmds.Kind.deployments):
            registry_cmds.get(kind, None, False)
        report = asyncio.run(_health(stack.address))
        console.print(f"worker answered: {report.registry.deployments} deployment(s) in the registry")
    console.print("stopped the embedded stack")


async def _health(address: str):
    from pairshift.temporal_client import connect
    from workflows.health import HealthRequest, HealthWorkflow

    client = await connect(address)
    return await client.execute_workflow(HealthWorkflow.run, HealthRequest(note="demo"), id="demo-health",
                                         task_queue=get_settings().task_queue)
