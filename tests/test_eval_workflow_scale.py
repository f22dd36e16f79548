"""EvalWorkflow keeps every run's history bounded: it continues as new, and provider batches poll in children.

A 100,000-case x 3-epoch x 4-arm eval is thousands of batch activities, and a provider batch polls on durable
timers for up to a day (~1,200 events); one run holding all of it would pass Temporal's 10,240-event warning.
Since ``workflow.patched("eval-continue-as-new")`` a run that reaches ``tuning.events_per_run`` events starts
no more work, lets what is in flight finish and continues as new carrying cursors and counts
(:class:`~pairshift.contracts.evals.EvalCarry`); each provider batch is a ProviderBatchWorkflow child doing
the same with its poll clock. These tests use a tiny ``events_per_run`` on a small eval to show the mechanics
(every run within the limit plus what was in flight; every case range run exactly once; one plan); the 100k
shape at the default limit is in bench/results/scale.md (bench/eval_scale_bench.py).
"""

from __future__ import annotations

import concurrent.futures
import os
import uuid
from pathlib import Path

import pytest
from eval_scale_support import ARMS, FakeEval, eval_events, record_runs
from temporalio.worker import Worker

from pairshift.contracts.evals import EvalRequest, EvalTuning
from pairshift.policy import EvalPolicy
from workflows.evals import EVAL_WORKFLOWS, EvalWorkflow, hands_over, refuse_resume

HISTORIES = Path(__file__).resolve().parent / "histories"
RECORD = bool(os.environ.get("PAIRSHIFT_RECORD_SCALE_HISTORY"))  # refresh the kept copies (test_replay.py)


@pytest.mark.parametrize(
    "events, limit, suggested, expected",
    [
        (10, 100, False, False),
        (99, 100, False, False),
        (100, 100, False, True),  # the limit reached: hand over
        (150, 100, False, True),
        (10, 100, True, True),  # Temporal suggests it (history size): hand over early
        (0, 1, False, False),
    ],
)
def test_hands_over(events: int, limit: int, suggested: bool, expected: bool) -> None:
    assert hands_over(events, limit, suggested) is expected


@pytest.mark.parametrize(
    "eval_id, continued, first, refused",
    [
        (None, None, "r1", None),  # a plain start
        ("r1", None, "r1", "internal"),  # a client's start carrying a carry
        ("r1", "r1", "r1", None),  # Temporal's continuation of this chain
        ("r0", "r1", "r1", "began with 'r1'"),  # another eval's carry
    ],
)
def test_refuse_resume(eval_id: str | None, continued: str | None, first: str, refused: str | None) -> None:
    why = refuse_resume(eval_id, continued_run_id=continued, first_run_id=first)
    assert (why is None) if refused is None else (why is not None and refused in why)


async def _run(dev_env, fake: FakeEval, tuning: EvalTuning):  # type: ignore[no-untyped-def]
    queue = f"eval-scale-{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=EVAL_WORKFLOWS,
            activity_executor=pool,
            activities=fake.activities(),
        ):
            handle = await dev_env.client.start_workflow(
                EvalWorkflow.run,
                EvalRequest(deployment="big", to_model="m3", to_prompt="p@3", tuning=tuning),
                id=f"eval-{queue}",
                task_queue=queue,
            )
            report = await handle.result()
            progress = await handle.query(EvalWorkflow.progress)
    runs, children = await eval_events(dev_env.client, handle)
    if RECORD and not children:
        names = {
            "first": HISTORIES / "eval_continued_first_run.json",
            "last": HISTORIES / "eval_continued_last_run.json",
        }
        await record_runs(dev_env.client, handle.id, handle.first_execution_run_id or "", names)
    if RECORD and children:
        wid = sorted(children)[0]
        first = (await dev_env.client.get_workflow_handle(wid).describe()).raw_description
        names = {
            "first": HISTORIES / "provider_batch_continued_first_run.json",
            "last": HISTORIES / "provider_batch_continued_last_run.json",
        }
        await record_runs(dev_env.client, wid, first.workflow_execution_info.first_run_id, names)
    return report, progress, runs, children


