"""A canary stage's quality figures as they cross the Temporal boundary (issue 17 item 4).

When a live stage ends (it passes, breaches, or asks a human), MigrationWorkflow asks the ``stage_quality``
activity for the stage's figures (:mod:`pairshift.stage_quality` computes them from stored data) and posts
them in the migration's Slack thread as a ``stage_quality`` notice
(:mod:`pairshift.slack.stage_quality` renders it). Everything here is bounded: a few checks and at most
:data:`EXAMPLES_PER_ARM` examples of at most :data:`EXAMPLE_CHARS` characters per arm, so the figures fit a
workflow history and a Slack message.

The same per-stage types serve ``pairshift migrate report``: :class:`StageCheckRate` (invalid rate by online
check, per stage and variant) and :class:`JudgeSpend` (what the canary judge scored and spent per stage).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field
from temporalio import activity

EXAMPLES_PER_ARM = 2  # example outputs a stage's message shows per arm
EXAMPLE_CHARS = 300  # characters of an example's input and output in a message
CHECKS_PER_ARM = 3  # failing checks a stage's message names per arm

StageEnd = Literal["passed", "breach", "asks", "promote_now"]


class StageCheckRate(BaseModel):
    """How often outputs of one variant failed one online check (or app callback) in one stage."""

    percent: float
    variant: str
    check: str
    calls: int = Field(description="Invalid calls whose detail names this check.")
    of_calls: int = Field(description="The variant's calls in the stage's time window (the denominator).")
    rate: float


class JudgeSpend(BaseModel):
    """What the canary judge did in one stage: samples scored, replies it could not read, what it cost."""

    percent: float
    judged: int = 0
    unreadable: int = 0
    cost_usd: float = 0.0


class Example(BaseModel):
    """One redacted output of a stage (already redacted and bounded when stored; cut again for Slack)."""

    kind: Literal["invalid", "judged"]
    why: str = Field(description="The failing check, or the judge's score.")
    input: str
    output: str


class ArmQuality(BaseModel):
    """One arm (variant) of a stage: calls, invalid rate (overall and by its top checks), the judged score."""

    variant: str
    calls: int = 0
    invalid_rate: float = 0.0
    invalid_ci: tuple[float, float] = (0.0, 0.0)
    checks: list[StageCheckRate] = Field(default_factory=list)
    judged: int = 0
    judged_score: float | None = None
    judged_ci: tuple[float, float] | None = None
    examples: list[Example] = Field(default_factory=list)


class StageQuality(BaseModel):
    """One stage's figures when it ended: both arms, and the judge's spend (stage and day) when it has one."""

    deployment: str
    index: int
    percent: float
    ended: StageEnd
    why: str = ""
    arms: list[ArmQuality] = Field(default_factory=list)
    judge: str | None = None
    judge_stage: JudgeSpend | None = None
    judge_spent_today_usd: float | None = None
    judge_cap_usd: float | None = None


class JudgeStatus(BaseModel):
    """The canary judge's cost as figures (``migrate status --json`` key ``judge``): per stage of the
    migration what it scored and spent, and its spend today for the deployment against the daily cap."""

    model: str
    cap_usd: float
    spent_today_usd: float = 0.0
    stages: list[JudgeSpend] = Field(default_factory=list)


class StageQualityInput(BaseModel):
    """``stage_quality``'s input: the stage (split key and percent) and its time window."""

    deployment: str
    migration: str  # the split key observations carry (workflow id/first run id)
    index: int
    percent: float
    since: datetime
    until: datetime
    ended: StageEnd
    why: str = ""
    judge: str | None = None  # canary.judge.model, when the policy has a judge
    judge_cap_usd: float | None = None


@activity.defn
def stage_quality(inp: StageQualityInput) -> StageQuality:
    """A stage's quality figures from the registry (observations, unit aggregates, output samples)."""
    raise NotImplementedError
