"""EvalWorkflow's boundary: its request, plan, batches, summaries, report and progress, and its activities.

The 2x2 eval of PRODUCT §1/§6: ``plan_eval`` turns an :class:`EvalRequest` into an :class:`EvalPlan` (with
each arm's :class:`BatchRoute`), ``preflight_eval`` sends each distinct request once (a refused one fails
the eval before any batch), ``run_eval_batch`` runs a :class:`BatchSpec` case range,
``summarize_eval_run`` summarises one arm run, ``build_eval_report`` assembles the :class:`EvalReport`. Only
ids, counts and summaries cross the boundary; outputs stay in the registry. The statistics types
(:class:`ArmSummary`, :class:`Effect`, :class:`Flip`) are computed by :mod:`pairshift.stats`, the gate's
verdict by :mod:`pairshift.gates`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from temporalio import activity

from pairshift.contracts.gates import GateDecision
from pairshift.policy import EvalPolicy

# ---------------------------------------------------------------- statistics


ArmName = Literal["baseline", "prompt_only", "model_only", "joint"]


class TagStat(BaseModel):
    """Pass rate of the cases carrying one tag."""

    pass_rate: float
    ci: tuple[float, float]
    n: int = Field(..., description="Cases carrying the tag.")


class AssertionTypeStat(BaseModel):
    """How often one assertion type failed in an arm."""

    fail_rate: float = Field(
        ..., description="Failing calls / calls carrying the type (all calls if unknown)."
    )
    n: int = Field(..., description="Calls in which the type failed.")


class ArmSummary(BaseModel):
    """Everything the report and the eval gate need from one arm; small enough for workflow history."""

    n_cases: int
    epochs: int = Field(..., description="Largest number of epochs seen for a case.")
    calls: int
    errors: int
    pass_rate: float
    ci: tuple[float, float]
    mean_score: float
    score_ci: tuple[float, float]
    latency_p50_ms: float
    latency_p95_ms: float
    cost_usd: float = Field(..., description="Total cost of the arm.")
    cost_per_case: float = Field(
        ..., description="Mean cost of one call that answered (errored calls left out)."
    )
    tokens_per_case: float = Field(..., description="Mean input + output tokens of one call.")
    by_tag: dict[str, TagStat] = Field(default_factory=dict)
    by_assertion_type: dict[str, AssertionTypeStat] = Field(default_factory=dict)


class Effect(BaseModel):
    """One effect of the 2x2 (prompt, model, interaction, joint): estimate, CI and p-value."""

    estimate: float
    ci: tuple[float, float]
    p_value: float


class Flip(BaseModel):
    """A case whose verdict changed between two arms."""

    case: str
    from_arm: str
    to_arm: str
    direction: Literal["regressed", "improved"]


# ---------------------------------------------------------------- request and plan


class EvalTuning(BaseModel):
    """Knobs of how an eval is executed (not what it measures); the defaults suit the embedded setup."""

    batch_cases: int | None = Field(None, ge=1, description="Cases per batch activity; None = automatic.")
    parallel_batches: int = Field(8, ge=1, le=64, description="Batch activities in flight across all arms.")
    heartbeat_timeout_s: float = Field(
        30.0, gt=0, description="A batch silent this long is retried elsewhere."
    )
    batch_timeout_s: float = Field(4 * 3600.0, gt=0, description="start_to_close of one batch activity.")
    poll_first_s: float = Field(
        30.0, gt=0, description="Provider batches (eval.mode batch): first poll this long after submitting."
    )
    poll_max_s: float = Field(600.0, gt=0, description="Polls back off (x2) up to this interval.")
    poll_window_h: float = Field(
        25.0, gt=0, description="A provider batch not ended after this long is canceled and collected."
    )
    provider_batch_requests: int = Field(
        10_000, ge=1, le=50_000, description="Most requests in one provider batch (OpenAI allows 50,000)."
    )
    events_per_run: int = Field(
        5_000,
        ge=1,
        description="A workflow run whose history reaches this many events starts no more work, lets what is "
        "in flight finish and continues as new (Temporal warns at 10,240; issue 20).",
    )


class EvalRequest(BaseModel):
    """EvalWorkflow's input: evaluate ``deployment``'s active pair against (to_prompt or active, to_model)."""

    deployment: str
    to_model: str
    to_prompt: str | None = None
    epochs: int | None = Field(None, ge=1, le=20, description="None = the deployment's policy.")
    dataset: str | None = Field(None, description="None = the deployment's dataset.")
    no_cache: bool = Field(False, description="Bypass the response cache and baseline reuse.")
    migration: str | None = None
    requested_by: str = "unknown"
    from_model: str | None = Field(
        None,
        description="Baseline model; None = the active model (alias drift compares the previous snapshot).",
    )
    eval_policy: EvalPolicy | None = Field(
        None, description="None = the deployment's policy (a migration passes its own)."
    )
    tuning: EvalTuning = Field(default_factory=EvalTuning)
    resume: EvalCarry | None = Field(
        None, description="Set by EvalWorkflow when it continues as new: what earlier runs did (ids, counts)."
    )


class ArmPlan(BaseModel):
    """One arm of the factorial: its pair and the run that holds (or will hold) its results."""

    arm: ArmName
    pair: str
    prompt: str
    model: str
    run_id: str
    reused: bool = False


class EvalPlan(BaseModel):
    """What an eval will run; small, carried by the workflow."""

    eval_id: str
    deployment: str
    baseline_pair: str
    target_pair: str
    dataset_name: str
    dataset_version: str
    dataset_hash: str
    n_cases: int
    epochs: int
    policy: EvalPolicy
    arms: list[ArmPlan]
    judge: str | None = None
    no_cache: bool = False
    warnings: list[str] = Field(default_factory=list)

    def arm(self, name: str) -> ArmPlan | None:
        """The plan of arm ``name``, or None when the eval does not run it."""
        return next((a for a in self.arms if a.arm == name), None)


class BatchRoute(BaseModel):
    """Where a model's eval batches go and how big they may be (part of the plan the workflow carries)."""

    model_id: str = Field(description="The registry row holding the limits (an alias's snapshot row).")
    calls_per_batch: int = Field(ge=1, description="Most provider calls one batch activity may make.")


