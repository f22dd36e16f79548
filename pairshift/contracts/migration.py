"""Every type that crosses the MigrationWorkflow boundary: its input, signals, update, queries and results.

One pydantic model per argument, so the Temporal UI's Start Workflow and Signal forms can send plain JSON
(PRODUCT §8). Imported by the workflow, the activities and the clients (CLI, API, Slack).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

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
TERMINAL_PHASES: frozenset[str] = frozenset({"promoted", "rolled_back", "rejected", "failed_eval", "dry_run"})


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
    policy: dict[str, Any] | None = Field(None, description="An inline policy overriding the deployment's.")
    dry_run: bool = Field(False, description="Notice and evals only; no approval, no traffic moves.")
    checks_per_run: int = Field(
        400,
        ge=1,
        description="Gate checks per workflow run before it continues as new (keeps each history small).",
    )
    resume: MigrationCarry | None = Field(
        None, description="Internal: the state a continued-as-new run resumes from. Leave null."
    )


class Actor(BaseModel):
    by: str = Field(..., min_length=1)
    channel: str = "temporal-ui"


class ApproveSignal(Actor):
    comment: str | None = None


class RejectSignal(Actor):
    comment: str | None = None


class PauseSignal(Actor):
    pass


class ResumeSignal(Actor):
    pass


class AbortSignal(Actor):
    reason: str = "aborted"


class PromoteNowSignal(Actor):
    pass


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
    phase: str
    stage: int | None
    approvals: int
    required: int


class Approval(BaseModel):
    by: str
    decision: Literal["approve", "reject"]
    at: datetime
    channel: str
    stage: int | None
    comment: str | None = None


class HistoryEvent(BaseModel):
    at: datetime
    event: str
    detail: str = ""


class StageStatus(BaseModel):
    index: int
    percent: float
    started_at: datetime | None
    min_hours: float
    max_hours: float | None
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
    phase: str
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


class MigrationResult(BaseModel):
    id: str
    deployment: str
    phase: str
    from_pair: str | None
    to_pair: str | None
    outcome: str


class MigrationCarry(BaseModel):
    """What a long canary hands to its next run when it continues as new (history stays small; ids stay)."""

    origin_run_id: str = Field(
        ..., description="The first run's id: owns the split, the migrations row, the audit log."
    )
    plan: dict[str, Any]
    eval_report: dict[str, Any] | None = None
    stage_index: int
    stage_since: datetime
    stage_elapsed_hours: float
    votes: dict[str, dict[str, str]] = Field(default_factory=dict)
    approvals: list[Approval] = Field(default_factory=list)
    history: list[HistoryEvent] = Field(default_factory=list)
    stage_log: list[dict[str, Any]] = Field(default_factory=list)
    seq: int = 0
    paused: bool = False
    abort: AbortSignal | None = None
    promote_now_by: str | None = None
    runs: int = 1


MigrationRequest.model_rebuild()
