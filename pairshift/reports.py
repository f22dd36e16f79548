"""The eval report: its shape (``pairshift eval --json``, PRODUCT §11) and its Markdown and HTML renderings.

:class:`EvalReport` is the one report type: EvalWorkflow returns it (capped: ids and summaries only), the
registry keeps the full one, the CLI prints it as JSON, and :func:`render_markdown` / :func:`render_html` turn
it into text for terminals and Slack, or a self-contained HTML file whose charts are inline SVG (no scripts,
no CDN, no external asset: the file opens offline and can be attached to a ticket).

Both renderings come from Jinja2 templates in ``pairshift/templates`` run in a sandboxed environment (report
text carries model outputs, i.e. untrusted input); the HTML one autoescapes. The chart geometry (bar widths,
error-bar ends) is computed here in Python, so the templates only place numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel

from pairshift.contracts.evals import ArmReport, ArmSummary, DatasetRef, Effect, EvalCost, EvalReport, Flip
from pairshift.contracts.gates import GateDecision
from pairshift.gates import eval_gate
from pairshift.paired import blocking_change, paired_ratios, per_case_discordance, power_note
from pairshift.policy import EvalPolicy
from pairshift.stats import ArmOutcomes, Outcomes, factorial, flipped, mcnemar

TEMPLATES = Path(__file__).parent / "templates"
ARM_ORDER = ("baseline", "prompt_only", "model_only", "joint")
EFFECT_ORDER = ("prompt", "model", "interaction", "joint")


class ArmFacts(BaseModel):
    """The provider side of one arm: cache use, errors by kind, truncated cases, dropped params."""

    cached_input_tokens: int = 0
    error_kinds: dict[str, int] = {}
    truncated_cases: list[str] = []
    dropped_params: list[str] = []
    mode: Literal["online", "batch"] = "online"
    online_cost_usd: float | None = None
    batch: dict[str, int] | None = None


class ArmSpend(BaseModel):
    """What an arm's stored results cost: all of them, and the calls this run paid for (not cached)."""

    cost_usd: float = 0.0  # every result, batch lines at batch prices
    online_usd: float = 0.0  # every result at online prices
    spent_usd: float = 0.0  # results not served from the response cache
    spent_online_usd: float = 0.0  # the same calls at online prices


# Errors that belong to the pair, not to the day the eval ran: re-running does not change them, so they count
# as the arm's failed cases without making a passing gate inconclusive.
PAIR_ERROR_KINDS = frozenset({"context_length"})


class ArmInput(BaseModel):
    """What :func:`assemble_report` needs of one arm that ran (or was reused)."""

    arm: str
    pair: str
    run_id: str
    reused: bool = False
    summary: ArmSummary
    cached_calls: int = 0
    facts: ArmFacts = ArmFacts()
    spend: ArmSpend | None = None