class PlanInput(BaseModel):
    """The ``plan_eval`` activity's input: the request, and the eval id its run ids derive from."""

    request: EvalRequest
    eval_id: str


class RoutedEvalPlan(EvalPlan):
    """The plan plus each arm's batch route; histories recorded before routes existed read as no routes."""

    routes: dict[str, BatchRoute] = Field(
        default_factory=dict, description="By arm: the arm model's queue route; absent = the main queue."
    )
    modes: dict[str, Literal["online", "batch"]] = Field(
        default_factory=dict, description="By fresh arm: how its calls are sent (eval.mode); absent = online."
    )
    cached_arms: list[str] = Field(
        default_factory=list,
        description="Rate-limited fresh arms the response cache answers in full at planning: no route (their "
        "batches make no provider call, so they do not wait on the model queue's rate).",
    )


# ---------------------------------------------------------------- batches and summaries


class BatchSpec(BaseModel):
    """One batch activity's input: a case index range of one arm run."""

    run_id: str
    start: int = Field(ge=0, description="First case index (DatasetCase.idx), inclusive.")
    stop: int = Field(description="Last case index, exclusive.")
    no_cache: bool = False
    judge: str | None = None


class BatchResult(BaseModel):
    """What a batch activity did (counts only: the results themselves are stored)."""

    calls: int = Field(description="(case, epoch) pairs of the batch, stored before or now.")
    made: int = Field(0, description="Provider calls made by this execution.")
    cached: int = 0
    errors: int = 0


class ProviderBatchSpec(BaseModel):
    """One provider batch of a batch arm: a case range, the round (0 first, 1 the retry of what failed)."""

    run_id: str
    arm: str
    start: int = Field(ge=0)
    stop: int
    round: int = Field(0, ge=0)
    no_cache: bool = False
    judge: str | None = None
    cancel: bool = Field(False, description="collect: the poll window ran out; cancel the batch first.")

    @property
    def key(self) -> str:
        """The registry's name for this submission (``provider_batches.key``)."""
        return f"{self.run_id}:{self.round}:{self.start}-{self.stop}"


