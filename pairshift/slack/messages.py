"""pairshift's Slack messages: every notice as Block Kit, the 2x2 eval summary, the decision buttons (pure).

Built from :mod:`pairshift.slack.block_kit`, so every message stays within Slack's limits. What does not fit
is summarised and linked, never cut in the middle: a table that is too wide for a section is left out whole
with a pointer to the HTML report, and long prose is split between lines. Text from models and datasets is
untrusted, so it is escaped before it reaches mrkdwn.

Decision buttons carry ``{"migration", "stage"}`` as JSON in their value; the click handler trusts that value
only after the request's signature is verified, and the workflow's ``decide`` validator has the last word.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from pairshift.contracts.notices import Notice
from pairshift.slack.block_kit import (
    MAX_BLOCKS,
    MAX_BUTTON_VALUE,
    MAX_SECTION,
    Message,
    chunks,
    clip,
    code_table,
    context,
    escape,
    fields,
    fit,
    fit_lines,
    header,
    link_buttons,
    mrkdwn,
    section,
)
from pairshift.slack.stage_quality import stage_quality_blocks

if TYPE_CHECKING:  # the report type only; blocks stay importable without the eval engine
    from pairshift.contracts.evals import EvalReport

APPROVE_ACTION = "pairshift_approve"
REJECT_ACTION = "pairshift_reject"
DECISION_ACTIONS = frozenset({APPROVE_ACTION, REJECT_ACTION})
DECISION_BLOCK = "pairshift_decision"
OUTCOME_BLOCK = "pairshift_outcome"
FLIPPED_SHOWN = 10
TEXT_BLOCKS = 12  # sections of free text a notice may use before it points to the log / report

ICONS = {
    "migration_started": ":arrows_counterclockwise:",
    "deprecation_reminder": ":warning:",
    "eval_summary": ":bar_chart:",
    "approval_requested": ":raising_hand:",
    "approval_reminder": ":alarm_clock:",
    "stage_started": ":arrow_forward:",
    "stage_passed": ":white_check_mark:",
    "stage_quality": ":bar_chart:",
    "decision": ":ballot_box_with_check:",
    "promoted": ":tada:",
    "rolled_back": ":rewind:",
    "rejected": ":no_entry:",
    "failed_eval": ":x:",
    "alias_drift": ":twisted_rightwards_arrows:",
    "fallback_rate": ":leftwards_arrow_with_hook:",
    "info": ":information_source:",
}
GATE_ICONS = {"pass": ":white_check_mark:", "fail": ":x:", "inconclusive": ":grey_question:"}


class ButtonValue(BaseModel):
    """The value of an Approve / Reject button: which migration run and which stage it decides."""

    migration: str = Field(..., min_length=1)
    stage: int | None = None
    run: str | None = Field(None, description="The run the button was posted for; a later run refuses it.")


# ---------------------------------------------------------------- pairshift's blocks


def table_section(title: str, rows: list[list[str]], fallback_link: str | None) -> dict[str, Any]:
    """The whole table, or (when it cannot fit one section) a pointer to the report: never a cut table."""
    text = f"*{title}*\n{code_table([[escape(c) for c in r] for r in rows])}"
    if len(text) <= MAX_SECTION:
        return section(text)
    where = (
        f"<{fallback_link}|the HTML report>"
        if fallback_link
        else "the HTML report (`pairshift migrate report`)"
    )
    return section(f"*{title}*\n_Too wide for a Slack message: see {where}._")


def button_value(migration: str, stage: int | None, run: str | None = None) -> str:
    """The JSON value of a decision button (within Slack's button value limit)."""
    value = ButtonValue(migration=migration, stage=stage, run=run).model_dump_json(exclude_none=True)
    if len(value) > MAX_BUTTON_VALUE:
        raise ValueError(f"button value of {len(value)} chars exceeds Slack's {MAX_BUTTON_VALUE}")
    return value


def decision_buttons(
    migration: str, stage: int | None, *, approve_label: str = "Approve canary", run: str | None = None
) -> dict[str, Any]:
    """Approve / Reject; approving asks for confirmation because it moves production traffic."""
    value = button_value(migration, stage, run)
    confirm = {
        "title": {"type": "plain_text", "text": "Approve?"},
        "text": {
            "type": "mrkdwn",
            "text": clip(
                f"This moves traffic of `{escape(migration)}` to the candidate pair (stage {stage}).", 300
            ),
        },
        "confirm": {"type": "plain_text", "text": "Approve"},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }
    return {
        "type": "actions",
        "block_id": DECISION_BLOCK,
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE_ACTION,
                "style": "primary",
                "value": value,
                "confirm": confirm,
                "text": {"type": "plain_text", "text": approve_label},
            },
            {
                "type": "button",
                "action_id": REJECT_ACTION,
                "style": "danger",
                "value": value,
                "text": {"type": "plain_text", "text": "Reject"},
            },
        ],
    }


