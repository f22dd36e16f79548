"""Issue 24, items 1, 3, 4 and 7's timestamps: the eval and the router record what really happened.

- One model resolution: a deployment on an alias a snapshot row lists is served by the router (the exact-id
  lookup raised LookupError on every call) and shares its snapshot's rate-limit bucket.
- Alias drift: after an alias moves, the next eval re-evaluates it on the new snapshot, with no cached answer
  and no reused baseline from the old one (the old code reused both).
- Baseline reuse and the cache keyed by what determines the answer; cache entries expire; no_cache refreshes.
- Judge failures are the judge's: the candidate's answer is kept, the case is a grader error, grading is
  retried without paying for the candidate again; a judge that refuses stops the eval naming the judge.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sim_fixtures import SimHandle, sim_server, sim_server_session  # noqa: F401 - fixtures
from sqlmodel import select
from test_evals_support import EXAMPLES, eval_registry, write_config  # noqa: F401 - fixture

from pairshift import evals
from pairshift.apply import apply_path
from pairshift.contracts.evals import BatchSpec, EvalRequest, RoutedEvalPlan
from pairshift.evals import batches
from pairshift.evals.planning import evidence_key
from pairshift.observations import ObservationWriter
from pairshift.providers import ModelSpec
from pairshift.registry.models import (
    CachedResponse,
    Deployment,
    EvalResult,
    EvalRun,
    Model,
    PromptVersion,
    utcnow,
)
from pairshift.registry.store import Registry
from pairshift.resolver import ResolvedModel, resolve_model
from pairshift.router import Router


def _request(**kw: Any) -> EvalRequest:
    return EvalRequest(deployment="support-triage", requested_by="test", **kw)


async def _run_all(registry: Registry, plan: RoutedEvalPlan, **spec: Any) -> dict[str, Any]:
    """Every fresh arm's cases in one batch each, then every arm summarised (as EvalWorkflow does)."""
    made = {}
    for arm in plan.arms:
        if not arm.reused:
            result = await evals.run_batch(
                registry,
                BatchSpec(run_id=arm.run_id, start=0, stop=plan.n_cases, judge=plan.judge, **spec),
            )
            made[arm.arm] = result
        evals.summarize_run(registry, arm.run_id)
    return made


def _results(registry: Registry, run_id: str) -> list[EvalResult]:
    with registry.session() as s:
        return list(s.exec(select(EvalResult).where(EvalResult.run_id == run_id)).all())


# ---------------------------------------------------------------- item 1: one resolution


async def test_the_router_serves_an_alias_a_snapshot_lists(eval_registry: Registry) -> None:  # noqa: F811
    """sim-latest is only in sim-fresh-2025-09's aliases: the eval resolves it, and now so does the router."""
    with eval_registry.session() as s:
        dep = s.get(Deployment, "support-triage")
        dep.active_model = "sim-latest"
        s.add(dep)
    seen: list[Any] = []
    writer = ObservationWriter(sink=seen.extend)
    with Router("support-triage", eval_registry, refresh_s=0, writer=writer) as router:
        served = await router.complete(
            "unit-1", {"customer_tier": "gold", "ticket_body": "I was charged twice"}
        )
        writer.flush()
    assert served.assignment.model == "sim-latest"
    assert served.completion.resolved_model == "sim-fresh-2025-09"
    (obs,) = seen
    assert (obs.outcome, obs.resolved_model) == ("ok", "sim-fresh-2025-09")
    assert obs.at is not None  # item 7: stamped at the call, not when the writer flushes


