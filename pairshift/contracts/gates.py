"""The verdicts of the gates as they cross the Temporal boundary: the eval gate's and a canary stage check's.

Computed by :mod:`pairshift.gates` (pure statistics); carried in the eval report and returned by the
``check_stage`` activity to MigrationWorkflow.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from pairshift.contracts.quality import JudgeStatus


class GateDecision(BaseModel):
    """The eval gate: pass, fail, or inconclusive (a human decides), and why."""

    decision: Literal["pass", "fail", "inconclusive"]
    reasons: list[str]


class StageCheck(BaseModel):
    """One check of a canary stage: breach (roll back), pass, inconclusive (soak on) or srm (broken split)."""

    decision: Literal["breach", "pass", "inconclusive", "srm"]
    reasons: list[str]
    metrics: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per metric: control, candidate, estimate, bound, limit, alpha, verdict.",
    )
    min_samples: int
    samples: dict[str, int]
    lost: dict[str, int] = Field(
        default_factory=dict, description="Per variant: calls writers lost before the store"
    )
    judge: JudgeStatus | None = Field(None, description="The canary judge's spend per stage (canary.judge).")
