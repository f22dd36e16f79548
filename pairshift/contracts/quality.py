"""A canary stage's quality figures as they cross the Temporal boundary (issue 17 item 4).

When a stage ends (it passes, breaches, or asks a human; a shadow stage too since the patch
``shadow-stage-quality``), MigrationWorkflow asks the ``stage_quality`` activity for the stage's figures
(:mod:`pairshift.stage_quality` computes them from stored data) and posts them in the migration's Slack
thread as a ``stage_quality`` notice (:mod:`pairshift.slack.stage_quality` renders it). Everything here is
bounded: a few checks and at most :data:`EXAMPLES_PER_ARM` examples of at most :data:`EXAMPLE_CHARS`
characters per arm (a shadow stage: side-by-side examples), so the figures fit a workflow history and a
Slack message.

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


class SideBySide(BaseModel):
    """One mirrored request of a shadow stage: both outputs for the same input and the judge's two verdicts
    (redacted when stored; cut to :data:`EXAMPLE_CHARS` characters here)."""

    input: str
    control: str
    candidate: str
    verdict: str


class ShadowQuality(BaseModel):
    """A shadow stage's pairwise figures: the candidate's win rate over the judged pairs (1 win, 0.5 tie, 0
    loss, averaged over both orders) with its unit-clustered 95% interval, and a few side-by-side examples,
    worst for the candidate first. Its ``arms`` are both arms over the same mirrored requests."""

    shadow: float = Field(description="The share of units whose requests were mirrored (none served).")
    mirrored: int = 0
    judged: int = 0
    wins: int = 0
    ties: int = 0
    losses: int = 0
    win_rate: float | None = None
    win_rate_ci: tuple[float, float] | None = None
    examples: list[SideBySide] = Field(default_factory=list)


class StageQuality(BaseModel):
    """One stage's figures when it ended: both arms, and the judge's spend (stage and day) when it has one;
    a shadow stage's pairwise figures in ``shadow``."""

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
    shadow: ShadowQuality | None = None


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
    shadow: float | None = None  # a shadow stage's mirror share (its percent is 0)


@activity.defn
def stage_quality(inp: StageQualityInput) -> StageQuality:
    """A stage's quality figures from the registry (observations, unit aggregates, output samples)."""
    raise NotImplementedError
