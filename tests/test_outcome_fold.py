"""Folded outcomes (issue 20): the per-case arrays give exactly the figures the per-call computation gave.

``tests/data/folded_figures.json`` holds every figure of a seeded eval (4 arms x 240 cases x 3 epochs, errors,
tags, assertion types, a missing epoch, calls in case-major and epoch-major order) as the per-call
implementation computed them at commit ccf47dc (``pairshift.stats`` / ``pairshift.paired`` over lists of
``CaseOutcome``, before :class:`pairshift.stats.ArmOutcomes`). Floats are compared exactly: the JSON keeps
every bit (``repr``), so a changed order of summation shows. Regenerate only on purpose:
``.venv/bin/python tests/test_outcome_fold.py > tests/data/folded_figures.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pytest  # noqa: E402
from sqlmodel import select  # noqa: E402
from test_evals_support import eval_registry, write_config  # noqa: E402, F401 - fixture

from pairshift import evals, paired  # noqa: E402
from pairshift.apply import apply_path  # noqa: E402
from pairshift.contracts.evals import DatasetRef  # noqa: E402
from pairshift.evals import results  # noqa: E402
from pairshift.paired import blocking_change, paired_ratio, per_case_discordance  # noqa: E402
from pairshift.policy import EvalPolicy  # noqa: E402
from pairshift.ratelimit import reset_limiters  # noqa: E402
from pairshift.registry.store import Registry, open_registry  # noqa: E402
from pairshift.reports import ArmInput, assemble_report  # noqa: E402
from pairshift.settings import get_settings  # noqa: E402
from pairshift.stats import (  # noqa: E402
    ArmOutcomes,
    CaseOutcome,
    factorial,
    flipped,
    mcnemar,
    paired_effect,
    summarize_arm,
)

GOLDEN = Path(__file__).parent / "data" / "folded_figures.json"
ARMS = ("baseline", "prompt_only", "model_only", "joint")
TYPES = ("is-json", "contains", "llm-rubric")


def seeded_eval(seed: int = 20, n_cases: int = 240, epochs: int = 3) -> dict[str, list[CaseOutcome]]:
    """Four arms' calls; case ids mix upper and lower case and widths so that sorting is exercised."""
    rng = np.random.default_rng(seed)
    ids = [f"{'Ab'[i % 2]}-{i * 7919 % 1000}" + ("x" * (i % 3)) for i in range(n_cases)]
    tags = {c: [t for t in ("billing", "refund", "edge") if rng.random() < 0.3] for c in ids}
    out: dict[str, list[CaseOutcome]] = {}
    for k, arm in enumerate(ARMS):
        level = 0.55 + 0.1 * k
        calls = []
        for epoch in range(epochs):
            for i, case in enumerate(ids):
                if arm == "model_only" and epoch == 2 and i % 17 == 0:
                    continue  # a missing epoch
                error = bool(rng.random() < 0.05)
                carried = [t for t in TYPES if rng.random() < 0.7] or ["is-json"]
                failed = [t for t in carried if rng.random() > level] if not error else list(carried)
                calls.append(
                    CaseOutcome(
                        case_id=case,
                        epoch=epoch,
                        passed=not failed and not error,
                        score=float(rng.random()) if not error else 0.0,
                        tags=tags[case],
                        latency_ms=float(rng.gamma(2.0, 150.0 + 40 * k)),
                        cost_usd=float(rng.random() * 1e-3),
                        input_tokens=int(rng.integers(10, 500)),
                        output_tokens=int(rng.integers(1, 200)),
                        error=error,
                        assertion_types=carried,
                        assertion_types_failed=failed,
                    )
                )
        if k % 2:  # case-major order for two arms, epoch-major for the others
            order = {c: i for i, c in enumerate(ids)}
            calls.sort(key=lambda o: (order[o.case_id], o.epoch))
        out[arm] = calls
    return out


def figures(outcomes: dict[str, list[CaseOutcome]]) -> dict[str, Any]:
    """Every figure the summaries and the report show, plus the statistics' own outputs."""
    policy = EvalPolicy(epochs=3, blocking=["is-json", "contains"], confidence=0.95)
    summaries = {arm: summarize_arm(o, 0.95) for arm, o in outcomes.items()}
    base, joint = outcomes["baseline"], outcomes["joint"]
    report = assemble_report(
        report_id="r-joint",
        deployment="d",
        baseline_pair="p@1+old",
        target_pair="p@2+new",
        dataset=DatasetRef(name="ds", hash="a" * 64, cases=240),
        epochs=3,
        policy=policy,
        arms=[ArmInput(arm=a, pair=f"pair-{a}", run_id=f"r-{a}", summary=summaries[a]) for a in ARMS],
        outcomes=outcomes,
    )
    return {
        "summaries": {a: s.model_dump(mode="json") for a, s in summaries.items()},
        "report": report.model_dump(mode="json"),
        "factorial": {
            k: e.model_dump(mode="json") for k, e in factorial(*(outcomes[a] for a in ARMS)).items()
        },
        "score_effect": paired_effect(base, joint, 0.9, "score").model_dump(mode="json"),
        "mcnemar": mcnemar(base, joint).model_dump(mode="json"),
        "flipped": [f.model_dump(mode="json") for f in flipped(base, joint, "baseline", "joint")],
        "blocking": blocking_change(base, joint, "contains", 0.95).model_dump(mode="json"),
        "cost_ratio": paired_ratio(base, joint, "cost", 0.95).model_dump(mode="json"),  # type: ignore[union-attr]
        "latency_ratio": paired_ratio(base, joint, "latency_p95", 0.9).model_dump(mode="json"),  # type: ignore[union-attr]
        "discordance": per_case_discordance(base, joint),
    }