class SubmitResult(BaseModel):
    """What ``submit_provider_batch`` did: the provider's batch id (None: nothing left to send)."""

    key: str
    provider_batch_id: str | None = None
    requests: int = 0
    cached: int = Field(0, description="Calls answered from the response cache instead of being sent.")
    resumed: bool = Field(False, description="The batch had been submitted before (a retried activity).")


class PollResult(BaseModel):
    """A provider batch's state: ended (results ready) or not, and the provider's status word."""

    ended: bool
    status: str


class CollectResult(BaseModel):
    """Results stored from one provider batch; ``failed`` lines are left for the next round."""

    stored: int = 0
    failed: int = 0
    counts: dict[str, int] = Field(default_factory=dict)


class RunSummary(BaseModel):
    """One arm run's statistics, as the summarise activity hands them to the report."""

    run_id: str
    summary: ArmSummary
    cached_calls: int


class SummarizeInput(BaseModel):
    """The ``summarize_eval_run`` activity's input."""

    run_id: str
    confidence: float = 0.95


class ReportInput(BaseModel):
    """The ``build_eval_report`` activity's input: the plan and every arm's summary."""

    plan: EvalPlan
    summaries: list[RunSummary]
    flipped_cap: int = 50


class PreflightInput(BaseModel):
    """The ``preflight_eval`` activity's input: the plan whose requests are tried once each."""

    plan: RoutedEvalPlan


class PreflightResult(BaseModel):
    """What the preflight sent: one call per distinct (prompt, model) of the fresh arms, and the judge's."""

    calls: int = Field(description="Targets tried (a context-length error on a first case tries the next).")
    checked: list[str] = Field(default_factory=list, description="'prompt P on model M', 'the judge on M'.")
    warnings: list[str] = Field(default_factory=list, description="Dropped params, truncation seen.")


# ---------------------------------------------------------------- report and progress


FLIPPED_CAP = 50  # flipped cases carried in a workflow result; the registry keeps them all


class DatasetRef(BaseModel):
    """The golden dataset version an eval ran on."""

    name: str
    hash: str
    cases: int
    version: str | None = None


class ArmReport(BaseModel):
    """One arm in the report (§11 keys first; the rest are additions)."""

    pair: str
    run_id: str
    pass_rate: float
    ci: tuple[float, float]
    mean_score: float
    calls: int
    errors: int
    cached_calls: int
    latency_p50_ms: float
    latency_p95_ms: float
    cost_usd: float
    score_ci: tuple[float, float] | None = None
    reused: bool = Field(False, description="A recent identical run was reused instead of a new one.")
    mcnemar_p: float | None = Field(None, description="Exact McNemar p-value against baseline.")
    by_tag: dict[str, TagStat] = Field(default_factory=dict)
    cached_input_tokens: int = Field(0, description="Input tokens the provider read from its prompt cache.")
    error_kinds: dict[str, int] = Field(
        default_factory=dict,
        description="Errored calls by kind (context_length, truncated, unavailable, ...).",
    )
    truncated_cases: list[str] = Field(
        default_factory=list, description="Cases whose token limit ran out before any text (reasoning)."
    )
    dropped_params: list[str] = Field(
        default_factory=list, description="Prompt parameters the model's request rules kept from being sent."
    )
    mode: Literal["online", "batch"] = Field("online", description="How the arm's calls were sent.")
    online_cost_usd: float | None = Field(
        None, description="What the arm's calls would have cost online (cost_usd is what they cost)."
    )
    batch: dict[str, int] | None = Field(
        None,
        description="Batch arms: batches, requests, succeeded, errored, expired, canceled (all rounds), "
        "retried_in_batch, retried_online.",
    )


class EvalCost(BaseModel):
    """The whole eval's spend: at the prices paid (batch where batched) and at online prices."""

    total_usd: float
    online_equivalent_usd: float
    batch_arms: list[str] = Field(default_factory=list)