async def test_an_alias_and_its_snapshot_share_one_limiter(
    eval_registry: Registry,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys: list[tuple[str, str]] = []
    real = batches.limiter_for

    def spy(provider: str, model: str, limits: Any) -> Any:
        keys.append((provider, model))
        return real(provider, model, limits)

    monkeypatch.setattr(batches, "limiter_for", spy)
    for name, eval_id in (("sim-latest", "alias"), ("sim-fresh-2025-09", "snapshot")):
        plan = evals.plan_eval(eval_registry, _request(to_model=name, no_cache=True), eval_id)
        await evals.run_batch(
            eval_registry, BatchSpec(run_id=plan.arms[1].run_id, start=0, stop=1, no_cache=True)
        )
    assert set(keys) == {("sim", "sim-fresh-2025-09")}
    with eval_registry.session() as s:
        alias, snapshot = resolve_model(s, "sim-latest"), resolve_model(s, "sim-fresh-2025-09")
    assert alias.bucket == snapshot.bucket and alias.unpinned and not snapshot.unpinned


# ---------------------------------------------------------------- item 3: the alias-drift test


@pytest.fixture
def alias_registry(eval_registry: Registry, sim_server: SimHandle, tmp_path: Path) -> Registry:  # noqa: F811
    """A deployment on sim-latest (listed by sim-fresh-2025-09), on the fake server: 6 cases, 1 epoch."""
    example = yaml.safe_load((EXAMPLES / "pairshift.yaml").read_text())
    lines = (EXAMPLES / "datasets" / "support-triage.jsonl").read_text().splitlines(keepends=True)[:6]
    (tmp_path / "drift").mkdir()
    (tmp_path / "drift" / "cases.jsonl").write_text("".join(lines))
    served = {"provider": "anthropic", "base_url": sim_server.base_url}
    config = {
        "models": [
            {"id": "sim-fresh-2025-09", **served, "aliases": ["sim-latest"]},
            {"id": "sim-literal-2025-11", **served},
        ],
        "prompts": example["prompts"],
        "datasets": [{"name": "drift-golden", "path": "cases.jsonl"}],
        "policies": [{"name": "one-epoch", "eval": {"epochs": 1}, "notice": {"slack_channel": None}}],
        "deployments": [
            {
                "name": "drifting",
                "prompt": "support-triage@1",
                "model": "sim-latest",
                "dataset": "drift-golden",
                "policy": "one-epoch",
            }
        ],
    }
    (tmp_path / "drift" / "pairshift.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    apply_path(eval_registry, tmp_path / "drift" / "pairshift.yaml", by="test")
    return eval_registry


async def test_a_moved_alias_is_evaluated_again_on_the_new_snapshot(
    alias_registry: Registry, sim_server: SimHandle
) -> None:
    request = EvalRequest(
        deployment="drifting", requested_by="test", to_model="sim-latest", to_prompt="support-triage@2"
    )
    before = evals.plan_eval(alias_registry, request, "before-move")
    await _run_all(alias_registry, before)
    assert {r.resolved_model for a in before.arms for r in _results(alias_registry, a.run_id)} == {
        "sim-fresh-2025-09"
    }

    sim_server.repoint("sim-latest", "sim-literal-2025-11")
    after = evals.plan_eval(alias_registry, request, "after-move")
    baseline = after.arm("baseline")
    assert not baseline.reused and baseline.run_id != before.arm("baseline").run_id  # no reused baseline
    made = await _run_all(alias_registry, after)
    for arm in after.arms:
        rows = _results(alias_registry, arm.run_id)
        assert len(rows) == 6 and made[arm.arm].made == 6 and made[arm.arm].cached == 0  # no cached answer
        assert {r.resolved_model for r in rows} == {"sim-literal-2025-11"}
        assert not any(r.cached for r in rows)

    # Once the drift is recorded (the alias has its own row), still never served from the old snapshot.
    with alias_registry.session() as s:
        s.add(
            Model(
                id="sim-latest",
                provider="anthropic",
                base_url=sim_server.base_url,
                is_alias=True,
                resolved_snapshot="sim-literal-2025-11",
            )
        )
    recorded = evals.plan_eval(alias_registry, request, "after-record")
    assert not recorded.arm("baseline").reused
    made = await _run_all(alias_registry, recorded)
    assert all(m.cached == 0 and m.made == 6 for m in made.values())


# ---------------------------------------------------------------- item 3: keys, expiry, refresh


def _spec(**kw: Any) -> ModelSpec:
    return ModelSpec(id="sim-classic-2024-06", provider="anthropic", **kw)


def test_the_cache_key_holds_how_the_model_is_called() -> None:
    args = ("sim-classic-2024-06", [{"role": "user", "content": "hi"}], {"max_tokens": 5}, 1)
    a = batches.cache_key(_spec(base_url="http://127.0.0.1:1"), *args)
    b = batches.cache_key(_spec(base_url="http://127.0.0.1:2"), *args)
    c = batches.cache_key(_spec(base_url="http://127.0.0.1:1", drop_params=("temperature",)), *args)
    assert len({a, b, c}) == 3  # two endpoints serving one model id never share an answer


def _row(id: str, **kw: Any) -> Model:
    return Model(id=id, provider="anthropic", **kw)


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({}, True),
        ({"model": ResolvedModel("sim-x", _row("sim-x", base_url="http://127.0.0.1:9"))}, False),
        ({"model": ResolvedModel("sim-y", _row("sim-y"))}, False),
        ({"judge": ResolvedModel("judge-b", _row("judge-b"))}, False),
        ({"judge": None}, False),
        ({"epochs": 3}, False),
        ({"dataset_hash": "other"}, False),
    ],
)
def test_the_evidence_key_changes_with_what_determines_the_answer(change: dict[str, Any], same: bool) -> None:
    prompt = PromptVersion(id="p@1", name="p", version="1", template="t", content_hash="h")
    base = {
        "model": ResolvedModel("sim-x", _row("sim-x")),
        "judge": ResolvedModel("judge-a", _row("judge-a")),
        "dataset_hash": "d",
        "epochs": 2,
    }
    key = evidence_key(prompt, **base)
    other = evidence_key(prompt, **{**base, **change})
    assert key is not None and (other == key) is same


