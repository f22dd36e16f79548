"""The eval engine without Temporal: planning, idempotent batches, the cache, error results, the judge."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sim_fixtures import sim_server, sim_server_session  # noqa: F401 - fixtures
from sqlalchemy import func
from sqlmodel import select
from test_evals_support import eval_registry, write_config  # noqa: F401 - fixture

from pairshift import evals
from pairshift.registry.models import EvalResult, Model
from pairshift.registry.store import Registry


def _request(**kw) -> evals.EvalRequest:
    return evals.EvalRequest(deployment="support-triage", requested_by="test", **kw)


def _count(registry: Registry, run_id: str) -> int:
    with registry.session() as s:
        return s.exec(select(func.count()).select_from(EvalResult).where(EvalResult.run_id == run_id)).one()


def test_arms_are_only_those_that_differ(eval_registry: Registry) -> None:  # noqa: F811
    both = evals.plan_eval(
        eval_registry, _request(to_model="sim-fresh-2025-09", to_prompt="support-triage@2"), "a"
    )
    assert [a.arm for a in both.arms] == ["baseline", "prompt_only", "model_only", "joint"]
    assert both.arm("prompt_only").pair == "support-triage@2+sim-classic-2024-06"
    assert both.arm("model_only").pair == "support-triage@1+sim-fresh-2025-09"
    prompt_only = evals.plan_eval(
        eval_registry, _request(to_model="sim-classic-2024-06", to_prompt="support-triage@2"), "b"
    )
    assert [a.arm for a in prompt_only.arms] == ["baseline", "prompt_only"]
    assert both.epochs == 2  # the deployment's policy (demo)
    assert evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09", epochs=3), "c").epochs == 3
    with pytest.raises(evals.EvalInputError, match="already the baseline pair"):
        evals.plan_eval(eval_registry, _request(to_model="sim-classic-2024-06"), "d")


def test_planning_twice_is_idempotent(eval_registry: Registry) -> None:  # noqa: F811
    first = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09"), "same")
    again = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09"), "same")
    assert [a.run_id for a in first.arms] == [a.run_id for a in again.arms]


async def test_a_batch_run_twice_or_concurrently_stores_each_case_epoch_once(eval_registry: Registry) -> None:  # noqa: F811
    plan = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09", no_cache=True), "dup")
    spec = evals.BatchSpec(run_id=plan.arms[0].run_id, start=0, stop=10, no_cache=True)
    results = await asyncio.gather(evals.run_batch(eval_registry, spec), evals.run_batch(eval_registry, spec))
    assert all(r.calls == 20 for r in results)
    assert _count(eval_registry, spec.run_id) == 20
    again = await evals.run_batch(eval_registry, spec)
    assert (again.calls, again.made) == (20, 0)  # nothing stored is called again
    assert _count(eval_registry, spec.run_id) == 20


async def test_cache_serves_a_second_run_of_the_same_pair(eval_registry: Registry) -> None:  # noqa: F811
    first = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09"), "c1")
    second = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09"), "c2")
    made = await evals.run_batch(eval_registry, evals.BatchSpec(run_id=first.arms[1].run_id, start=0, stop=5))
    hit = await evals.run_batch(eval_registry, evals.BatchSpec(run_id=second.arms[1].run_id, start=0, stop=5))
    assert (made.made, made.cached) == (10, 0)
    assert (hit.made, hit.cached) == (0, 10)
    bypass = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09", no_cache=True), "c3")
    fresh = await evals.run_batch(
        eval_registry, evals.BatchSpec(run_id=bypass.arms[1].run_id, start=0, stop=5, no_cache=True)
    )
    assert (fresh.made, fresh.cached) == (10, 0)


async def test_retired_model_fails_the_arm_naming_it(eval_registry: Registry) -> None:  # noqa: F811
    with eval_registry.session() as s:
        s.add(Model(id="sim-gone-2023-01", provider="sim"))
    plan = evals.plan_eval(eval_registry, _request(to_model="sim-gone-2023-01"), "gone")
    with pytest.raises(evals.ArmFailed, match="sim-gone-2023-01"):
        await evals.run_batch(eval_registry, evals.BatchSpec(run_id=plan.arms[1].run_id, start=0, stop=5))


def test_model_families_for_the_judge_warning() -> None:
    assert evals.model_family("claude-sonnet-4-20250514", "anthropic") == evals.model_family(
        "claude-3-5", "openai-compatible"
    )
    assert evals.model_family("gpt-4o-2024-08-06", "openai") == "openai"


def test_bad_case_or_prompt_is_refused_at_planning(eval_registry: Registry, tmp_path: Path) -> None:  # noqa: F811
    from pairshift.registry.models import PromptVersion

    with eval_registry.session() as s:
        s.add(
            PromptVersion(
                id="support-triage@3",
                name="support-triage",
                version="3",
                template="{{ missing }}",
                variables=["missing"],
                content_hash="x",
            )
        )
    with pytest.raises(evals.EvalInputError, match="support-triage@3 cannot render case 'ticket-0000'"):
        evals.plan_eval(
            eval_registry, _request(to_model="sim-fresh-2025-09", to_prompt="support-triage@3"), "bad"
        )


def test_the_paged_check_raises_what_checking_each_prompt_in_turn_raised() -> None:
    """One pass over pages of cases, but the error is the first prompt's first bad case, even when the second
    prompt fails on an earlier page; the second prompt's error only when the first renders every case."""
    from pairshift.datasets import Case
    from pairshift.evals.planning import _check_cases
    from pairshift.registry.models import PromptVersion

    def prompt(pid: str, template: str) -> PromptVersion:
        return PromptVersion(id=pid, name="p", version="1", template=template, content_hash="x")

    pages = [[Case(id=f"c{p}{i}", vars={"a": "x"} if p < 2 else {}) for i in range(3)] for p in range(3)]
    late = prompt("p@late", "{{ a }}")  # fails on the last page (no var a)
    early = prompt("p@early", "{{ missing }}")  # fails on the first page
    with pytest.raises(evals.EvalInputError, match="p@late cannot render case 'c20'"):
        _check_cases([late, early], pages)
    with pytest.raises(evals.EvalInputError, match="p@early cannot render case 'c00'"):
        _check_cases([prompt("p@ok", "hello"), early], pages)
    assert _check_cases([prompt("p@ok", "hello")], pages) is None
