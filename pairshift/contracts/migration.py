"""MigrationWorkflow's boundary: its input, signals, update, queries and results, its plan and its activities.

One pydantic model per argument, so the Temporal UI's Start Workflow and Signal forms can send plain JSON
(PRODUCT §8). Imported by the workflow, the activities and the clients (CLI, API, Slack).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from temporalio import activity

from pairshift.contracts.evals import EvalReport
from pairshift.contracts.gates import StageCheck
from pairshift.contracts.notices import Notice
from pairshift.contracts.quality import JudgeStatus
from pairshift.people import People
from pairshift.policy import CanaryPolicy, Policy, Stage

Phase = Literal[
    "notice",
    "evaluating",
    "awaiting_approval",
    "canary",
    "promoted",
    "rolled_back",
    "rejected",
    "failed_eval",
    "dry_run",
]
TERMINAL_PHASES: frozenset[Phase] = frozenset(
    {"promoted", "rolled_back", "rejected", "failed_eval", "dry_run"}
)
Decision = Literal["approve", "reject"]


def pair_id(prompt: str, model: str) -> str:
    """``support-triage@37+claude-sonnet-4-20250514`` (PRODUCT §2)."""
    return f"{prompt}+{model}"


def migration_id(deployment: str) -> str:
    """One live migration per deployment: the workflow id is deterministic (PRODUCT §8)."""
    return f"migration-{deployment}"


class MigrationRequest(BaseModel):
    """The workflow input: one JSON object, startable from the Temporal UI."""

    deployment: str = Field(..., min_length=1)
    to_model: str = Field(..., min_length=1)
    to_prompt: str | None = Field(None, description="name@version; None keeps the active prompt.")
    reason: Literal["manual", "deprecation", "alias-drift"] = "manual"
    requested_by: str = "unknown"
    policy: dict[str, Any] | None = Field(
        None,
        description="Refused when set: policies are registry objects the deployment names (pairshift apply).",
    )
    dry_run: bool = Field(False, description="Notice and evals only; no approval, no traffic moves.")
    checks_per_run: int = Field(
        400,
        ge=1,
        description="Gate checks per workflow run before it continues as new (keeps each history small).",
    )
    resume: MigrationCarry | None = Field(
        None,
        description="Internal: the state a continued-as-new run resumes from; a start that carries it is "
        "refused. Leave null.",
    )


class Actor(BaseModel):
    """Who sent a message, and through which channel (``temporal-ui``, ``cli``, ``slack``)."""

    by: str = Field(..., min_length=1)
    channel: str = "temporal-ui"


class ApproveSignal(Actor):
    """Approve the decision that is waiting (the Temporal UI's path; the policy may ignore it)."""

    comment: str | None = None
    stage: int | None = Field(
        None, ge=0, description="The stage this decision is for (status: waiting.stage); another is ignored."
    )


class RejectSignal(Actor):
    """Reject the decision that is waiting: the migration stops (rolled back once traffic moved)."""

    comment: str | None = None
    stage: int | None = Field(
        None, ge=0, description="The stage this decision is for (status: waiting.stage); another is ignored."
    )


class PauseSignal(Actor):
    """Stop the stage clock: no gate checks, no stage passes, until ``resume``."""


class ResumeSignal(Actor):
    """Start the stage clock again after ``pause``."""


class AbortSignal(Actor):
    """End the migration now; traffic goes back to the baseline pair."""

    reason: str = "aborted"


class PromoteNowSignal(Actor):
    """Skip the remaining stages and promote (an approver only, not the requester)."""


class DecideUpdate(BaseModel):
    """The CLI and Slack path: validated synchronously, answered with the new phase."""

    by: str = Field(..., min_length=1)
    decision: Literal["approve", "reject"]
    comment: str | None = None
    stage: int | None = Field(
        None, description="The stage the decision is about; None = whatever is waiting."
    )
    channel: str = "cli"


class RefusedAttempt(BaseModel):
    """A client reports a decision the update validator refused, so the audit log records the attempt."""

    by: str
    decision: str
    reason: str
    channel: str = "cli"
    stage: int | None = None


class DecideResult(BaseModel):
    """What ``decide`` answers: the phase the decision leads to, and the approvals the stage has so far."""

    phase: Phase
    stage: int | None
    approvals: int
    required: int


class Approval(BaseModel):
    """One decision as recorded: who, what, when, through which channel, on which stage."""

    by: str
    decision: Literal["approve", "reject"]
    at: datetime
    channel: str
    stage: int | None
    comment: str | None = None
    person: str | None = Field(
        None, description="The person behind ``by`` (the `people:` section), if known."
    )


class HistoryEvent(BaseModel):
    """One line of the migration's history in the ``status`` query (the audit log keeps all)."""

    at: datetime
    event: str
    detail: str = ""


class StageStatus(BaseModel):
    """The canary stage in progress: its share, its clock, its samples and its last gate check."""

    index: int
    percent: float
    started_at: datetime | None
    min_hours: float
    max_hours: float | None
    shadow: float | None = None  # a shadow stage: the mirrored share (percent is 0: nobody is served by it)
    elapsed_hours: float = 0.0
    time_left_hours: float | None = None
    paused: bool = False
    samples: dict[str, int] = Field(default_factory=lambda: {"control": 0, "candidate": 0})
    decision: str | None = None
    gate: dict[str, Any] | None = None


class Waiting(BaseModel):
    """What a human is asked to decide: start canary stage ``stage`` (key start-k) or pass it (key pass-k)."""

    stage: int
    key: str
    why: str
    since: datetime


class MigrationStatus(BaseModel):
    """The `status` query and `migrate status --json` (PRODUCT §11)."""

    id: str
    deployment: str
    phase: Phase
    reason: str
    requested_by: str
    from_pair: str | None = None
    to_pair: str | None = None
    eval: dict[str, Any] | None = None
    stage: StageStatus | None = None
    waiting: Waiting | None = None
    approvals: list[Approval] = Field(default_factory=list)
    history: list[HistoryEvent] = Field(default_factory=list)
    outcome: str | None = None
    judge: JudgeStatus | None = Field(
        None,
        description="canary.judge: samples scored and spend per stage, spend today (as of the last check).",
    )


class MigrationResult(BaseModel):
    """How a migration ended (the workflow's result)."""

    id: str
    deployment: str
    phase: Phase
    from_pair: str | None
    to_pair: str | None
    outcome: str


class MigrationPlan(BaseModel):
    """A request resolved against the registry: the deployment, both pairs, the dataset and the policy."""

    deployment: str
    from_prompt: str
    from_model: str
    to_prompt: str
    to_model: str
    dataset: str | None
    policy: Policy
    people: People | None = Field(
        None,
        description="The registry's people when the migration was planned: approvals and separation of "
        "duties compare persons. None in plans recorded before people existed (names compared as sent).",
    )
    app_prompt: str | None = Field(
        None,
        description="A `prompt: external` deployment: the prompt version the app stated (X-Pairshift-Prompt) "
        "when the migration was planned; both pairs are (that version, their snapshot). None otherwise.",
    )

    @property
    def from_pair(self) -> str:
        """The pair serving the deployment when the migration started (the baseline)."""
        return pair_id(self.from_prompt, self.from_model)

    @property
    def to_pair(self) -> str:
        """The target pair."""
        return pair_id(self.to_prompt, self.to_model)


class StageOutcome(BaseModel):
    """How one canary stage ended, for the ledger's evidence."""

    stage: int
    percent: float
    decision: str
    elapsed_hours: float
    samples: dict[str, int]


class AuditIn(BaseModel):
    """An audit event as the workflow hands it over; ``key`` makes a retried write idempotent."""

    key: str
    event: str
    at: datetime
    actor: str | None = None
    channel: str | None = None
    stage: int | None = None
    accepted: bool = True
    detail: dict[str, Any] = {}


class MigrationCarry(BaseModel):
    """What a long canary hands to its next run when it continues as new (history stays small; ids stay)."""

    origin_run_id: str = Field(
        ..., description="The first run's id: owns the split, the migrations row, the audit log."
    )
    plan: MigrationPlan
    eval_report: EvalReport | None = None
    stage_index: int
    stage_since: datetime
    stage_elapsed_hours: float
    votes: dict[str, dict[str, Decision]] = Field(default_factory=dict)
    approvals: list[Approval] = Field(default_factory=list)
    history: list[HistoryEvent] = Field(default_factory=list)
    stage_log: list[StageOutcome] = Field(default_factory=list)
    seq: int = 0
    paused: bool = False
    abort: AbortSignal | None = None
    promote_now_by: str | None = None
    runs: int = 1
    notices: list[Notice] = Field(
        default_factory=list, description="Notices the previous run had not delivered (it does not wait)."
    )
    audit: list[AuditIn] = Field(
        default_factory=list, description="Audit events the previous run had not written yet."
    )
    judge: JudgeStatus | None = None  # the canary judge's figures as of the last check


MigrationRequest.model_rebuild()


# ---------------------------------------------------------------- activity inputs


class PrepareInput(BaseModel):
    """``prepare_migration``'s input: the request and the ids of the run that records it."""

    workflow_id: str
    run_id: str
    deployment: str
    to_model: str
    to_prompt: str | None
    policy: dict[str, Any] | None
    reason: str
    requested_by: str

    @classmethod
    def of(cls, req: MigrationRequest, *, workflow_id: str, run_id: str) -> PrepareInput:
        """The input for ``req`` started as run ``run_id`` of ``workflow_id``."""
        fields = req.model_dump(
            include={"deployment", "to_model", "to_prompt", "policy", "reason", "requested_by"}
        )
        return cls(workflow_id=workflow_id, run_id=run_id, **fields)


class PhaseInput(BaseModel):
    """``record_migration_phase``'s input: the phase the migrations row moves to."""

    run_id: str
    phase: Phase
    summary: dict[str, Any] | None = None
    finished: bool = False


class AuditBatch(BaseModel):
    """``record_audit_events``'s input: events of one run, each written once."""

    workflow_id: str
    run_id: str
    events: list[AuditIn]


class _TrafficInput(BaseModel):
    """A traffic move of one migration; each subclass's fields are exactly its split function's keywords."""

    deployment: str
    migration: str


class SplitInput(_TrafficInput):
    """``set_canary_split``'s input: the stage's share of traffic for the target pair."""

    prompt: str
    model: str
    percent: float
    shadow: float = 0.0  # a shadow stage: the share of units whose control requests are mirrored (percent 0)


class RestoreInput(_TrafficInput):
    """``restore_baseline``'s input: why traffic goes back, and the evidence for the ledger."""

    reason: str
    by: str
    evidence: dict[str, Any] = {}


class PromoteInput(_TrafficInput):
    """``promote_pair``'s input: the new active pair and the evidence that ships it."""

    prompt: str
    model: str
    by: str
    reason: str
    evidence: dict[str, Any]


class StageCheckInput(BaseModel):
    """``check_stage``'s input: which stage of which split to judge, and how long it has run."""

    deployment: str
    migration: str
    since: datetime
    percent: float
    canary: CanaryPolicy
    elapsed_hours: float
    min_hours: float
    shadow: float | None = None  # a shadow stage (percent 0): judged pairwise on the mirrored requests


class StageWatchInput(BaseModel):
    """``StageWatchWorkflow``'s input: the live stage a person's decision leaves running, to keep checking."""

    check: StageCheckInput  # the stage's split, and how long it had run when the decision began
    index: int
    stage: Stage


class StageWatchResult(BaseModel):
    """How a watch ended by itself: the gate breached (a cancelled watch returns nothing)."""

    why: str
    check: StageCheck
    checks: int
    elapsed_hours: float


# ---------------------------------------------------------------- activities


@activity.defn
def prepare_migration(req: PrepareInput) -> MigrationPlan:
    """Resolve the request into a plan and record the migration; a bad request fails without retries."""
    raise NotImplementedError


@activity.defn
def record_migration_phase(inp: PhaseInput) -> None:
    """Move the migrations row to a phase (and mark it finished)."""
    raise NotImplementedError


@activity.defn
def record_audit_events(batch: AuditBatch) -> int:
    """Append the events not stored yet; returns how many were new."""
    raise NotImplementedError


@activity.defn
def set_canary_split(inp: SplitInput) -> datetime:
    """Route the stage's share to the candidate; returns when it took effect (metrics count from then)."""
    raise NotImplementedError


@activity.defn
def restore_baseline(inp: RestoreInput) -> bool:
    """100% back to the active pair; when traffic had moved, the ledger says so and why."""
    raise NotImplementedError


@activity.defn
def promote_pair(inp: PromoteInput) -> bool:
    """Make the target pair active and write it to the ledger with its evidence."""
    raise NotImplementedError


@activity.defn
def check_stage(inp: StageCheckInput) -> StageCheck:
    """Read the stage's per-unit aggregates of candidate and control and judge them (the pure stage gate)."""
    raise NotImplementedError