def test_folded_figures_are_the_per_call_figures() -> None:
    """The golden figures; fails when a per-case value, its order or an order of summation changes."""
    expected = json.loads(GOLDEN.read_text())
    got = json.loads(json.dumps(figures(seeded_eval())))
    for key in expected:
        assert got[key] == expected[key], key


def test_the_bootstrap_in_smaller_chunks_gives_the_same_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """A big eval resamples fewer cases at once (bounded memory); the resamples and their order stay."""
    arms = seeded_eval()
    before = [paired_ratio(arms["baseline"], arms["joint"], stat, 0.95) for stat in ("cost", "latency_p95")]
    monkeypatch.setattr(paired, "_CELLS", 2_200)  # 720 calls: 3 resamples at a time instead of 200
    after = [paired_ratio(arms["baseline"], arms["joint"], stat, 0.95) for stat in ("cost", "latency_p95")]
    assert after == before


def _arrays(arm: ArmOutcomes) -> dict[str, Any]:
    return {
        "ids": arm.case_ids.tolist(),
        "calls": arm.calls.tolist(),
        "passes": arm.passes.tolist(),
        "scores": arm.scores.tolist(),
        "tags": {t: p.tolist() for t, p in arm.tags.items()},
        "fails": {t: (p.tolist(), n.tolist()) for t, (p, n) in arm.type_fails.items()},
        "ok": (arm.ok_case.tolist(), arm.ok_latency.tolist(), arm.ok_cost.tolist()),
        "totals": (arm.n_calls, arm.errors, arm.cost_usd, arm.tokens, arm.failed_types, arm.carried_types),
    }


@pytest.fixture
def any_eval_registry(
    registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Registry]:
    """The 30-case example applied to a registry on SQLite, and on PostgreSQL when it answers."""
    monkeypatch.setenv("PAIRSHIFT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PAIRSHIFT_DATABASE_URL", registry_url)
    get_settings.cache_clear()
    reset_limiters()
    registry = open_registry(registry_url)
    apply_path(registry, write_config(tmp_path / "config"), by="test")
    yield registry
    get_settings.cache_clear()


async def test_streamed_runs_fold_to_what_their_stored_outcomes_give(
    any_eval_registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real 4-arm eval on the sim: the streamed fold (pages of 7 rows, tags merged from the dataset in a
    second cursor) gives the arrays, summaries and report that the list of stored outcomes gives."""
    eval_registry = any_eval_registry
    monkeypatch.setattr(results, "STREAM_ROWS", 7)
    request = evals.EvalRequest(
        deployment="support-triage",
        requested_by="test",
        to_model="sim-fresh-2025-09",
        to_prompt="support-triage@2",
        no_cache=True,
    )
    plan = evals.plan_eval(eval_registry, request, "fold")
    for arm in plan.arms:
        spec = evals.BatchSpec(run_id=arm.run_id, start=0, stop=30, no_cache=True)
        await evals.run_batch(eval_registry, spec)
    listed = {a.arm: evals.load_outcomes(eval_registry, a.run_id) for a in plan.arms}
    for a in plan.arms:
        streamed = evals.load_arm(eval_registry, a.run_id)
        assert _arrays(streamed) == _arrays(ArmOutcomes.of(listed[a.arm]))
        assert streamed.tags  # the example cases carry tags
    summaries = [evals.summarize_run(eval_registry, a.run_id) for a in plan.arms]
    for summary, a in zip(summaries, plan.arms, strict=True):
        assert summary.summary == summarize_arm(listed[a.arm], plan.policy.confidence)
    report = evals.build_report(eval_registry, plan, summaries)
    assert report.arms["joint"].calls == 60
    arms = [
        ArmInput(
            arm=a.arm,
            pair=a.pair,
            run_id=a.run_id,
            summary=s.summary,
            cached_calls=s.cached_calls,
            facts=results.arm_facts(eval_registry, a.run_id),
            spend=results.arm_spend(eval_registry, a.run_id),
        )
        for a, s in zip(plan.arms, summaries, strict=True)
    ]
    assert report == assemble_report(
        report_id=plan.arms[-1].run_id,
        deployment=plan.deployment,
        baseline_pair=plan.baseline_pair,
        target_pair=plan.target_pair,
        epochs=plan.epochs,
        policy=plan.policy,
        arms=arms,
        outcomes=listed,
        dataset=DatasetRef(
            name=plan.dataset_name, hash=plan.dataset_hash, cases=plan.n_cases, version=plan.dataset_version
        ),
        judge=plan.judge,
        warnings=plan.warnings,
    )


def test_planning_reads_the_cases_a_page_at_a_time(eval_registry: Registry) -> None:  # noqa: F811
    from pairshift.evals.planning import case_pages
    from pairshift.registry.models import DatasetCase

    with eval_registry.session() as s:
        version = s.exec(select(DatasetCase.dataset_version)).first()
        assert version is not None
        pages = list(case_pages(s, version, 7))
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    assert [c.id for p in pages for c in p] == [f"ticket-{i:04d}" for i in range(30)]


if __name__ == "__main__":
    print(json.dumps(figures(seeded_eval()), indent=1, sort_keys=True))
