"""Eval cost benchmark (issue 18): what the example migration's eval costs naive, pairshift online, batch.

The example migration (``make demo``): ``support-triage@1 + sim-classic-2024-06`` to ``support-triage@2 +
sim-fresh-2025-09`` on the 300-case golden dataset, 2 epochs (the demo policy), with both models behind the
fake provider server on the Anthropic wire at their configured prices. Three ways to pay for its 2x2:

- **naive**: all 4 arms online, nothing reused (``no_cache``): what a team without pairshift pays;
- **pairshift online**: the baseline pair was evaluated before (here: by an earlier eval of the same
  deployment, not counted), so its arm is reused and the response cache answers anything asked before;
- **pairshift batch**: the same, with ``eval.mode: batch``: the fresh arms go through Message Batches at
  half the price.

Costs are the report's ``cost.total_usd`` (what the eval's fresh calls cost, cache hits and reused arms
free; the preflight's one call per pair is left out of every row alike). Target: batch <= 40% of naive.

Run: ``python bench/eval_cost_bench.py --out bench/results/eval_cost.md`` (``make bench`` runs every bench).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TARGET = 0.40
EPOCHS = 2


def _config(folder: Path, base_url: str) -> Path:
    """The example config with every model behind the fake server (Anthropic wire)."""
    import yaml
    from test_evals_support import EXAMPLES

    config = yaml.safe_load((EXAMPLES / "pairshift.yaml").read_text())
    for model in config["models"]:
        if model.get("provider") == "sim":
            model.update(provider="anthropic", base_url=base_url, limits={"concurrency": 16})
    (folder / "datasets").mkdir(parents=True, exist_ok=True)
    (folder / "datasets/support-triage.jsonl").write_text(
        (EXAMPLES / "datasets/support-triage.jsonl").read_text()
    )
    (folder / "pairshift.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "pairshift.yaml"


def _request(
    mode: str,
    *,
    no_cache: bool = False,
    to_model: str = "sim-fresh-2025-09",
    to_prompt: str | None = "support-triage@2",
):  # type: ignore[no-untyped-def]
    from pairshift.contracts.evals import EvalRequest, EvalTuning
    from pairshift.policy import EvalPolicy

    return EvalRequest(
        deployment="support-triage",
        to_model=to_model,
        to_prompt=to_prompt,
        no_cache=no_cache,
        requested_by="bench",
        eval_policy=EvalPolicy(epochs=EPOCHS, mode=mode),  # type: ignore[arg-type]
        tuning=EvalTuning(poll_first_s=0.2, poll_max_s=1.0),
    )


async def _eval(client, queue: str, request):  # type: ignore[no-untyped-def]
    from workflows.evals import EvalWorkflow

    return await client.execute_workflow(
        EvalWorkflow.run, request, id=f"bench-cost-{uuid.uuid4().hex[:8]}", task_queue=queue
    )


async def _scenario(tmp: Path, sim, client, queue: str, name: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from pairshift.apply import apply_path
    from pairshift.ratelimit import reset_limiters
    from pairshift.registry.store import open_registry
    from pairshift.settings import get_settings

    url = f"sqlite:///{tmp / f'registry-{name}.db'}"
    os.environ["PAIRSHIFT_DATABASE_URL"] = url
    get_settings.cache_clear()
    reset_limiters()
    registry = open_registry(url)
    apply_path(registry, _config(tmp / name, sim.base_url), by="bench")
    if name == "naive":
        report = await _eval(client, queue, _request("online", no_cache=True))
    else:
        # An earlier eval of the deployment (a model-only check of another candidate) ran the baseline arm.
        await _eval(client, queue, _request("online", to_model="sim-literal-2025-11", to_prompt=None))
        sim.state.stats.clear()
        report = await _eval(client, queue, _request("batch" if name == "pairshift batch" else "online"))
    assert report.cost is not None
    stats = sim.state.stats
    fresh = {a.run_id: a for a in report.arms.values() if not a.reused}  # "joint" may repeat a one-factor arm
    return {
        "cost": report.cost.total_usd,
        "online_equivalent": report.cost.online_equivalent_usd,
        "arms_paid": len(fresh),
        "calls": sum(a.calls for a in fresh.values()),
        "batch_requests": sum(c.get("batch_requests", 0) for c in stats.values()),
        "gate": report.gate.decision,
    }


async def _main() -> dict[str, dict[str, object]]:
    from conftest import temporal_bin
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from pairshift.sim.server import SimSettings, start_in_thread
    from worker.main import build_worker

    sim = start_in_thread(SimSettings(batch_delay_ms=500))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_bin(),
        ui=False,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    )
    queue = f"bench-cost-{uuid.uuid4().hex[:6]}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["PAIRSHIFT_HOME"] = tmp
            async with build_worker(env.client, task_queue=queue):
                return {
                    name: await _scenario(Path(tmp), sim, env.client, queue, name)
                    for name in ("naive", "pairshift online", "pairshift batch")
                }
    finally:
        await env.shutdown()
        sim.stop()


def _markdown(rows: dict[str, dict[str, object]]) -> str:
    naive = float(rows["naive"]["cost"])  # type: ignore[arg-type]
    batch = float(rows["pairshift batch"]["cost"])  # type: ignore[arg-type]
    lines = [
        "# Eval cost benchmark (issue 18)",
        "",
        f"The example migration's 2x2 eval (support-triage@1 + sim-classic-2024-06 -> support-triage@2 + "
        f"sim-fresh-2025-09, 300 cases x {EPOCHS} epochs), models behind the fake provider server "
        "(Anthropic wire, configured prices: classic $3/$15, fresh $2.5/$10 per Mtok in/out).",
        "",
        "| way | arms paid | calls paid | cost (USD) | of naive | online-equivalent (USD) | batch requests "
        "| gate |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in rows.items():
        cost = float(r["cost"])  # type: ignore[arg-type]
        lines.append(
            f"| {name} | {r['arms_paid']} | {r['calls']} | {cost:.4f} | {cost / naive:.1%} | "
            f"{float(r['online_equivalent']):.4f} | {r['batch_requests']} | {r['gate']} |"  # type: ignore[arg-type]
        )
    verdict = "met" if batch <= TARGET * naive else "NOT met"
    lines += [
        "",
        f"- pairshift batch / naive: **{batch / naive:.1%}** (target <= {TARGET:.0%}: {verdict}).",
        "- naive: 4 arms online, no reuse, no cache. pairshift online: the baseline arm reused from an "
        "earlier eval of the deployment (its cost not counted), 3 arms online. pairshift batch: the same "
        "3 arms through Message Batches at half the price.",
        "- Costs are the report's `cost.total_usd`; the preflight (one online call per pair, the same in "
        "every row) is not in them.",
        "",
        "Run: `python bench/eval_cost_bench.py --out bench/results/eval_cost.md` (or `make bench`).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/eval_cost.md")
    args = parser.parse_args()
    rows = asyncio.run(_main())
    text = _markdown(rows)
    args.out.write_text(text)
    print(text)
    naive, batch = float(rows["naive"]["cost"]), float(rows["pairshift batch"]["cost"])  # type: ignore[arg-type]
    return 0 if batch <= TARGET * naive else 1


if __name__ == "__main__":
    sys.exit(main())