def test_an_alias_or_an_alias_judge_is_never_reused() -> None:
    prompt = PromptVersion(id="p@1", name="p", version="1", template="t", content_hash="h")
    snapshot = _row("snap", aliases=["snap-latest"])
    listed = ResolvedModel("snap-latest", snapshot)
    alias_row = ResolvedModel("gpt-4o", _row("gpt-4o", is_alias=True, resolved_snapshot="gpt-4o-2024-08-06"))
    assert evidence_key(prompt, listed, None, "d", 1) is None
    assert evidence_key(prompt, alias_row, None, "d", 1) is None
    assert evidence_key(prompt, ResolvedModel("snap", snapshot), alias_row, "d", 1) is None


async def test_a_pinned_baseline_is_reused_only_while_its_evidence_holds(eval_registry: Registry) -> None:  # noqa: F811
    first = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09"), "pin-1")
    await _run_all(eval_registry, first)
    again = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09"), "pin-2")
    assert again.arm("baseline").reused and again.arm("baseline").run_id == first.arm("baseline").run_id
    with eval_registry.session() as s:  # the baseline's model now answers at another endpoint
        row = s.get(Model, "sim-classic-2024-06")
        row.base_url = "http://127.0.0.1:9"
        s.add(row)
    moved = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09"), "pin-3")
    assert not moved.arm("baseline").reused


async def test_cache_entries_expire_with_the_reuse_limit(eval_registry: Registry) -> None:  # noqa: F811
    first = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09"), "old-1")
    made = await evals.run_batch(eval_registry, BatchSpec(run_id=first.arms[1].run_id, start=0, stop=3))
    assert made.made == 6
    with eval_registry.session() as s:
        for row in s.exec(select(CachedResponse)).all():
            row.created_at = utcnow() - timedelta(days=8)
            s.add(row)
    second = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09"), "old-2")
    again = await evals.run_batch(eval_registry, BatchSpec(run_id=second.arms[1].run_id, start=0, stop=3))
    assert (again.made, again.cached) == (6, 0)  # old code: 6 cache hits of an 8-day-old run


