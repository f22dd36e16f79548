"""Block Kit messages stay within Slack's limits, whatever the report's size, and never cut a table."""

from __future__ import annotations

import json

import pytest

from pairshift.contracts.evals import ArmReport, DatasetRef, Effect, EvalReport, Flip
from pairshift.contracts.gates import GateDecision
from pairshift.contracts.notices import Notice
from pairshift.slack import block_kit
from pairshift.slack import messages as bk

MIG = "migration-support-triage"


def _arm(pair: str, run_id: str, rate: float) -> ArmReport:
    return ArmReport(
        pair=pair,
        run_id=run_id,
        pass_rate=rate,
        ci=(rate - 0.01, rate + 0.01),
        mean_score=rate,
        calls=30_000,
        errors=3,
        cached_calls=10_000,
        latency_p50_ms=420.0,
        latency_p95_ms=1234.0,
        cost_usd=12.5,
    )


def big_report(
    cases: int = 10_000, flips: int = 2_500, prompt: str = "support-triage@37", reasons: int = 40
) -> EvalReport:
    """A 10,000-case, 3-epoch, 4-arm report with every flipped case listed (as the registry keeps it)."""
    old, new = f"{prompt}+claude-sonnet-4-20250514", f"{prompt}+claude-sonnet-4-6"
    arms = {
        "baseline": _arm(old, "r-base", 0.91),
        "prompt_only": _arm(old.replace("@37", "@38"), "r-p", 0.90),
        "model_only": _arm(new, "r-m", 0.89),
        "joint": _arm(new.replace("@37", "@38"), "r-j", 0.88),
    }
    effects = {
        k: Effect(estimate=-0.01, ci=(-0.02, 0.0), p_value=0.04)
        for k in ("prompt", "model", "interaction", "joint")
    }
    flipped = [
        Flip(
            case=f"case-{i:05d}-" + "x" * 60,
            from_arm="baseline",
            to_arm="joint",
            direction="regressed" if i % 3 else "improved",
        )
        for i in range(flips)
    ]
    return EvalReport(
        report_id="r-j",
        deployment="support-triage",
        baseline_pair=old,
        target_pair=new,
        dataset=DatasetRef(name="support-triage-golden", hash="abc", cases=cases),
        epochs=3,
        arms=arms,
        effects=effects,
        flipped=flipped,
        flipped_count=flips,
        gate=GateDecision(
            decision="inconclusive", reasons=[f"reason {i}: " + "r" * 200 for i in range(reasons)]
        ),
        power_note="With 10000 cases this eval detects a drop of 1.2 points.",
        warnings=["w <script>"] * 5,
    )


def eval_notice(**kw) -> Notice:
    return Notice(
        kind="eval_summary",
        deployment="support-triage",
        migration=MIG,
        title="Eval: gate inconclusive",
        text="\n".join(f"reason {i}" for i in range(2000)),
        facts={"gate": "inconclusive", "report_id": "r-j"},
        asks_decision=True,
        stage=0,
        channel="#llm-migrations",
        links={
            "HTML report": "http://localhost:8080/reports/r-j",
            "Temporal UI": f"http://localhost:8233/namespaces/default/workflows/{MIG}",
        },
        **kw,
    )


def _all_text(msg: block_kit.Message) -> str:
    return json.dumps(msg.blocks)


