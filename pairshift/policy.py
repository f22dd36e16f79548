"""The migration policy: the whole vocabulary of evals, canary stages, gates and approvals in one schema.

A policy says how much evidence a migration needs before traffic moves (``eval``), how traffic moves
(``canary``), who may let it move (``approvals``) and where people hear about it (``notice``). Every field
carries its default and a description; ``pairshift apply`` validates policies with this module, so an error
names the field (``canary.stages.0.percent``) and nothing is written.

Durations are hours and may be fractional: demos and tests scale a stage down to seconds
(``min_hours: 0.001``) without a second code path.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pairshift.people import CHANNELS, Channel


class _Strict(BaseModel):
    """Unknown keys are refused everywhere: a typo in a policy must not silently relax a gate."""

    model_config = ConfigDict(extra="forbid")


class EvalPolicy(_Strict):
    """How the 2x2 regression eval is run and judged (PRODUCT §6).

    Every check of the eval gate reads a two-sided interval at ``confidence`` of a comparison paired by case:
    it passes when the interval lies within the allowed bound, fails only when the interval lies wholly beyond
    it (shown worse than allowed), and is inconclusive otherwise (a person decides). Each end of the interval
    errs with probability (1 - confidence) / 2: at the default 0.95, a candidate exactly at a bound passes at
    most 2.5% of the time, and one within its bounds fails at most 2.5% of the time.
    """

    epochs: int = Field(
        3, ge=1, le=20, description="Repeats of every case per arm; > 1 measures nondeterminism."
    )
    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="Two-sided confidence level of every interval in the report and the gate.",
    )
    max_regression: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description=(
            "Non-inferiority margin on the pass rate: the gate passes when the lower end of the paired score "
            "interval of joint - baseline is >= -max_regression, fails when its upper end is below it."
        ),
    )
    blocking: list[str] = Field(
        default_factory=lambda: ["is-json"],
        description=(
            "Assertion types whose failure rate may not rise: the gate fails when the paired interval of the "
            "type's per-case failure rate (joint - baseline) lies wholly above max_new_failure_rate."
        ),
    )
    max_new_failure_rate: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description=(
            "Tolerated rise of a blocking type's failure rate (share of calls, paired by case). 0: a "
            "blocking type fails the gate when its new failures significantly outnumber its new passes."
        ),
    )
    max_cost_ratio: float = Field(
        1.5,
        gt=0,
        description=(
            "Joint / baseline cost per call: fails when the paired bootstrap interval's lower end exceeds "
            "it, passes when its upper end is within it."
        ),
    )
    max_latency_p95_ratio: float = Field(
        1.5,
        gt=0,
        description=(
            "Joint / baseline latency p95 (calls that did not error): fails when the paired bootstrap "
            "interval's lower end exceeds it, passes when its upper end is within it."
        ),
    )
    judge: str | None = Field(
        None,
        min_length=1,
        description="The model that grades model-graded assertions (llm-rubric, model-graded-closedqa, "
        "factuality) and online samples: a model id of the registry. Required when the golden dataset has "
        "model-graded assertions; refused when unknown or retiring within a migration's horizon.",
    )
    mode: Literal["online", "batch", "auto"] = Field(
        "online",
        description=(
            "How an arm's calls are sent: online (the live API, rate limited), batch (the provider's batch "
            "API at half the price: Anthropic Message Batches, OpenAI Batch API; results within 24 h, polled "
            "by durable timers; an arm whose provider has no batch API runs online, with a warning) or auto "
            "(batch when the arm makes more than batch_min_calls calls and its provider offers one)."
        ),
    )
    batch_min_calls: int = Field(
        100, ge=1, description="mode auto: an arm with more calls (cases x epochs) than this goes batch."
    )


class Stage(_Strict):
    """One canary step: route ``percent`` of units to the candidate for at least ``min_hours``.

    A **shadow stage** (``shadow: P`` instead of ``percent``) routes nobody to the candidate: it mirrors P% of
    the units' control requests to the candidate pair in the background, never returns the candidate's answer,
    and is judged pairwise against control on the same inputs (pairshift.shadow). Shadow stages come before
    the first live stage and need ``canary.judge``.
    """

    percent: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Share of units routed to the candidate pair (0 < p <= 100); 0 in a shadow stage.",
    )
    shadow: float | None = Field(
        None,
        gt=0,
        le=100,
        description="A shadow stage: share of units whose control requests are mirrored to the candidate "
        "(answers never served; judged pairwise). Exclusive with percent.",
    )
    min_hours: float = Field(0.0, ge=0, description="The stage holds at least this long before it may pass.")
    max_hours: float | None = Field(
        None, gt=0, description="Past this, an inconclusive stage asks a human; None = min_hours (no soak)."
    )
    approval: bool = Field(False, description="Wait for a human decision before this stage starts.")

    @field_validator("percent", "shadow")
    @classmethod
    def _at_least_one_bucket(cls, percent: float | None) -> float | None:
        # The router routes whole buckets of 10,000 (pairshift.router): a share below half a bucket would
        # run a stage that routes nobody and a gate with no candidate data.
        if percent is not None and percent > 0 and round(percent * 100) < 1:
            raise ValueError(
                f"percent {percent:g} routes no unit: the router splits units into 10,000 buckets, so the "
                "smallest share is 0.01"
            )
        return percent

    @model_validator(mode="after")
    def _hours_ordered(self) -> Stage:
        if self.shadow is not None and self.percent:
            raise ValueError(
                "a stage is live (percent) or shadow (shadow), not both: a shadow stage serves no candidate "
                "answer"
            )
        if self.shadow is None and not self.percent:
            raise ValueError("percent: Input should be greater than 0 (or shadow: P for a shadow stage)")
        if self.max_hours is not None and self.max_hours < self.min_hours:
            raise ValueError(f"max_hours ({self.max_hours}) is less than min_hours ({self.min_hours})")
        return self

    @property
    def label(self) -> str:
        """How reports and notices name the stage's share: ``5%`` or ``shadow 5%``."""
        return f"shadow {self.shadow:g}%" if self.shadow is not None else f"{self.percent:g}%"


