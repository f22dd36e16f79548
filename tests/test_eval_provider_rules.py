"""EvalWorkflow against the strict sim (the official OpenAI SDK, the fake server): a migration from a
temperature-0 prompt to a reasoning snapshot, with and without its request rules; a context window that three
cases of two hundred exceed."""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sim_fixtures import SimHandle, sim_server, sim_server_session  # noqa: F401
from sqlmodel import col, func, select
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker
from test_evals_support import eval_registry, write_config  # noqa: F401 - fixture

from activities.evals import EVAL_ACTIVITIES
from pairshift.apply import apply_path
from pairshift.contracts.evals import EvalReport, EvalRequest
from pairshift.registry.models import EvalResult, EvalRun
from pairshift.registry.store import Registry
from workflows.evals import EVAL_WORKFLOWS, EvalWorkflow

REASON = "sim-reason-2026-03"


@pytest.fixture
async def worker(dev_env, eval_registry) -> AsyncIterator[tuple[Client, str]]:  # noqa: F811
    queue = f"eval-rules-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=EVAL_WORKFLOWS,
            activities=EVAL_ACTIVITIES,
            activity_executor=pool,
        ):
            yield dev_env.client, queue


async def run_eval(client: Client, queue: str, **request: Any) -> EvalReport:
    req = EvalRequest(deployment="support-triage", requested_by="test", **request)
    return await client.execute_workflow(
        EvalWorkflow.run, req, id=f"eval-rules-{uuid.uuid4().hex[:8]}", task_queue=queue
    )


def reasoning_model(sim: SimHandle, **rules: Any) -> dict[str, Any]:
    """The reasoning snapshot served by the fake server over OpenAI's wire (the official SDK)."""
    return {"id": REASON, "provider": "openai", "base_url": sim.openai_base_url, **rules}


def client_errors(sim: SimHandle, model: str) -> int:
    stats = sim.stats(model)
    return stats.get("refused", 0) + stats.get("not_found", 0) + stats.get("auth_errors", 0)


async def test_known_rules_migrate_a_temperature_0_prompt_with_no_provider_4xx(
    worker,
    eval_registry: Registry,  # noqa: F811
    sim_server: SimHandle,  # noqa: F811
    tmp_path: Path,
) -> None:
    apply_path(
        eval_registry, write_config(tmp_path / "c", extra_models=[reasoning_model(sim_server)]), by="t"
    )
    client, queue = worker
    report = await run_eval(client, queue, to_model=REASON)  # prompt v1: temperature 0, max_tokens 400
    stats = sim_server.stats(REASON)
    assert client_errors(sim_server, REASON) == 0 and stats["requests"] == stats["ok"]
    assert stats["ok"] == 1 + 30 * 2  # the preflight's one call, then 30 cases x 2 epochs
    arm = report.arms["model_only"]
    assert arm.errors == 0 and arm.calls == 60
    assert arm.dropped_params == ["temperature"] and report.arms["baseline"].dropped_params == []
    with eval_registry.session() as s:
        assert s.get(EvalRun, arm.run_id).status == "done"


async def test_without_rules_the_preflight_fails_naming_temperature_and_drop_params(
    worker,
    eval_registry: Registry,  # noqa: F811
    sim_server: SimHandle,  # noqa: F811
    tmp_path: Path,
) -> None:
    # `drop_params: []` = send everything: what a model unknown to the calendar would do.
    unknown = reasoning_model(sim_server, drop_params=[], max_tokens_param="max_completion_tokens")
    apply_path(eval_registry, write_config(tmp_path / "c", extra_models=[unknown]), by="t")
    client, queue = worker
    with pytest.raises(WorkflowFailureError) as failure:
        await run_eval(client, queue, to_model=REASON, to_prompt="support-triage@2")
    cause = failure.value.cause
    assert cause.type == "PreflightRefused"
    message = cause.message
    assert "\n" not in message and REASON in message
    assert "`temperature`" in message and "drop_params: [temperature]" in message
    assert "unsupported_value" in message
    # One call per (prompt, model) of the reasoning model's arms at most; nothing else reached it.
    assert sim_server.stats(REASON)["requests"] == 1 and sim_server.stats(REASON)["refused"] == 1
    with eval_registry.session() as s:
        assert s.exec(select(func.count()).select_from(EvalResult)).one() == 0  # no batch was spent
        runs = s.exec(select(EvalRun).where(col(EvalRun.model) == REASON)).all()
        assert runs and all(r.status == "failed" and "drop_params" in (r.error or "") for r in runs)


def _with_long_tickets(config: Path, cases: tuple[int, ...], chars: int) -> None:
    dataset = config.parent / "datasets" / "support-triage.jsonl"
    lines = dataset.read_text().splitlines()
    for i in cases:
        case = json.loads(lines[i])
        case["vars"]["ticket_body"] = "I was charged twice. " * (chars // 21)
        lines[i] = json.dumps(case)
    dataset.write_text("\n".join(lines) + "\n")


async def test_context_length_on_3_of_200_cases_leaves_the_arm_complete_with_3_counted(
    worker,
    eval_registry: Registry,  # noqa: F811
    sim_server: SimHandle,  # noqa: F811
    tmp_path: Path,
) -> None:
    served = {"provider": "openai", "base_url": sim_server.openai_base_url}
    config = write_config(tmp_path / "c", n_cases=200, model_overrides={"sim-fresh-2025-09": served})
    _with_long_tickets(config, (10, 50, 150), chars=12_000)  # ~3,000 tokens each
    apply_path(eval_registry, config, by="t")
    sim_server.settings(context_windows={"sim-fresh-2025-09": 2000})
    client, queue = worker
    report = await run_eval(client, queue, to_model="sim-fresh-2025-09", epochs=1)
    arm, baseline = report.arms["model_only"], report.arms["baseline"]
    assert arm.calls == 200 and arm.errors == 3 and arm.error_kinds == {"context_length": 3}
    assert baseline.errors == 0  # the old model's window takes them: they are the candidate's failures
    assert not any("failed at the provider" in r for r in report.gate.reasons)
    with eval_registry.session() as s:
        assert s.get(EvalRun, arm.run_id).status == "done"
        failed = s.exec(
            select(EvalResult.case_id).where(
                EvalResult.run_id == arm.run_id, EvalResult.error_kind == "context_length"
            )
        ).all()
    assert len(failed) == 3


def test_eval_planning_refuses_a_pair_whose_params_the_provider_refuses(
    eval_registry: Registry,  # noqa: F811
    tmp_path: Path,
) -> None:
    from pairshift.evals import EvalInputError, validate_request

    config = write_config(tmp_path / "c", extra_models=[{"id": "claude-x", "provider": "anthropic"}])
    doc = yaml.safe_load(config.read_text())
    hot = {**doc["prompts"][0], "version": "9", "params": {"temperature": 1.5, "max_tokens": 400}}
    doc["prompts"].append(hot)
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    apply_path(eval_registry, config, by="t")  # a prompt version alone is not checked against any provider
    request = EvalRequest(deployment="support-triage", to_model="claude-x", to_prompt="support-triage@9")
    with pytest.raises(EvalInputError) as info:
        validate_request(eval_registry, request)
    assert "params.temperature Anthropic accepts 0..1, not 1.5" in str(info.value)
