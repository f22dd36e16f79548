"""DeprecationScanWorkflow's boundary: its request and result, the scan's plan, and its activities.

The scan's decisions are :func:`pairshift.deprecation_plan.plan_scan`'s (pure); these are their shapes.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field
from temporalio import activity

from pairshift.contracts.notices import Notice


class ScanRequest(BaseModel):
    """The scan's input; the Schedule sends ``{}`` (today = the workflow's clock, UTC)."""

    today: date | None = Field(None, description="Scan as of this day; None = today (workflow time, UTC).")
    lead_days: int = Field(60, ge=1, le=366, description="Act on snapshots retiring within this many days.")


class PlannedReminder(BaseModel):
    """A reminder the scan decided is due (sent once per deployment, snapshot and threshold)."""

    deployment: str
    model: str = Field(description="The retiring snapshot.")
    days_before: int = Field(description="The threshold this reminder is for; 0 = already retired.")
    days_left: int
    retires_on: date
    replacement: str | None
    also_marks: list[int] = Field(
        default_factory=list, description="Larger thresholds recorded as sent silently."
    )
    needs_human: str | None = Field(None, description="Why no migration starts by itself; None = one does.")


class PlannedStart(BaseModel):
    """A deprecation migration the scan decided to start."""

    deployment: str
    from_model: str = Field(description="The retiring snapshot.")
    to_model: str


class RetiredFlag(BaseModel):
    """A deployment still on a retired snapshot: its calls fail."""

    deployment: str
    model: str
    retired_on: date
    replacement: str | None


class ScanPlan(BaseModel):
    """Everything one scan decided (:func:`pairshift.deprecation_plan.plan_scan`)."""

    today: date
    lead_days: int
    reminders: list[PlannedReminder] = Field(default_factory=list)
    starts: list[PlannedStart] = Field(default_factory=list)
    flags: list[RetiredFlag] = Field(default_factory=list)
    left_alone: list[str] = Field(
        default_factory=list, description="Affected deployments with a live migration."
    )
    blocked: dict[str, str] = Field(
        default_factory=dict, description="Deployment -> why its start was refused."
    )


class StartedMigration(BaseModel):
    """A migration the scan started."""

    deployment: str
    id: str
    from_model: str
    to_model: str


class ScanResult(BaseModel):
    """What one scan did: migrations started, reminders sent, deployments flagged or left alone."""

    today: date
    started: list[StartedMigration] = Field(default_factory=list)
    already_running: list[str] = Field(default_factory=list, description="Left alone: a migration is live.")
    reminders: list[SentReminder] = Field(default_factory=list)
    flags: list[RetiredFlag] = Field(
        default_factory=list, description="Deployments still on a retired snapshot."
    )
    blocked: dict[str, str] = Field(
        default_factory=dict, description="Deployment -> why nothing was started."
    )


# ---------------------------------------------------------------- activities


class ScanInput(BaseModel):
    """``plan_deprecation_scan``'s input."""

    today: date
    lead_days: int


class RemindersInput(BaseModel):
    """``record_deprecation_reminders``'s input: the due reminders and what the scan did."""

    reminders: list[PlannedReminder]
    started: dict[str, str] = Field(default_factory=dict, description="deployment -> migration workflow id")
    left_alone: list[str] = Field(default_factory=list)
    blocked: dict[str, str] = Field(default_factory=dict)


class SentReminder(BaseModel):
    """A reminder recorded now, with the notice the workflow sends."""

    deployment: str
    model: str
    days_before: int
    title: str
    notice: Notice


@activity.defn
def plan_deprecation_scan(inp: ScanInput) -> ScanPlan:
    """Load deployments, models, sent reminders and relevant migrations; plan; validate each planned start."""
    raise NotImplementedError


@activity.defn
def record_deprecation_reminders(inp: RemindersInput) -> list[SentReminder]:
    """Record each due reminder once and return the notices of those recorded now (a retry repeats none)."""
    raise NotImplementedError