class ErrorRateGate(_Strict):
    max_increase: float = Field(
        0.01, ge=0, le=1, description="Candidate error rate - control error rate, at most."
    )


class ScoreGate(_Strict):
    max_decrease: float = Field(
        0.02, ge=0, le=1, description="Control mean score - candidate mean score, at most."
    )


class WinRateGate(_Strict):
    max_decrease: float = Field(
        0.05,
        ge=0,
        lt=0.5,
        description="Shadow stages: 0.5 - the candidate's mean pairwise score against control, at most "
        "(win 1, tie 0.5, loss 0 per judged order; 0.5 is a candidate as good as control).",
    )


class RatioGate(_Strict):
    max_ratio: float = Field(..., gt=0, description="Candidate / control, at most.")


class CanaryMetrics(_Strict):
    """Candidate vs concurrent control. A metric left out is not gated; unknown metric names are refused."""

    error_rate: ErrorRateGate | None = Field(default_factory=ErrorRateGate)
    score: ScoreGate | None = Field(
        default_factory=ScoreGate, description="Used when observations carry a score."
    )
    latency_p95: RatioGate | None = Field(default_factory=lambda: RatioGate(max_ratio=1.3))
    cost_per_call: RatioGate | None = Field(default_factory=lambda: RatioGate(max_ratio=1.5))
    win_rate: WinRateGate | None = Field(
        default_factory=WinRateGate,
        description="Shadow stages only: the candidate's pairwise win rate against control, same inputs.",
    )


