"""A canary stage's quality figures as Block Kit: the ``stage_quality`` notice in a migration's thread (pure).

MigrationWorkflow posts one when a stage ends (it passes, breaches, or asks a human), with the figures of
:class:`pairshift.contracts.quality.StageQuality`. The message is a header and then :data:`SECTIONS`, each a
pure function from the figures to a few blocks: both arms' calls, invalid rate and judged score with their 95%
intervals; the top failing checks per arm; the judge's spend in the stage and that day; a shadow stage's
pairwise win rate and side-by-side examples (:func:`pairwise`); up to two redacted example outputs per arm.
Every block stays within Slack's limits: lists are cut between lines with a count of what was left out,
examples are cut to :data:`EXAMPLE_CHARS` characters with an ellipsis, and all outside text is escaped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pairshift.contracts.quality import (
    EXAMPLE_CHARS,
    EXAMPLES_PER_ARM,
    ArmQuality,
    Example,
    SideBySide,
    StageQuality,
)
from pairshift.slack.block_kit import (
    MAX_SECTION,
    clip,
    code_table,
    context,
    escape,
    fit_lines,
    header,
    section,
)

Block = dict[str, Any]

ENDED = {
    "passed": ("white_check_mark", "passed its gate"),
    "breach": ("rewind", "breached its gate"),
    "asks": ("raising_hand", "asks a human"),
    "promote_now": ("fast_forward", "ended by promote-now"),
}


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _interval(ci: tuple[float, float] | None, fmt: Callable[[float], str]) -> str:
    return "" if ci is None else f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def title(q: StageQuality) -> str:
    """The notice's title: which stage, how it ended."""
    icon, said = ENDED.get(q.ended, ("bar_chart", q.ended))
    share = f"{q.percent:g}%" if q.shadow is None else f"shadow {q.shadow.shadow:g}%"
    return f":{icon}: {q.deployment}: stage {q.index} ({share}) {said}: quality"


def figures(q: StageQuality) -> list[Block]:
    """Why the stage ended, and a table of both arms: calls, invalid rate, judged score (95% intervals)."""
    rows = [["arm", "calls", "invalid [95%]", "judged score [95%]", "judged"]]
    for a in q.arms:
        score = (
            "-"
            if a.judged_score is None
            else f"{a.judged_score:.3f}" + _interval(a.judged_ci, "{:.3f}".format)
        )
        rows.append(
            [
                a.variant,
                f"{a.calls:,}",
                _pct(a.invalid_rate) + _interval(a.invalid_ci, _pct),
                score,
                f"{a.judged:,}",
            ]
        )
    blocks = []
    if q.why:
        blocks.append(section(clip(f"_{escape(q.why)}_", MAX_SECTION)))
    table = code_table(rows)
    blocks.append(
        section(table if len(table) <= MAX_SECTION else "_The figures table is too wide for Slack._")
    )
    return blocks


def checks(q: StageQuality) -> list[Block]:
    """The top failing checks per arm, each with its calls and rate in the stage."""
    lines = [
        f"• {escape(a.variant)}: `{shown(c.check, 200, 600)}` {c.calls:,} of {c.of_calls:,} calls "
        f"({_pct(c.rate)})"
        for a in q.arms
        for c in a.checks
    ]
    if not lines:
        return [context("No output of this stage failed an online check.")]
    return [
        section(fit_lines(["*Top failing checks*", *lines], MAX_SECTION, "…{n} more check(s) in the report"))
    ]


def judge(q: StageQuality) -> list[Block]:
    """What the canary judge scored and spent in the stage, and its spend that day against the cap."""
    if q.judge is None or q.judge_stage is None:
        return []
    j = q.judge_stage
    said = (
        f"Judge `{escape(q.judge)}`: {j.judged:,} sampled output(s) scored in this stage, ${j.cost_usd:.4f}"
    )
    if j.unreadable:
        said += f" ({j.unreadable:,} unreadable replies)"
    if q.judge_spent_today_usd is not None:
        cap = f" of the ${q.judge_cap_usd:g} daily cap" if q.judge_cap_usd is not None else ""
        said += f"; ${q.judge_spent_today_usd:.4f}{cap} spent today"
    return [context(said)]


EXAMPLE_ESCAPED = 1200  # escaped characters of an example's input or output: both fit one section with room


def shown(text: str, chars: int = EXAMPLE_CHARS, escaped: int = EXAMPLE_ESCAPED) -> str:
    """``text`` cut to ``chars`` characters and escaped for mrkdwn (cut further while escaping made it longer
    than ``escaped``); its backticks become quotes, so it cannot close the code block or span it sits in."""
    out = escape(clip(text, chars))
    while len(out) > escaped:
        chars = max(1, chars * escaped // len(out) - 1)
        out = escape(clip(text, chars))
    return out.replace("`", "'") or " "


def _example(a: ArmQuality, e: Example) -> str:
    head = f"*{escape(a.variant)}* · {shown(e.why, 100, 500)}"
    return f"{head}\ninput: `{shown(e.input)}`\n```{shown(e.output)}```"


def examples(q: StageQuality) -> list[Block]:
    """Up to two redacted example outputs per arm, one section each."""
    out = [section(clip(_example(a, e), MAX_SECTION)) for a in q.arms for e in a.examples[:2]]
    if out:
        out.insert(0, context(f"Examples (redacted when stored, cut to {EXAMPLE_CHARS} characters):"))
    return out


SIDE_BY_SIDE_ESCAPED = 700  # escaped characters of each of an example's three texts: all fit one section


def _side_by_side(e: SideBySide) -> str:
    cut = (EXAMPLE_CHARS, SIDE_BY_SIDE_ESCAPED)
    return (
        f"input: `{shown(e.input, *cut)}`\n*control*\n```{shown(e.control, *cut)}```\n"
        f"*candidate*\n```{shown(e.candidate, *cut)}```\n_judge: {shown(e.verdict, 150, 300)}_"
    )


def pairwise(q: StageQuality) -> list[Block]:
    """A shadow stage: what was mirrored and judged, the candidate's win rate with its interval, and up to
    two side-by-side examples (the same input, both outputs, the judge's two verdicts), worst first."""
    sh = q.shadow
    if sh is None:
        return []
    said = (
        f"*Shadow*: {sh.shadow:g}% of units' requests mirrored to the candidate, none served by it; "
        f"{sh.mirrored:,} mirrored, {sh.judged:,} pair(s) judged in both orders."
    )
    if sh.win_rate is not None:
        said += (
            f" Candidate win rate {sh.win_rate:.3f}{_interval(sh.win_rate_ci, '{:.3f}'.format)} "
            f"(0.5: as good as control): {sh.wins:,} won, {sh.ties:,} tied, {sh.losses:,} lost."
        )
    out = [section(said)]
    shown_examples = [section(clip(_side_by_side(e), MAX_SECTION)) for e in sh.examples[:EXAMPLES_PER_ARM]]
    if shown_examples:
        out.append(context(f"Side by side (redacted when stored, cut to {EXAMPLE_CHARS} characters):"))
    return out + shown_examples


SECTIONS: list[Callable[[StageQuality], list[Block]]] = [figures, checks, judge, pairwise, examples]


def stage_quality_blocks(q: StageQuality) -> list[Block]:
    """The message's blocks (before the migration's common tail of links and context)."""
    blocks: list[Block] = [header(title(q))]
    for part in SECTIONS:
        blocks += part(q)
    return blocks