class EvalReport(BaseModel):
    """The 2x2 eval's evidence (PRODUCT §11 ``eval --json``, plus report_id, power_note, flipped_count...)."""

    report_id: str
    deployment: str
    baseline_pair: str
    target_pair: str
    dataset: DatasetRef
    epochs: int
    arms: dict[str, ArmReport]
    effects: dict[str, Effect]
    flipped: list[Flip]
    flipped_count: int
    gate: GateDecision
    power_note: str
    confidence: float = Field(0.95, description="Two-sided level of every interval in the report.")
    judge: str | None = None
    warnings: list[str] = Field(default_factory=list)
    cost: EvalCost | None = Field(None, description="Spend of the fresh arms (reused ones cost nothing now).")

    def capped(self, limit: int = FLIPPED_CAP) -> EvalReport:
        """The same report with at most ``limit`` flipped cases (for workflow results)."""
        return self.model_copy(update={"flipped": self.flipped[:limit]})


class ArmProgress(BaseModel):
    """Calls of one arm done so far, of its total."""

    done: int = 0
    total: int = 0


class EvalProgress(BaseModel):
    """The ``progress`` query of EvalWorkflow."""

    phase: str = Field(
        description="planning | preflight | running | summarising | reporting | done | failed | cancelled"
    )
    arms: dict[str, ArmProgress] = Field(default_factory=dict)
    runs: int = Field(1, description="Workflow runs so far (continue-as-new hands over to the next).")


class BatchArmCarry(BaseModel):
    """Where a provider-batch arm stands when EvalWorkflow continues as new."""

    rounds: int = Field(0, description="Provider batch rounds finished.")
    stored: bool = Field(False, description="Every call of the arm is stored: nothing left to run.")
    online_next: int = Field(0, description="Online batches (what batches left) finished: a prefix.")


class EvalCarry(BaseModel):
    """What one EvalWorkflow run hands the next (continue-as-new): ids, counts, cursors; never results.

    The online batches are one deterministic, interleaved list (EvalWorkflow._batches); a run starts them in
    order and finishes every one it started before handing over, so ``next_batch`` is a prefix.
    """

    plan: RoutedEvalPlan
    progress: EvalProgress
    next_batch: int = 0
    batch_arms: dict[str, BatchArmCarry] = Field(default_factory=dict)


class PollCarry(BaseModel):
    """Where a provider batch's polling stands when ProviderBatchWorkflow continues as new."""

    cached: int = 0
    waited: float = 0.0
    delay: float = 0.0
    runs: int = 1


class ProviderBatchJob(BaseModel):
    """ProviderBatchWorkflow's input: submit (once), poll on durable timers, collect one provider batch."""

    spec: ProviderBatchSpec
    tuning: EvalTuning
    resume: PollCarry | None = None


# ---------------------------------------------------------------- activities


@activity.defn
def plan_eval(data: PlanInput) -> RoutedEvalPlan:
    """Validate the request, choose the arms and create their EvalRun rows (idempotent per eval_id)."""
    raise NotImplementedError


@activity.defn
async def preflight_eval(data: PreflightInput) -> PreflightResult:
    """One call per distinct (prompt, model) of the plan; a refusal fails with one line naming the fix."""
    raise NotImplementedError


@activity.defn
async def run_eval_batch(batch: BatchSpec) -> BatchResult:
    """Run the missing (case, epoch) calls of one case range; heartbeats ``{done, total}``."""
    raise NotImplementedError


@activity.defn
async def submit_provider_batch(spec: ProviderBatchSpec) -> SubmitResult:
    """Send the range's missing calls as one provider batch; its id is stored before this returns (once)."""
    raise NotImplementedError


@activity.defn
async def poll_provider_batch(spec: ProviderBatchSpec) -> PollResult:
    """One look at a submitted provider batch (never waits)."""
    raise NotImplementedError


@activity.defn
async def collect_provider_batch(spec: ProviderBatchSpec) -> CollectResult:
    """Store an ended batch's results (cache, score, results table); cancel it first if still running."""
    raise NotImplementedError


@activity.defn
def summarize_eval_run(data: SummarizeInput) -> RunSummary:
    """Summarise one run's stored results and mark it done."""
    raise NotImplementedError


@activity.defn
def build_eval_report(data: ReportInput) -> EvalReport:
    """Effects, flips and the gate; the full report is stored, a capped one is returned to the workflow."""
    raise NotImplementedError


EvalRequest.model_rebuild()
