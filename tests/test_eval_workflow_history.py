"""A 10,000-case, 3-epoch, 4-arm eval keeps EvalWorkflow's history far below Temporal's limits.

The activities are stand-ins registered under the real names, returning payloads of realistic size (a plan
for 10,000 cases, arm summaries with 40 tags, a report with 3,000 flipped cases that is capped like the real
one), so the test measures what the workflow itself carries without making 120,000 calls.
"""

from __future__ import annotations

import uuid

from temporalio import activity
from temporalio.worker import Worker

from pairshift.contracts.evals import (
    ArmPlan,
    ArmReport,
    ArmSummary,
    BatchResult,
    BatchSpec,
    DatasetRef,
    Effect,
    EvalPlan,
    EvalReport,
    EvalRequest,
    Flip,
    PlanInput,
    PreflightInput,
    PreflightResult,
    ReportInput,
    RunSummary,
    SummarizeInput,
    TagStat,
)
from pairshift.contracts.gates import GateDecision
from pairshift.policy import EvalPolicy
from workflows.evals import EVAL_WORKFLOWS, EvalWorkflow

N_CASES, EPOCHS = 10_000, 3
ARMS = ("baseline", "prompt_only", "model_only", "joint")
TAGS = {f"tag-{i}": TagStat(pass_rate=0.9, ci=(0.85, 0.95), n=250) for i in range(40)}
SUMMARY = ArmSummary(
    n_cases=N_CASES,
    epochs=EPOCHS,
    calls=N_CASES * EPOCHS,
    errors=0,
    pass_rate=0.9,
    ci=(0.89, 0.91),
    mean_score=0.95,
    score_ci=(0.94, 0.96),
    latency_p50_ms=600,
    latency_p95_ms=900,
    cost_usd=90.0,
    cost_per_case=0.003,
    tokens_per_case=300,
    by_tag=TAGS,
)


@activity.defn(name="plan_eval")
def fake_plan(data: PlanInput) -> EvalPlan:
    arms = [
        ArmPlan(arm=a, pair=f"p@{i}+m{i}", prompt=f"p@{i}", model=f"m{i}", run_id=f"run-{a}")  # type: ignore[arg-type]
        for i, a in enumerate(ARMS)
    ]
    return EvalPlan(
        eval_id=data.eval_id,
        deployment="big",
        baseline_pair=arms[0].pair,
        target_pair=arms[-1].pair,
        dataset_name="big",
        dataset_version="big@1",
        dataset_hash="0" * 64,
        n_cases=N_CASES,
        epochs=EPOCHS,
        policy=EvalPolicy(epochs=EPOCHS),
        arms=arms,
    )


@activity.defn(name="preflight_eval")
def fake_preflight(data: PreflightInput) -> PreflightResult:
    return PreflightResult(calls=len(data.plan.arms))


@activity.defn(name="run_eval_batch")
def fake_batch(batch: BatchSpec) -> BatchResult:
    return BatchResult(calls=(batch.stop - batch.start) * EPOCHS, made=(batch.stop - batch.start) * EPOCHS)


@activity.defn(name="summarize_eval_run")
def fake_summary(data: SummarizeInput) -> RunSummary:
    return RunSummary(run_id=data.run_id, summary=SUMMARY, cached_calls=0)


@activity.defn(name="build_eval_report")
def fake_report(data: ReportInput) -> EvalReport:
    arm = ArmReport(
        pair="p+m",
        run_id="run",
        pass_rate=0.9,
        ci=(0.89, 0.91),
        mean_score=0.95,
        calls=30_000,
        errors=0,
        cached_calls=0,
        latency_p50_ms=600,
        latency_p95_ms=900,
        cost_usd=90.0,
        by_tag=TAGS,
    )
    flips = [
        Flip(case=f"case-{i:05d}", from_arm="baseline", to_arm="joint", direction="regressed")
        for i in range(3000)
    ]
    effect = Effect(estimate=-0.01, ci=(-0.02, 0.0), p_value=0.04)
    report = EvalReport(
        report_id="run-joint",
        deployment="big",
        baseline_pair="a",
        target_pair="b",
        dataset=DatasetRef(name="big", hash="0" * 64, cases=N_CASES),
        epochs=EPOCHS,
        arms={a: arm for a in ARMS},
        effects={e: effect for e in ("prompt", "model", "interaction", "joint")},
        flipped=flips,
        flipped_count=len(flips),
        gate=GateDecision(decision="fail", reasons=["x"]),
        power_note="n",
    )
    return report.capped(data.flipped_cap)


async def test_large_eval_history_is_small(dev_env) -> None:
    import concurrent.futures

    queue = f"eval-history-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=EVAL_WORKFLOWS,
            activity_executor=pool,
            activities=[fake_plan, fake_preflight, fake_batch, fake_summary, fake_report],
        ):
            handle = await dev_env.client.start_workflow(
                EvalWorkflow.run,
                EvalRequest(deployment="big", to_model="m3", to_prompt="p@3"),
                id=f"eval-{queue}",
                task_queue=queue,
            )
            report = await handle.result()
            progress = await handle.query(EvalWorkflow.progress)
    history = await handle.fetch_history()
    size = len(history.to_json().encode())
    events = len(history.events)
    batches = sum(
        1
        for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "run_eval_batch"
    )
    assert batches == 4 * 50  # 200-case batches
    assert len(report.flipped) == 50 and report.flipped_count == 3000
    # Temporal warns at 10,240 events / 10 MB and fails at 51,200 / 50 MB.
    assert events < 2_000, events
    assert size < 1_000_000, size
    assert all(p.done == p.total == N_CASES * EPOCHS for p in progress.arms.values())
    print(f"history: {events} events, {size} bytes (JSON)")