def _default_stages() -> list[Stage]:
    return [
        Stage(percent=1, min_hours=2, max_hours=12),
        Stage(percent=5, min_hours=6, max_hours=24),
        Stage(percent=20, min_hours=24, max_hours=72, approval=True),
        Stage(percent=50, min_hours=48, max_hours=96),
        Stage(percent=100),
    ]


PROMQL_PLACEHOLDERS = ("deployment", "variant", "migration", "window")


class PrometheusQueries(_Strict):
    """PromQL per metric (Argo-style analysis templates), each answering one number for one variant.

    ``{{deployment}}``, ``{{variant}}`` (control or candidate), ``{{migration}}`` and ``{{window}}`` (the
    stage's age as a range, e.g. ``5400s``) are filled in per query; every query must name ``{{variant}}``.
    """

    calls: str = Field(..., min_length=1, description="Calls of the variant in the stage (a count).")
    errors: str = Field(..., min_length=1, description="Calls of the variant that errored (a count).")
    invalid: str | None = Field(None, description="Calls with an invalid output (a count); optional.")
    latency_p95_ms: str | None = Field(
        None, description="The variant's p95 latency in ms (required when latency_p95 is gated)."
    )
    cost_usd: str | None = Field(
        None, description="The variant's total cost in USD (required when cost_per_call is gated)."
    )

    @field_validator("calls", "errors", "invalid", "latency_p95_ms", "cost_usd")
    @classmethod
    def _placeholders(cls, query: str | None) -> str | None:
        if query is None:
            return None
        import re

        unknown = sorted(set(re.findall(r"\{\{\s*([^}]*?)\s*\}\}", query)) - set(PROMQL_PLACEHOLDERS))
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {unknown}: use {{{{{'}}, {{'.join(PROMQL_PLACEHOLDERS)}}}}}"
            )
        if "{{variant}}" not in query.replace(" ", ""):
            raise ValueError("the query must select one variant with {{variant}}")
        return query


class PrometheusSource(_Strict):
    """Where a stage's per-variant numbers come from with ``canary.source: prometheus``."""

    url: str = Field(
        ..., pattern=r"^https?://[^\s/]+", description="Prometheus base URL (its /api/v1/query)."
    )
    bearer_token_env: str | None = Field(
        None, pattern=r"^[A-Z][A-Z0-9_]*$", description="NAME of the env var holding a bearer token, if any."
    )
    timeout_s: float = Field(10.0, gt=0, le=120, description="Timeout of one query.")
    queries: PrometheusQueries


class CanaryJudge(_Strict):
    """The canary's sampled judge: a share of served outputs, both arms, scored 0..1 against a rubric; the
    scores feed the ``score`` metric (pairshift.online_judge)."""

    model: str = Field(..., min_length=1, description="The judge model (a registry model id); never guessed.")
    sample_rate: float = Field(
        ..., gt=0, le=1, description="Share of the outputs served during a migration (both arms) it scores."
    )
    rubric: str = Field(
        ..., min_length=1, description="What a good output is; each sample is scored 0..1 on it."
    )
    max_cost_usd_per_day: float = Field(
        ...,
        gt=0,
        description="The judge's spend cap per deployment and UTC day; samples beyond it wait, unscored.",
    )


class ShadowBudget(_Strict):
    """What mirroring a shadow stage may spend, per serving process (each router enforces it on its own calls
    over a sliding hour): requests past either limit are not mirrored, and counted (pairshift.mirror)."""

    max_calls_per_hour: int = Field(
        1000, ge=1, description="Mirrored candidate calls per hour and serving process, at most."
    )
    max_cost_usd_per_hour: float = Field(
        1.0,
        gt=0,
        description="Candidate spend of mirrored calls per hour and serving process, at most (a call starts "
        "only while the hour's spend is below it, so it is exceeded by at most the calls in flight).",
    )
    max_queued: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Mirrored requests waiting for a call slot per process; more are dropped (counted), "
        "never waited for: mirroring never slows the user's request.",
    )


def _shadow_stage() -> Stage:
    return Stage(shadow=5, min_hours=2)