def test_eval_summary_of_10000_cases_fits_slack_limits() -> None:
    msg = bk.notice_message(eval_notice(), big_report())
    assert block_kit.limit_violations(msg) == []
    assert len(msg.blocks) <= 20
    text = _all_text(msg)
    for needle in (
        "old prompt",
        "new prompt",
        "interaction",
        "Flipped cases: 2,500",
        "INCONCLUSIVE",
        "10,000 cases",
        "/reports/r-j",
        "/namespaces/default/workflows/",
    ):
        assert needle in text, needle
    assert "<script>" not in text and "&lt;script&gt;" in text  # untrusted text is escaped
    buttons = [e for b in msg.blocks if b.get("block_id") == bk.DECISION_BLOCK for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == [bk.APPROVE_ACTION, bk.REJECT_ACTION]
    assert {json.loads(b["value"])["migration"] for b in buttons} == {MIG}
    assert json.loads(buttons[0]["value"])["stage"] == 0


def test_a_table_too_wide_is_left_out_whole_and_linked_not_cut() -> None:
    report = big_report(
        prompt="p" * 900 + "@37"
    )  # pair names of ~900 chars make the arms table > 3,000 chars
    msg = bk.notice_message(eval_notice(), report)
    assert block_kit.limit_violations(msg) == []
    arms = next(b for b in msg.blocks if b.get("text", {}).get("text", "").startswith("*Arms*"))
    assert "```" not in arms["text"]["text"] and "Too wide" in arms["text"]["text"]
    assert "/reports/r-j" in arms["text"]["text"]
    grid = next(b for b in msg.blocks if b.get("text", {}).get("text", "").startswith("*Pass rate"))
    assert grid["text"]["text"].count("```") == 2  # the narrow table is whole: opened and closed


def test_long_notice_text_is_split_between_lines_and_summarised() -> None:
    notice = Notice(
        kind="info",
        deployment="d",
        migration=MIG,
        title="t" * 400,
        channel="#c",
        text="\n".join(f"line {i} " + "y" * 90 for i in range(5000)),
    )
    msg = bk.notice_message(notice)
    assert block_kit.limit_violations(msg) == []
    assert len(msg.blocks[0]["text"]["text"]) <= block_kit.MAX_HEADER
    sections = [b["text"]["text"] for b in msg.blocks if b["type"] == "section" and "text" in b]
    assert all(s.splitlines()[-1].startswith("line ") for s in sections)  # no line cut in half
    assert "left out" in _all_text(msg)


def test_an_oversized_markdown_table_in_text_is_replaced_not_cut() -> None:
    table = "\n".join(f"| case {i} | {'z' * 50} |" for i in range(200))
    msg = bk.notice_message(Notice(kind="info", deployment="d", title="t", text=f"intro\n\n{table}\n\nend"))
    text = _all_text(msg)
    assert "| case 0 |" not in text and "table too large" in text and "end" in text


def test_button_value_limit_is_enforced() -> None:
    assert len(bk.button_value(MIG, 3)) < block_kit.MAX_BUTTON_VALUE
    with pytest.raises(ValueError, match="exceeds Slack's 2000"):
        bk.button_value("m" * 2100, 0)


def test_resolved_replaces_buttons_with_outcome_or_keeps_them_while_votes_are_missing() -> None:
    blocks = bk.notice_message(eval_notice(), big_report()).blocks
    partial = bk.resolved(blocks, "Approved by <@U1> at 14:02 UTC (1 of 2 approvals)", keep_buttons=True)
    assert any(b.get("block_id") == bk.DECISION_BLOCK for b in partial)
    final = bk.resolved(partial, "Approved by <@U2> at 14:05 UTC")
    assert not any(b.get("block_id") == bk.DECISION_BLOCK for b in final)
    outcome = [b for b in final if b.get("block_id") == bk.OUTCOME_BLOCK]
    assert len(outcome) == 1
    assert "<@U1>" in outcome[0]["elements"][0]["text"] and "<@U2>" in outcome[0]["elements"][0]["text"]
    assert block_kit.limit_violations(block_kit.Message(text="x", blocks=final)) == []


def test_every_notice_kind_renders_within_limits() -> None:
    for kind in (
        "migration_started",
        "deprecation_reminder",
        "approval_requested",
        "stage_started",
        "stage_passed",
        "decision",
        "promoted",
        "rolled_back",
        "rejected",
        "failed_eval",
    ):
        notice = Notice(
            kind=kind,
            deployment="d",
            migration=MIG,
            title=f"{kind} **now**",
            text="**bold** [x](http://e)",
            facts={"percent": 20, "model": "claude-sonnet-4-20250514", "retires_on": "2026-06-15"},
            asks_decision=kind == "approval_requested",
            stage=2,
            channel="#c",
        )
        msg = bk.notice_message(notice)
        assert block_kit.limit_violations(msg) == [], kind
        assert "*bold*" in _all_text(msg) and "<http://e|x>" in _all_text(msg)
    bar = bk.stage_progress({"percent": 20})
    assert bar is not None and bar.count("█") == 2


def test_parse_button_value_refuses_foreign_values() -> None:
    assert bk.parse_button_value('{"migration": "m", "stage": 1}') == bk.ButtonValue(migration="m", stage=1)
    assert bk.parse_button_value("not json") is None
    assert bk.parse_button_value('{"stage": 1}') is None