def assemble_report(
    *,
    report_id: str,
    deployment: str,
    baseline_pair: str,
    target_pair: str,
    dataset: DatasetRef,
    epochs: int,
    policy: EvalPolicy,
    arms: list[ArmInput],
    outcomes: Mapping[str, Outcomes],
    judge: str | None = None,
    warnings: list[str] | None = None,
) -> EvalReport:
    """The report from per-arm summaries and outcomes: effects, McNemar, flips, the gate (pure, no I/O).

    When only one factor changes, its arm *is* the joint pair: ``arms["joint"]`` repeats it (PRODUCT §11).
    A gate that would pass while calls errored is downgraded to inconclusive: errors are counted as failed
    cases, so an outage in the baseline arm could otherwise make the target look better than it is. Errors of
    the pair itself (an input longer than the model's context window) are failed cases and nothing more.
    """
    folded = {name: ArmOutcomes.of(o) for name, o in outcomes.items()}  # each arm folded once
    by_name = {a.arm: a for a in arms}
    joint_name = (
        "joint" if "joint" in by_name else next(n for n in ("model_only", "prompt_only") if n in by_name)
    )
    effects = factorial(
        folded["baseline"],
        folded.get("prompt_only"),
        folded.get("model_only"),
        folded.get("joint"),
        policy.confidence,
    )
    flips: list[Flip] = []
    rows: dict[str, ArmReport] = {}
    for a in arms:
        p = None
        if a.arm != "baseline":
            p = mcnemar(folded["baseline"], folded[a.arm]).p_value
            flips += flipped(folded["baseline"], folded[a.arm], "baseline", a.arm)
        s = a.summary
        rows[a.arm] = ArmReport(
            pair=a.pair,
            run_id=a.run_id,
            pass_rate=s.pass_rate,
            ci=s.ci,
            mean_score=s.mean_score,
            calls=s.calls,
            errors=s.errors,
            cached_calls=a.cached_calls,
            latency_p50_ms=s.latency_p50_ms,
            latency_p95_ms=s.latency_p95_ms,
            cost_usd=a.spend.cost_usd if a.spend is not None else s.cost_usd,
            score_ci=s.score_ci,
            reused=a.reused,
            mcnemar_p=p,
            by_tag=s.by_tag,
            **a.facts.model_dump(),
        )
    rows["joint"] = rows[joint_name]
    base, joint = folded["baseline"], folded[joint_name]
    ratios = paired_ratios(base, joint, ("cost", "latency_p95"), policy.confidence)  # one set of resamples
    gate = eval_gate(
        effects["joint"],
        {kind: blocking_change(base, joint, kind, policy.confidence) for kind in policy.blocking},
        ratios["cost"],
        ratios["latency_p95"],
        policy,
        latency_unmeasured=_batched(rows["baseline"], rows["joint"]),
    )
    errored = sum(
        a.summary.errors - sum(n for kind, n in a.facts.error_kinds.items() if kind in PAIR_ERROR_KINDS)
        for a in arms
    )
    if errored and gate.decision == "pass":
        gate = GateDecision(
            decision="inconclusive",
            reasons=[
                *gate.reasons,
                f"{errored} call(s) failed at the "
                "provider and count as failed cases; re-run the eval (cached calls are free)",
            ],
        )
    return EvalReport(
        report_id=report_id,
        deployment=deployment,
        baseline_pair=baseline_pair,
        target_pair=target_pair,
        dataset=dataset,
        epochs=epochs,
        arms=rows,
        effects=effects,
        flipped=flips,
        flipped_count=len(flips),
        gate=gate,
        judge=judge,
        warnings=warnings or [],
        power_note=power_note(
            dataset.cases, per_case_discordance(base, joint), policy.max_regression, policy.confidence
        ),
        confidence=policy.confidence,
        cost=_eval_cost(arms),
    )


def _batched(baseline: ArmReport, joint: ArmReport) -> str | None:
    """Why the latency ratio cannot be judged: an arm answered through a provider batch API (hours of
    queueing, no per-call latency), so its latencies are not what production will see."""
    batched = [name for name, arm in (("baseline", baseline), ("joint", joint)) if arm.mode == "batch"]
    if not batched:
        return None
    arms = " and ".join(batched)
    return f"the {arms} arm(s) ran through a provider batch API, which measures no call latency"


def _eval_cost(arms: list[ArmInput]) -> EvalCost | None:
    """The eval's spend on its fresh arms, at the prices paid and at online prices (None: not known)."""
    fresh = [a for a in arms if not a.reused and a.spend is not None]
    if not fresh:
        return None
    return EvalCost(
        total_usd=round(sum(a.spend.spent_usd for a in fresh if a.spend), 9),
        online_equivalent_usd=round(sum(a.spend.spent_online_usd for a in fresh if a.spend), 9),
        batch_arms=[a.arm for a in fresh if a.facts.mode == "batch"],
    )


class FlippedOutputs(BaseModel):
    """A flipped case's outputs side by side (first epoch of each arm), for the HTML report."""

    case: str
    to_arm: str
    direction: str
    baseline_output: str
    arm_output: str


def _env() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda x: f"{x * 100:.1f}%"
    env.filters["pp"] = lambda x: f"{x * 100:+.1f}"
    env.filters["p"] = lambda x: "<0.001" if x < 0.001 else f"{x:.3f}"
    env.filters["level"] = lambda x: f"{x * 100:g}%"
    return env