class CanaryPolicy(_Strict):
    """The staged canary on real traffic (PRODUCT §7, §8).

    With a ``judge`` and no ``stages`` given, the default stages start with a shadow stage
    (``{shadow: 5, min_hours: 2}``): the candidate is judged on mirrored requests before it serves anyone.
    """

    source: Literal["builtin", "prometheus"] = Field(
        "builtin",
        description=(
            "Where a stage's metrics come from: builtin (pairshift's observations, per unit) or prometheus "
            "(the PromQL queries of canary.prometheus; error and invalid rates keep the always-valid "
            "decision on call counts, latency p95 and cost per call are compared as point estimates)."
        ),
    )
    prometheus: PrometheusSource | None = Field(None, description="The queries of source: prometheus.")

    stages: list[Stage] = Field(
        default_factory=_default_stages, min_length=1, description="Ordered canary steps."
    )
    check_every_minutes: float = Field(
        15, gt=0, description="How often a stage reads candidate and control metrics."
    )
    metrics: CanaryMetrics = Field(default_factory=CanaryMetrics)
    judge: CanaryJudge | None = Field(
        None,
        description="A sampled judge scoring served outputs at each gate check (input and output, redacted, "
        "kept retention_days); its scores feed the score metric; its cost is reported and capped per day.",
    )
    shadow_budget: ShadowBudget = Field(
        default_factory=ShadowBudget,
        description="Limits of a shadow stage's mirroring (calls and dollars per hour, queue).",
    )
    min_samples: int | Literal["auto"] = Field(
        "auto",
        description="Samples per arm before a stage may pass: a number, or 'auto' (power calculation).",
    )
    alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description=(
            "False-rollback rate the stage gates may spend when the candidate is within every margin: over "
            "the whole canary (split equally over the stages with a control, then over the SRM check and "
            "the gated metrics), or per stage with alpha_scope: stage. Checks may look as often as they like."
        ),
    )
    alpha_scope: Literal["canary", "stage"] = Field(
        "canary",
        description=(
            "canary: alpha bounds the whole canary's false-rollback rate. stage: every stage spends alpha "
            "afresh, so a canary of k stages with a control may falsely roll back up to k * alpha."
        ),
    )
    power: float = Field(0.8, gt=0.5, lt=1, description="Power used by min_samples: auto.")
    max_pause_hours: float | None = Field(
        24,
        gt=0,
        description="A pause holds the candidate's share with gate checks suspended; after this long it ends "
        "by asking for a decision (approve: the stage carries on; reject or no answer: rolled back). "
        "None: a pause lasts until resumed.",
    )

    @model_validator(mode="after")
    def _source_has_queries(self) -> CanaryPolicy:
        if self.judge is not None and "stages" not in self.model_fields_set:
            # the default policy gains a shadow stage when a judge can compare the pair's answers
            self.stages = [_shadow_stage(), *self.stages]
            self.model_fields_set.add("stages")
        if any(s.shadow is not None for s in self.stages) and self.judge is None:
            raise ValueError(
                "a shadow stage is judged pairwise against control: set canary.judge (or remove the shadow "
                "stage)"
            )
        if self.judge is not None and self.metrics.score is None:
            raise ValueError("canary.judge feeds the score metric: set metrics.score (or remove the judge)")
        if self.judge is not None and self.source != "builtin":
            raise ValueError(
                "canary.judge needs source: builtin (its scores go to pairshift's own observations)"
            )
        if self.source == "builtin":
            return self
        if self.prometheus is None:
            raise ValueError("source: prometheus needs canary.prometheus (url and queries)")
        q = self.prometheus.queries
        if self.metrics.latency_p95 is not None and q.latency_p95_ms is None:
            raise ValueError(
                "latency_p95 is gated: set prometheus.queries.latency_p95_ms, or latency_p95: null"
            )
        if self.metrics.cost_per_call is not None and q.cost_usd is None:
            raise ValueError(
                "cost_per_call is gated: set prometheus.queries.cost_usd, or cost_per_call: null"
            )
        return self

    @field_validator("stages")
    @classmethod
    def _percents_increase(cls, stages: list[Stage]) -> list[Stage]:
        # Shadow stages come first: once a live stage served the candidate, mirroring it proves nothing new.
        for i in range(1, len(stages)):
            if stages[i].shadow is not None and stages[i - 1].shadow is None:
                raise ValueError(
                    f"stage {i} is a shadow stage after live stage {i - 1}: shadow stages come before the "
                    "first live stage"
                )
            if stages[i].shadow is not None:
                if stages[i].shadow <= stages[i - 1].shadow:  # type: ignore[operator]
                    raise ValueError(
                        f"stage {i} shadow {stages[i].shadow:g} must be greater than stage {i - 1}'s "
                        f"{stages[i - 1].shadow:g}"
                    )
                continue
            if stages[i - 1].shadow is not None:
                continue
            if stages[i].percent <= stages[i - 1].percent:
                raise ValueError(
                    f"stage {i} percent {stages[i].percent:g} must be greater than stage {i - 1}'s "
                    f"{stages[i - 1].percent:g}"
                )
        return stages

    @field_validator("min_samples")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("min_samples must be 'auto' or a positive number")
        return v