async def test_online_eval_continues_as_new_with_every_run_bounded(dev_env) -> None:
    n_cases, epochs, batch_cases, parallel, limit = 300, 3, 10, 4, 120
    fake = FakeEval(n_cases=n_cases, epochs=epochs)
    tuning = EvalTuning(batch_cases=batch_cases, parallel_batches=parallel, events_per_run=limit)
    report, progress, runs, children = await _run(dev_env, fake, tuning)
    print(f"events per run: {runs}")
    # 120 batch activities would be ~600 events in one run; here they are spread over runs of bounded size.
    assert len(runs) >= 3, runs
    in_flight = 6 * parallel + 40  # what a run's in-flight batches, summaries and report add past the limit
    assert max(runs) <= limit + in_flight, runs
    assert progress.runs == len(runs)
    assert fake.plans == 1  # planned once: later runs carry the plan
    per_arm = n_cases // batch_cases
    assert len(fake.batches) == len(ARMS) * per_arm and set(fake.batches.values()) == {1}, "a range ran twice"
    assert all(p.done == p.total == n_cases * epochs for p in progress.arms.values())
    assert progress.phase == "done" and report.report_id == "run-joint"
    assert not children


async def test_provider_batches_poll_in_children_that_continue_as_new(dev_env) -> None:
    n_cases, epochs, limit, polls = 40, 2, 60, 20
    fake = FakeEval(
        n_cases=n_cases, epochs=epochs, modes={"model_only": "batch", "joint": "batch"}, polls_to_end=polls
    )
    tuning = EvalTuning(
        batch_cases=10,
        events_per_run=limit,
        provider_batch_requests=40,  # 20 cases x 2 epochs: two provider batches per batch arm
        poll_first_s=0.01,
        poll_max_s=0.02,
    )
    report, progress, runs, children = await _run(dev_env, fake, tuning)
    print(f"eval: events per run {runs}; children: {children}")
    assert len(children) == 4, children
    assert all(len(c) >= 3 for c in children.values()), children  # 20 polls: ~140 events in one run
    assert max(n for c in children.values() for n in c) <= limit + 15, children  # + one poll
    assert max(runs) <= limit + 6 * tuning.parallel_batches + 40, runs
    assert set(fake.submitted.values()) == {1} and len(fake.submitted) == 4, "a batch was submitted again"
    assert set(fake.polls.values()) == {polls}  # the poll clock carried over: no poll lost or repeated
    assert len(fake.batches) == 2 * n_cases // 10  # the two online arms
    assert all(p.done == p.total == n_cases * epochs for p in progress.arms.values())
    assert progress.phase == "done" and report.report_id == "run-joint"


async def test_a_start_carrying_resume_is_refused(dev_env) -> None:
    """The carry is internal: a client's start with one fails at once, before the plan (nothing recorded)."""
    from temporalio.client import WorkflowFailureError

    from pairshift.contracts.evals import EvalCarry, EvalPlan, EvalProgress, RoutedEvalPlan

    fake = FakeEval(n_cases=10, epochs=1)
    queue = f"eval-forged-{uuid.uuid4().hex[:8]}"
    plan = RoutedEvalPlan.model_validate(
        EvalPlan(
            eval_id="someone-else",
            deployment="big",
            baseline_pair="a",
            target_pair="b",
            dataset_name="big",
            dataset_version="big@1",
            dataset_hash="0" * 64,
            n_cases=10,
            epochs=1,
            policy=EvalPolicy(epochs=1),
            arms=[],
        ).model_dump()
    )
    carry = EvalCarry(plan=plan, progress=EvalProgress(phase="running"))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        async with Worker(
            dev_env.client,
            task_queue=queue,
            workflows=EVAL_WORKFLOWS,
            activities=fake.activities(),
            activity_executor=pool,
        ):
            handle = await dev_env.client.start_workflow(
                EvalWorkflow.run,
                EvalRequest(deployment="big", to_model="m3", resume=carry),
                id=f"eval-{queue}",
                task_queue=queue,
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()
    assert "resume: refused" in str(failed.value.cause)
    assert fake.plans == 0
