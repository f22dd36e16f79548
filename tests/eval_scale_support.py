"""Stand-in eval activities of any shape, and the event count of every run of an EvalWorkflow (issue 20).

The activities are registered under the real names and return what the real ones would (counts, a plan of
``n_cases`` x ``epochs`` x 4 arms, realistic summaries and a capped report from
``test_eval_workflow_history``), so a 100,000-case eval's workflow side runs without 1.2 million calls. They
record what they were asked, so a test can check that every case range ran exactly once across runs.
Used by tests/test_eval_workflow_scale.py and bench/eval_scale_bench.py.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from test_eval_workflow_history import fake_report, fake_summary

from pairshift.contracts.evals import (
    ArmPlan,
    BatchResult,
    BatchRoute,
    BatchSpec,
    CollectResult,
    PlanInput,
    PollResult,
    PreflightInput,
    PreflightResult,
    ProviderBatchSpec,
    RoutedEvalPlan,
    SubmitResult,
)
from pairshift.policy import EvalPolicy

ARMS = ("baseline", "prompt_only", "model_only", "joint")


@dataclass
class FakeEval:
    """An eval of ``n_cases`` x ``epochs`` x 4 arms; ``modes`` maps arms to "batch" (the rest run online).

    A provider batch ends after ``polls_to_end`` polls; ``calls_per_batch`` routes the online arms through a
    rate-limited model queue of that call budget (None: the main queue, automatic batch sizes).
    """

    n_cases: int
    epochs: int
    modes: dict[str, str] = field(default_factory=dict)
    polls_to_end: int = 3
    calls_per_batch: int | None = None
    queue: str | None = None  # the model queue's name when routed (the test's worker polls it too)
    plans: int = 0
    batches: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    submitted: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    polls: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def activities(self) -> list[object]:
        return [
            self.plan,
            self.preflight,
            self.batch,
            self.submit,
            self.poll,
            self.collect,
            fake_summary,
            fake_report,
        ]

    @activity.defn(name="plan_eval")
    def plan(self, data: PlanInput) -> RoutedEvalPlan:
        with self._lock:
            self.plans += 1
        arms = [
            ArmPlan(arm=a, pair=f"p@{i}+m{i}", prompt=f"p@{i}", model=f"m{i}", run_id=f"run-{a}")  # type: ignore[arg-type]
            for i, a in enumerate(ARMS)
        ]
        routes = {}
        if self.calls_per_batch:
            routes = {
                a: BatchRoute(model_id=f"m{i}", calls_per_batch=self.calls_per_batch)
                for i, a in enumerate(ARMS)
                if self.modes.get(a) != "batch"
            }
        return RoutedEvalPlan(
            eval_id=data.eval_id,
            deployment="big",
            baseline_pair=arms[0].pair,
            target_pair=arms[-1].pair,
            dataset_name="big",
            dataset_version="big@1",
            dataset_hash="0" * 64,
            n_cases=self.n_cases,
            epochs=self.epochs,
            policy=EvalPolicy(epochs=self.epochs),
            arms=arms,
            routes=routes,
            modes={a: self.modes.get(a, "online") for a in ARMS},  # type: ignore[misc]
        )

    @activity.defn(name="preflight_eval")
    def preflight(self, data: PreflightInput) -> PreflightResult:
        return PreflightResult(calls=len(data.plan.arms))

    @activity.defn(name="run_eval_batch")
    def batch(self, spec: BatchSpec) -> BatchResult:
        with self._lock:
            self.batches[(spec.run_id, spec.start, spec.stop)] += 1
        calls = (spec.stop - spec.start) * self.epochs
        return BatchResult(calls=calls, made=calls)

    @activity.defn(name="submit_provider_batch")
    def submit(self, spec: ProviderBatchSpec) -> SubmitResult:
        with self._lock:
            self.submitted[(spec.run_id, spec.start, spec.round)] += 1
        requests = (spec.stop - spec.start) * self.epochs
        return SubmitResult(key=f"{spec.run_id}-{spec.start}", provider_batch_id="batch-1", requests=requests)

    @activity.defn(name="poll_provider_batch")
    def poll(self, spec: ProviderBatchSpec) -> PollResult:
        key = (spec.run_id, spec.start, spec.round)
        with self._lock:
            self.polls[key] += 1
            ended = self.polls[key] >= self.polls_to_end
        return PollResult(ended=ended, status="ended" if ended else "in_progress")

    @activity.defn(name="collect_provider_batch")
    def collect(self, spec: ProviderBatchSpec) -> CollectResult:
        return CollectResult(stored=(spec.stop - spec.start) * self.epochs)


async def run_events(
    client: Client, workflow_id: str, run_id: str
) -> tuple[list[int], list[tuple[str, str]]]:
    """(events of every run from ``run_id`` on, (workflow id, run id) of every child those runs started)."""
    counts, children = [], []
    next_run: str | None = run_id
    while next_run:
        history = await client.get_workflow_handle(workflow_id, run_id=next_run).fetch_history()
        counts.append(len(history.events))
        for event in history.events:
            if event.HasField("child_workflow_execution_started_event_attributes"):
                child = event.child_workflow_execution_started_event_attributes.workflow_execution
                children.append((child.workflow_id, child.run_id))
        last = history.events[-1]
        next_run = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    return counts, children


async def eval_events(client: Client, handle: WorkflowHandle) -> tuple[list[int], dict[str, list[int]]]:
    """Events per run of the eval ``handle`` started, and of each of its provider batch children."""
    first = handle.first_execution_run_id or handle.result_run_id
    assert first is not None
    runs, children = await run_events(client, handle.id, first)
    per_child = {wid: (await run_events(client, wid, rid))[0] for wid, rid in children}
    return runs, per_child


async def record_runs(client: Client, workflow_id: str, first_run: str, out: dict[str, Path]) -> None:
    """Write the first and the last run of a continued workflow to ``out["first"]`` / ``out["last"]``."""
    ids = []
    next_run: str | None = first_run
    while next_run:
        history = await client.get_workflow_handle(workflow_id, run_id=next_run).fetch_history()
        ids.append((next_run, history))
        last = history.events[-1]
        next_run = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    assert len(ids) >= 2, "the workflow did not continue as new"
    out["first"].write_text(ids[0][1].to_json())
    out["last"].write_text(ids[-1][1].to_json())