def workflow_url(ui_url: str, namespace: str, migration: str) -> str:
    """The migration's page in the Temporal UI."""
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{migration}"


def report_url(api_url: str, report_id: str) -> str:
    """The HTML report as ``pairshift api`` serves it."""
    return f"{api_url.rstrip('/')}/reports/{report_id}"


def _links_context(links: dict[str, str]) -> dict[str, Any] | None:
    """Links that are not http(s) (a report file path) are shown as text: Slack buttons need a URL."""
    paths = [
        f"{escape(label)}: `{escape(url)}`"
        for label, url in links.items()
        if not url.startswith(("http://", "https://"))
    ]
    return context(*paths) if paths else None


# ---------------------------------------------------------------- notices


def notice_message(notice: Notice, report: EvalReport | None = None) -> Message:
    """The Block Kit message for any notice (eval summaries with a report get the 2x2 treatment)."""
    if notice.kind == "eval_summary" and report is not None:
        blocks = eval_summary_blocks(notice, report)
    elif notice.kind == "stage_quality" and notice.quality is not None:
        blocks = stage_quality_blocks(notice.quality) + _tail(notice)
    else:
        blocks = generic_blocks(notice)
    return fit(Message(text=notification_text(notice), blocks=blocks))


def notification_text(notice: Notice) -> str:
    """The plain text Slack shows in notifications and to screen readers."""
    icon = ICONS.get(notice.kind, "")
    return clip(f"{icon} {notice.title}".strip(), MAX_SECTION)


def generic_blocks(notice: Notice) -> list[dict[str, Any]]:
    """Header, the Markdown text, facts as fields, stage progress, links and (when asked) the buttons."""
    blocks: list[dict[str, Any]] = [header(f"{ICONS.get(notice.kind, '')} {notice.title}".strip())]
    pieces = chunks(mrkdwn(notice.text)) if notice.text.strip() else []
    for piece in pieces[:TEXT_BLOCKS]:
        blocks.append(section(piece))
    if len(pieces) > TEXT_BLOCKS:
        blocks.append(
            context(f"_{len(pieces) - TEXT_BLOCKS} more part(s) left out: see the worker log or the CLI._")
        )
    if notice.kind in ("stage_started", "stage_passed") and (bar := stage_progress(notice.facts)):
        blocks.append(section(bar))
    facts = fields({k: v for k, v in notice.facts.items() if not isinstance(v, (dict, list))})
    if facts:
        blocks.append(facts)
    blocks += _tail(notice)
    return blocks


def stage_progress(facts: dict[str, Any]) -> str | None:
    """A text bar of the canary share (``█░░░░░░░░░ 5% ...``) when the notice says the percent."""
    percent = facts.get("percent")
    if not isinstance(percent, (int, float)):
        return None
    filled = max(0, min(10, round(percent / 10)))
    return f"`{'█' * filled}{'░' * (10 - filled)}` {percent:g}% of traffic on the candidate pair"