class ApprovalPolicy(_Strict):
    """Who may let traffic move, through which channels, and what happens when nobody answers."""

    approvers: list[str] | Literal["anyone"] = Field(
        default_factory=list,
        description="Names of people (the `people:` section) who may approve; `anyone` lets anybody "
        "approve. Empty: nobody is named, so no approval can move traffic.",
    )
    channels: list[Channel] = Field(
        default_factory=lambda: list(CHANNELS),
        min_length=1,
        description="Where decisions may come from: slack (a verified Slack user), cli (self-asserted "
        "--as), temporal-ui (what the Temporal namespace's authorization lets through).",
    )
    required: int = Field(1, ge=1, description="Distinct approvals needed.")
    separation_of_duties: bool = Field(
        True, description="The requester of a migration cannot approve it (compared as persons)."
    )
    timeout_hours: float = Field(72, gt=0, description="No decision by then = reject (nothing moved).")
    remind_every_hours: float = Field(24, gt=0, description="Reminder cadence while waiting.")

    @property
    def anyone(self) -> bool:
        """Whether anybody may approve (``approvers: anyone``)."""
        return self.approvers == "anyone"

    @property
    def named(self) -> list[str]:
        """The approvers by name (empty for ``anyone``)."""
        return [] if isinstance(self.approvers, str) else list(self.approvers)

    @model_validator(mode="after")
    def _enough_approvers(self) -> ApprovalPolicy:
        if self.named and self.required > len(self.named):
            raise ValueError(
                f"required ({self.required}) exceeds the number of approvers ({len(self.named)})"
            )
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels lists a channel twice")
        return self


class NoticePolicy(_Strict):
    slack_channel: str | None = Field(
        None, description="Channel for notices and buttons; None = log and CLI only."
    )
    fallback_rate: float = Field(
        0.01,
        gt=0,
        le=1,
        description="A notice goes out when more than this share of a deployment's calls over an hour were "
        "served by its fallback chain.",
    )


class Policy(_Strict):
    """A named migration policy (PRODUCT §7)."""

    name: str = Field("default", min_length=1, description="Referenced by deployments.")
    eval: EvalPolicy = Field(default_factory=EvalPolicy)
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)
    approvals: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    notice: NoticePolicy = Field(default_factory=NoticePolicy)


def format_validation_error(exc: Exception, where: str) -> str:
    """One readable line for a pydantic error: ``where: canary.stages.0.percent: Input should be ...``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"{where}: {exc}"
    parts = []
    for err in errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{where}: " + "; ".join(parts)
