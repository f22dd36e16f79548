"""Results of an eval: stored outcomes, a run's summary, the report and the outputs of flipped cases.

:func:`summarize_run` turns a run's stored results into ``EvalRun.summary``; :func:`build_report` computes
effects, flips and the gate from every arm's results (:func:`pairshift.reports.assemble_report`) and stores
the full report on the target arm's run, where :func:`load_report` and :func:`flipped_outputs` read it back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlmodel import col, func, select

from pairshift.contracts.evals import ArmSummary, DatasetRef, EvalPlan, EvalReport, RunSummary
from pairshift.evals import provider_batches
from pairshift.evals.planning import ArmFailed, EvalInputError
from pairshift.registry.models import DatasetCase, EvalResult, EvalRun, utcnow
from pairshift.registry.store import Registry
from pairshift.reports import ArmFacts, ArmInput, ArmSpend, FlippedOutputs, assemble_report
from pairshift.stats import ArmOutcomes, CaseOutcome, OutcomeFold, summarize_arm

STREAM_ROWS = 500  # rows fetched at a time when reading a run's results (a page: ~5 MB at its peak)


def load_outcomes(registry: Registry, run_id: str) -> list[CaseOutcome]:
    """The run's stored results as statistics inputs (tags from the dataset cases).

    Only the columns the statistics read are fetched, a few thousand rows at a time: never the calls'
    messages, params or outputs (issue 20: a 100,000-case run's rows would otherwise all be in memory at
    once). The outcomes themselves are still one list per run."""
    with registry.session() as s:
        run = s.get(EvalRun, run_id)
        if run is None:
            raise ArmFailed(f"eval run {run_id} does not exist")
        tags: dict[str, list[str]] = {}
        cases = (
            select(DatasetCase.case_id, DatasetCase.data)
            .where(DatasetCase.dataset_version == run.dataset_version)
            .execution_options(yield_per=STREAM_ROWS)
        )
        for case_id, data in s.exec(cases):
            if data.get("tags"):
                tags[case_id] = data["tags"]
        rows = s.exec(
            select(
                EvalResult.case_id,
                EvalResult.epoch,
                EvalResult.passed,
                EvalResult.score,
                EvalResult.latency_ms,
                EvalResult.online_cost_usd,
                EvalResult.cost_usd,
                EvalResult.input_tokens,
                EvalResult.output_tokens,
                EvalResult.error,
                EvalResult.assertions,
            )
            .where(EvalResult.run_id == run_id)
            .order_by(col(EvalResult.case_id), col(EvalResult.epoch))
            .execution_options(yield_per=STREAM_ROWS)
        )
        return [
            CaseOutcome(
                case_id=case_id,
                epoch=epoch,
                passed=passed,
                score=score,
                tags=tags.get(case_id, []),
                latency_ms=latency_ms,
                # The gate compares costs as production would pay them: a batch answer at its online price.
                cost_usd=online_cost if online_cost is not None else cost,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                error=error is not None,
                assertion_types_failed=[a["type"] for a in assertions if not a["passed"]],
                assertion_types=[a["type"] for a in assertions],
            )
            for (
                case_id,
                epoch,
                passed,
                score,
                latency_ms,
                online_cost,
                cost,
                input_tokens,
                output_tokens,
                error,
                assertions,
            ) in rows
        ]


def load_arm(registry: Registry, run_id: str) -> ArmOutcomes:
    """The run's stored results folded into per-case arrays as they stream in (:class:`ArmOutcomes`).

    Only the columns the statistics read are fetched, :data:`STREAM_ROWS` rows at a time, ordered by
    (case, epoch); each case's tags come from the dataset's cases read alongside in the same order (a merge
    join: no table of every case's tags is built). Memory: O(cases) numbers plus three per answered call,
    never an object per call (issue 20: a 100,000-case x 3-epoch run)."""
    with registry.session() as s:
        run = s.get(EvalRun, run_id)
        if run is None:
            raise ArmFailed(f"eval run {run_id} does not exist")
        cases = iter(
            s.exec(
                select(DatasetCase.case_id, DatasetCase.data)
                .where(DatasetCase.dataset_version == run.dataset_version)
                .order_by(col(DatasetCase.case_id))
                .execution_options(yield_per=STREAM_ROWS)
            )
        )
        rows = s.exec(
            select(
                EvalResult.case_id,
                EvalResult.passed,
                EvalResult.score,
                EvalResult.latency_ms,
                EvalResult.online_cost_usd,
                EvalResult.cost_usd,
                EvalResult.input_tokens,
                EvalResult.output_tokens,
                EvalResult.error,
                EvalResult.assertions,
            )
            .where(EvalResult.run_id == run_id)
            .order_by(col(EvalResult.case_id), col(EvalResult.epoch))
            .execution_options(yield_per=STREAM_ROWS)
        )
        fold, current, tags = OutcomeFold(), None, []
        for case_id, passed, score, latency, online, cost, tokens_in, tokens_out, error, assertions in rows:
            if case_id != current:
                current, tags = case_id, _tags_of(cases, case_id)
            fold.add(
                case_id,
                passed=passed,
                score=score,
                tags=tags,
                latency_ms=latency,
                # The gate compares costs as production would pay them: a batch answer at its online price.
                cost_usd=online if online is not None else cost,
                tokens=tokens_in + tokens_out,
                error=error is not None,
                failed_types=[a["type"] for a in assertions if not a["passed"]],
                types=[a["type"] for a in assertions],
            )
        return fold.result()


def _tags_of(cases: Iterator[tuple[str, dict[str, Any]]], case_id: str) -> list[str]:
    """The tags of ``case_id``, reading the dataset's cases (same order as the results) up to it."""
    for other, data in cases:
        if other == case_id:
            return list(data.get("tags") or [])
    return []  # not in the dataset (cannot happen: a run's cases are its dataset version's)


def summarize_run(registry: Registry, run_id: str, confidence: float = 0.95) -> RunSummary:
    """Summarise a run's results into ``EvalRun.summary`` and mark it done (a reused run is only read)."""
    with registry.session() as s:
        run = s.get(EvalRun, run_id)
        if run is not None and run.status == "done" and run.summary:
            return RunSummary(
                run_id=run_id,
                summary=ArmSummary.model_validate(run.summary),
                cached_calls=int(run.summary.get("cached_calls", 0)),
            )
    summary = summarize_arm(load_arm(registry, run_id), confidence)
    with registry.session() as s:
        cached = s.exec(
            select(func.count())
            .select_from(EvalResult)
            .where(EvalResult.run_id == run_id, col(EvalResult.cached).is_(True))
        ).one()
        run = s.get(EvalRun, run_id)
        assert run is not None
        run.summary = {**summary.model_dump(mode="json"), "cached_calls": cached}
        run.status, run.finished_at = "done", utcnow()
        s.add(run)
    return RunSummary(run_id=run_id, summary=summary, cached_calls=cached)


def arm_facts(registry: Registry, run_id: str) -> ArmFacts:
    """The provider side of a run: cached input tokens, errors by kind, truncated cases, dropped params."""
    return provider_side(registry, run_id)[0]


def arm_spend(registry: Registry, run_id: str) -> ArmSpend:
    """The run's results' cost (batch lines at batch prices) and its online equivalent; paid = not cached."""
    return provider_side(registry, run_id)[1]


def provider_side(registry: Registry, run_id: str) -> tuple[ArmFacts, ArmSpend]:
    """:func:`arm_facts` and :func:`arm_spend` in one pass over the run's rows, streamed."""
    kinds: dict[str, int] = {}
    truncated: set[str] = set()
    dropped: set[str] = set()
    cached_input = 0
    cost = online = spent = spent_online = 0.0
    with registry.session() as s:
        rows = s.exec(
            select(
                EvalResult.case_id,
                EvalResult.error_kind,
                EvalResult.cached_input_tokens,
                EvalResult.dropped_params,
                EvalResult.cost_usd,
                EvalResult.online_cost_usd,
                EvalResult.cached,
            )
            .where(EvalResult.run_id == run_id)
            .execution_options(yield_per=STREAM_ROWS)
        )
        for case_id, kind, cached_tokens, params, c, on, cached in rows:
            if kind:
                kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "truncated":
                truncated.add(case_id)
            dropped.update(params or [])
            cached_input += cached_tokens or 0
            o = on if on is not None else c
            cost += c
            online += o
            if not cached:
                spent += c
                spent_online += o
    spend = ArmSpend(
        cost_usd=round(cost, 9),
        online_usd=round(online, 9),
        spent_usd=round(spent, 9),
        spent_online_usd=round(spent_online, 9),
    )
    batch = provider_batches.batch_counts(registry, run_id)
    facts = ArmFacts(
        cached_input_tokens=cached_input,
        error_kinds=kinds,
        truncated_cases=sorted(truncated),
        dropped_params=sorted(dropped),
        mode="batch" if batch else "online",
        online_cost_usd=spend.online_usd,
        batch=batch,
    )
    return facts, spend


# ---------------------------------------------------------------- the report

REPORT_KEY = "report"  # the full report lives in the target arm run's summary (no report table yet)


def build_report(registry: Registry, plan: EvalPlan, summaries: Sequence[RunSummary]) -> EvalReport:
    """Compute effects, flips and the gate from the stored results; store the full report; return it."""
    by_run = {s.run_id: s for s in summaries}
    sides = {a.run_id: provider_side(registry, a.run_id) for a in plan.arms}
    arms = [
        ArmInput(
            arm=a.arm,
            pair=a.pair,
            run_id=a.run_id,
            reused=a.reused,
            summary=by_run[a.run_id].summary,
            cached_calls=by_run[a.run_id].cached_calls,
            facts=sides[a.run_id][0],
            spend=sides[a.run_id][1],
        )
        for a in plan.arms
    ]
    outcomes = {a.arm: load_arm(registry, a.run_id) for a in plan.arms}
    target = plan.arms[-1].run_id  # joint, or the one changed arm: always a fresh run of this eval
    report = assemble_report(
        report_id=target,
        deployment=plan.deployment,
        baseline_pair=plan.baseline_pair,
        target_pair=plan.target_pair,
        epochs=plan.epochs,
        policy=plan.policy,
        arms=arms,
        outcomes=outcomes,
        dataset=DatasetRef(
            name=plan.dataset_name, hash=plan.dataset_hash, cases=plan.n_cases, version=plan.dataset_version
        ),
        judge=plan.judge,
        warnings=plan.warnings,
    )
    with registry.session() as s:
        run = s.get(EvalRun, target)
        assert run is not None
        run.summary = {**(run.summary or {}), REPORT_KEY: report.model_dump(mode="json")}
        s.add(run)
    return report


def load_report(registry: Registry, report_id: str) -> EvalReport:
    """The full stored report (every flipped case), by ``EvalReport.report_id``."""
    with registry.session() as s:
        run = s.get(EvalRun, report_id)
        if run is None or not run.summary or REPORT_KEY not in run.summary:
            raise EvalInputError(f"no eval report {report_id!r}")
        return EvalReport.model_validate(run.summary[REPORT_KEY])


def flipped_outputs(registry: Registry, report: EvalReport, limit: int = 50) -> list[FlippedOutputs]:
    """The first epoch's outputs of up to ``limit`` flipped cases, baseline beside the arm they flipped in."""
    out = []
    with registry.session() as s:
        for flip in report.flipped[:limit]:
            rows = {}
            for arm in ("baseline", flip.to_arm):
                rows[arm] = s.exec(
                    select(EvalResult)
                    .where(EvalResult.run_id == report.arms[arm].run_id, EvalResult.case_id == flip.case)
                    .order_by(col(EvalResult.epoch))
                ).first()
            text = {arm: (r.output or r.error or "") if r else "" for arm, r in rows.items()}
            out.append(
                FlippedOutputs(
                    case=flip.case,
                    to_arm=flip.to_arm,
                    direction=flip.direction,
                    baseline_output=text["baseline"],
                    arm_output=text[flip.to_arm],
                )
            )
    return out