def _tail(notice: Notice) -> list[dict[str, Any]]:
    blocks = [b for b in (link_buttons(notice.links), _links_context(notice.links)) if b]
    if notice.asks_decision and notice.migration:
        blocks.append(
            decision_buttons(
                notice.migration,
                notice.stage,
                approve_label="Approve canary" if not notice.stage else "Approve stage",
                run=notice.run_id,
            )
        )
    if notice.migration:
        blocks.append(
            context(
                f"`{escape(notice.migration)}`"
                + (f" · stage {notice.stage}" if notice.stage is not None else "")
            )
        )
    return blocks


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _ci(ci: tuple[float, float], signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return f"[{fmt.format(ci[0] * 100)}, {fmt.format(ci[1] * 100)}]"


def eval_summary_blocks(notice: Notice, report: EvalReport) -> list[dict[str, Any]]:
    """The 2x2 eval in a fixed number of blocks, whatever the dataset size: tables, effects, flips, gate."""
    report_link = notice.links.get("HTML report")
    gate = report.gate
    blocks: list[dict[str, Any]] = [
        header(f"{ICONS['eval_summary']} Eval summary: {report.deployment}"),
        section(
            clip(
                f"*{escape(report.baseline_pair)}* → *{escape(report.target_pair)}*\n"
                f"Dataset `{escape(report.dataset.name)}`: {report.dataset.cases:,} cases × {report.epochs} "
                f"epoch(s)",
                MAX_SECTION,
            )
        ),
        section(
            fit_lines(
                [f"{GATE_ICONS.get(gate.decision, '')} Gate: *{gate.decision.upper()}*"]
                + [f"• {escape(r)}" for r in gate.reasons],
                MAX_SECTION,
                "…and {n} more reason(s)",
            )
        ),
    ]
    blocks.append(table_section("Pass rate [95% CI], 2×2", _grid_rows(report), report_link))
    blocks.append(table_section("Arms", _arm_rows(report), report_link))
    blocks.append(table_section("Effects, percentage points [95% CI]", _effect_rows(report), report_link))
    blocks.append(_flipped_section(report))
    notes = [escape(report.power_note)] + [f":warning: {escape(w)}" for w in report.warnings[:3]]
    blocks.append(context(*notes))
    blocks += _tail(notice)
    return blocks


def _grid_rows(report: EvalReport) -> list[list[str]]:
    def cell(arm: str) -> str:
        r = report.arms.get(arm)
        return f"{_pct(r.pass_rate)} {_ci(r.ci)}" if r else "-"

    both = "prompt_only" in report.arms and "model_only" in report.arms
    return [
        ["", "old model", "new model"],
        ["old prompt", cell("baseline"), cell("model_only")],
        ["new prompt", cell("prompt_only"), cell("joint") if both else "-"],
    ]


def _arm_rows(report: EvalReport) -> list[list[str]]:
    rows = [["arm", "pair", "pass", "score", "p95 ms", "cost $", "calls", "errors"]]
    for name in ("baseline", "prompt_only", "model_only", "joint"):
        a = report.arms.get(name)
        if a is None or (
            name == "joint" and a.run_id in {r.run_id for k, r in report.arms.items() if k != "joint"}
        ):
            continue  # a one-factor migration's joint arm repeats the changed arm
        rows.append(
            [
                name,
                a.pair,
                _pct(a.pass_rate),
                f"{a.mean_score:.3f}",
                f"{a.latency_p95_ms:,.0f}",
                f"{a.cost_usd:,.2f}",
                f"{a.calls:,}",
                f"{a.errors:,}",
            ]
        )
    return rows


def _effect_rows(report: EvalReport) -> list[list[str]]:
    rows = [["effect", "estimate", "95% CI", "p"]]
    for name in ("prompt", "model", "interaction", "joint"):
        e = report.effects.get(name)
        if e is not None:
            rows.append(
                [
                    name,
                    f"{e.estimate * 100:+.1f}",
                    _ci(e.ci, signed=True),
                    "<0.001" if e.p_value < 0.001 else f"{e.p_value:.3f}",
                ]
            )
    return rows


def _flipped_section(report: EvalReport) -> dict[str, Any]:
    regressed = [f for f in report.flipped if f.direction == "regressed"]
    improved = len(report.flipped) - len(regressed)
    head = (
        f"*Flipped cases: {report.flipped_count:,}* ({len(regressed):,} regressed, {improved:,} improved"
        + (f", of the first {len(report.flipped):,}" if report.flipped_count > len(report.flipped) else "")
        + ")"
    )
    shown = [
        f"• `{escape(clip(f.case, 80))}` regressed in {escape(f.to_arm)}" for f in regressed[:FLIPPED_SHOWN]
    ]
    more = report.flipped_count - len(shown)
    lines = [head, *shown] + ([f"…{more:,} more in the report"] if shown and more > 0 else [])
    return section(fit_lines(lines, MAX_SECTION, "…{n} more in the report"))


# ---------------------------------------------------------------- outcomes


def resolved(
    blocks: list[dict[str, Any]], outcome: str, *, keep_buttons: bool = False
) -> list[dict[str, Any]]:
    """The message after a click: the buttons replaced by the outcome (kept while more approvals are needed).

    Outcomes accumulate in one context block (newest last; the oldest drop out first if they outgrow it).
    """
    previous = next((b for b in blocks if b.get("block_id") == OUTCOME_BLOCK), None)
    lines = [ln for e in (previous or {}).get("elements", []) for ln in e.get("text", "").splitlines()]
    lines.append(clip(outcome, MAX_SECTION))
    while len("\n".join(lines)) > MAX_SECTION:
        lines.pop(0)
    out = [
        b
        for b in blocks
        if b.get("block_id") != OUTCOME_BLOCK and (keep_buttons or b.get("block_id") != DECISION_BLOCK)
    ]
    while len(out) >= MAX_BLOCKS:  # room for the outcome: drop the last block that is not a button row
        del out[max(i for i, b in enumerate(out) if b.get("type") != "actions")]
    out.append(context("\n".join(lines), block_id=OUTCOME_BLOCK))
    return out


def parse_button_value(value: str) -> ButtonValue | None:
    """The decision a button claims, or None when the value is not ours (then nothing is sent anywhere)."""
    try:
        return ButtonValue.model_validate(json.loads(value))
    except (ValueError, TypeError, RecursionError):
        return None
