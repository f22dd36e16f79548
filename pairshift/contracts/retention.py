"""RetentionWorkflow's boundary: fold observations older than ``retention_days`` into daily rollups."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from temporalio import activity

from pairshift.observations.retention import RollupResult


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
