"""RetentionWorkflow's boundary: fold observations older than ``retention_days`` into daily rollups."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from temporalio import activity


class RollupResult(BaseModel):
    """What one retention run did."""

    cutoff: datetime = Field(description="Observations stamped before this were rolled up (UTC).")
    days: int = Field(0, description="Days (or parts of days) rolled up.")
    rolled_up: int = Field(0, description="Observations folded into rollups and deleted.")
    rollup_rows: int = Field(0, description="Rollup rows written or added to.")
    kept_live: int = Field(0, description="Observations older than the cutoff kept: their migration runs.")
    samples_deleted: int = Field(
        0, description="Example outputs and shadow pairs older than the cutoff, deleted."
    )


class RetentionRequest(BaseModel):
    """RetentionWorkflow's input (the daily Schedule sends ``{}``)."""

    retention_days: int | None = Field(
        None,
        ge=1,
        le=3650,
        description="Keep this many days of calls; None = the worker's PAIRSHIFT_RETENTION_DAYS.",
    )


class RollUpOrder(BaseModel):
    """The activity's input: the workflow's clock (deterministic) and the days to keep."""

    now: datetime
    retention_days: int | None = None


@activity.defn
def roll_up_observations(order: RollUpOrder) -> RollupResult:
    """Fold observations older than the retention into daily rollups and delete them (idempotent)."""
    raise NotImplementedError