async def test_no_cache_replaces_the_stored_answer(eval_registry: Registry) -> None:  # noqa: F811
    first = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09"), "stale-1")
    await evals.run_batch(eval_registry, BatchSpec(run_id=first.arms[1].run_id, start=0, stop=1))
    with eval_registry.session() as s:
        rows = s.exec(select(CachedResponse)).all()
        assert rows
        for row in rows:
            row.completion = {**row.completion, "text": "STALE"}
            s.add(row)
    bypass = evals.plan_eval(eval_registry, _request(to_model="sim-fresh-2025-09", no_cache=True), "stale-2")
    await evals.run_batch(
        eval_registry, BatchSpec(run_id=bypass.arms[1].run_id, start=0, stop=1, no_cache=True)
    )
    with eval_registry.session() as s:
        assert all(r.completion["text"] != "STALE" for r in s.exec(select(CachedResponse)).all())


# ---------------------------------------------------------------- item 4: judge failures


@pytest.fixture
def graded_registry(
    eval_registry: Registry,  # noqa: F811
    sim_server: SimHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Registry:
    """Three cases with an llm-rubric assertion; the judge, sim-literal-2025-11, is on the fake server."""
    folder = tmp_path / "graded"
    served = {"provider": "anthropic", "base_url": sim_server.base_url}
    path = write_config(folder, n_cases=3, model_overrides={"sim-literal-2025-11": served})
    config = yaml.safe_load(path.read_text())
    lines = (folder / "datasets" / "support-triage.jsonl").read_text().splitlines()
    rubric = [{"type": "llm-rubric", "value": "names a team"}]
    cases = [{**json.loads(line), "assert": rubric} for line in lines]
    (folder / "graded.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    config["datasets"] = [{"name": "graded", "path": "graded.jsonl"}]
    for policy in config["policies"]:
        policy.setdefault("eval", {})["judge"] = "sim-literal-2025-11"
    for dep in config["deployments"]:
        dep["dataset"] = "graded"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    apply_path(eval_registry, path, by="test")
    monkeypatch.setattr(batches, "CALL_RETRY", evals.RetryPolicy(max_attempts=1, max_retry_after_s=0.0))
    monkeypatch.setattr(batches, "JUDGE_BACKOFF_S", 0.0)
    return eval_registry


async def test_a_failing_judge_keeps_the_answers_and_blames_no_arm(
    graded_registry: Registry, sim_server: SimHandle
) -> None:
    plan = evals.plan_eval(graded_registry, _request(to_model="sim-fresh-2025-09"), "judged")
    assert plan.judge == "sim-literal-2025-11"
    spec = BatchSpec(run_id=plan.arms[1].run_id, start=0, stop=3, judge=plan.judge)
    sim_server.faults("sim-literal-2025-11", error_500=1.0)
    with pytest.raises(evals.JudgeFailed, match="judge sim-literal-2025-11 failed on 6 case"):
        await evals.run_batch(graded_registry, spec)
    rows = _results(graded_registry, spec.run_id)
    assert len(rows) == 6 and all(r.error_kind == "grader_error" and r.output for r in rows)
    with graded_registry.session() as s:
        assert s.get(EvalRun, spec.run_id).status == "running"  # the arm under test is not failed

    sim_server.faults("sim-literal-2025-11", error_500=0.0)
    retried = await evals.run_batch(graded_registry, spec)
    assert retried.made == 0  # graded again from the stored answers: no new candidate call
    rows = _results(graded_registry, spec.run_id)
    assert all(r.error_kind is None and r.assertions for r in rows)


async def test_a_judge_that_refuses_stops_the_eval_naming_it(
    graded_registry: Registry, sim_server: SimHandle
) -> None:
    plan = evals.plan_eval(graded_registry, _request(to_model="sim-fresh-2025-09"), "refused")
    sim_server.retire("sim-literal-2025-11")
    with pytest.raises(evals.JudgeRefused, match="judge sim-literal-2025-11 refused"):
        await evals.run_batch(
            graded_registry, BatchSpec(run_id=plan.arms[1].run_id, start=0, stop=3, judge=plan.judge)
        )
    with graded_registry.session() as s:
        run = s.get(EvalRun, plan.arms[1].run_id)
        assert run.status == "running" and run.error is None  # the arm is not blamed