def _arms(report: EvalReport) -> list[tuple[str, ArmReport]]:
    return [(name, report.arms[name]) for name in ARM_ORDER if name in report.arms]


def _effects(report: EvalReport) -> list[tuple[str, Effect]]:
    return [(name, report.effects[name]) for name in EFFECT_ORDER if name in report.effects]


def grid(report: EvalReport) -> list[list[str]]:
    """The 2x2 table of pass rates: rows old/new prompt, columns old/new model ('-' = not run)."""

    def cell(arm: str) -> str:
        r = report.arms.get(arm)
        return f"{r.pass_rate * 100:.1f}% [{r.ci[0] * 100:.1f}, {r.ci[1] * 100:.1f}]" if r else "-"

    both = "prompt_only" in report.arms and "model_only" in report.arms
    return [
        ["old prompt", cell("baseline"), cell("model_only")],
        ["new prompt", cell("prompt_only"), cell("joint") if both else "-"],
    ]


def render_markdown(report: EvalReport, *, flipped_limit: int = 20) -> str:
    """Markdown for the terminal and Slack: the 2x2 table, effects with CIs, flipped cases, the gate."""
    return (
        _env()
        .get_template("eval_report.md.j2")
        .render(
            r=report,
            arms=_arms(report),
            effects=_effects(report),
            grid=grid(report),
            flipped=report.flipped[:flipped_limit],
        )
    )


# ---------------------------------------------------------------- SVG chart geometry


def _x(value: float, lo: float, hi: float, width: float) -> float:
    return round((min(max(value, lo), hi) - lo) / (hi - lo) * width, 2)


def effect_chart(report: EvalReport, width: float = 520.0) -> dict[str, Any]:
    """Effects as points with CI whiskers on a symmetric axis around 0 (percentage points)."""
    effects = _effects(report)
    bound = max([0.05] + [max(abs(e.ci[0]), abs(e.ci[1]), abs(e.estimate)) for _, e in effects])
    bound = min(1.0, round(bound * 1.15 + 0.005, 2))
    rows = [
        {
            "name": name,
            "x": _x(e.estimate, -bound, bound, width),
            "lo": _x(e.ci[0], -bound, bound, width),
            "hi": _x(e.ci[1], -bound, bound, width),
            "label": f"{e.estimate * 100:+.1f} [{e.ci[0] * 100:+.1f}, {e.ci[1] * 100:+.1f}]",
            "significant": e.ci[0] > 0 or e.ci[1] < 0,
        }
        for name, e in effects
    ]
    return {"rows": rows, "width": width, "zero": _x(0.0, -bound, bound, width), "bound": bound}


def tag_chart(report: EvalReport, width: float = 360.0) -> list[dict[str, Any]]:
    """Per-tag pass rate bars for each arm, with CI whiskers."""
    tags = sorted({t for _, arm in _arms(report) for t in arm.by_tag})
    out = []
    for tag in tags:
        bars = []
        for name, arm in _arms(report):
            stat = arm.by_tag.get(tag)
            if stat is not None:
                bars.append(
                    {
                        "arm": name,
                        "w": _x(stat.pass_rate, 0, 1, width),
                        "lo": _x(stat.ci[0], 0, 1, width),
                        "hi": _x(stat.ci[1], 0, 1, width),
                        "label": f"{stat.pass_rate * 100:.0f}% (n={stat.n})",
                    }
                )
        out.append({"tag": tag, "bars": bars})
    return out


def render_html(report: EvalReport, flipped_outputs: list[FlippedOutputs] | None = None) -> str:
    """A self-contained HTML page: tables, inline SVG charts and flipped cases' outputs side by side."""
    return (
        _env()
        .get_template("eval_report.html.j2")
        .render(
            r=report,
            arms=_arms(report),
            effects=_effects(report),
            grid=grid(report),
            effect_chart=effect_chart(report),
            tag_chart=tag_chart(report),
            flipped_outputs=flipped_outputs or [],
        )
    )
