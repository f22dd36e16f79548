"""A stage's quality figures as Slack blocks (issue 17 item 4): table-tested on plain, judged and hostile
figures; every message within Slack's limits, outside text escaped, examples cut honestly."""

from __future__ import annotations

import pytest

from pairshift.contracts.notices import Notice
from pairshift.contracts.quality import (
    ArmQuality,
    Example,
    JudgeSpend,
    ShadowQuality,
    SideBySide,
    StageCheckRate,
    StageQuality,
)
from pairshift.slack.block_kit import MAX_BLOCKS, Message, limit_violations
from pairshift.slack.messages import notice_message
from pairshift.slack.stage_quality import EXAMPLE_CHARS, stage_quality_blocks, title


def arm(variant: str, **kw) -> ArmQuality:
    return ArmQuality(variant=variant, calls=1200, invalid_rate=0.1, invalid_ci=(0.08, 0.12), **kw)


def rate(variant: str, check: str, calls: int = 120) -> StageCheckRate:
    return StageCheckRate(
        percent=20, variant=variant, check=check, calls=calls, of_calls=1200, rate=calls / 1200
    )


PLAIN = StageQuality(
    deployment="support-triage", index=0, percent=20, ended="passed", arms=[arm("control"), arm("candidate")]
)
JUDGED = StageQuality(
    deployment="support-triage",
    index=1,
    percent=50,
    ended="breach",
    why="invalid_rate: candidate 10.0% vs control 0.0%",
    arms=[
        arm("control", judged=40, judged_score=1.0, judged_ci=(1.0, 1.0)),
        arm(
            "candidate",
            checks=[rate("candidate", "online check raw-json: Expected output to be valid JSON")],
            judged=38,
            judged_score=0.842,
            judged_ci=(0.72, 0.96),
            examples=[
                Example(
                    kind="invalid",
                    why="online check raw-json",
                    input='{"t": "x"}',
                    output="Triage for [REDACTED]:",
                )
            ],
        ),
    ],
    judge="sim-classic-2024-06",
    judge_stage=JudgeSpend(percent=50, judged=78, unreadable=2, cost_usd=0.0123),
    judge_spent_today_usd=0.4567,
    judge_cap_usd=5.0,
)
HOSTILE_TEXT = "<!channel> & ``` `x` " * 400
HOSTILE = StageQuality(
    deployment="support-triage",
    index=2,
    percent=100,
    ended="asks",
    why=HOSTILE_TEXT,
    arms=[
        arm(
            v,
            checks=[rate(v, HOSTILE_TEXT + str(i)) for i in range(10)],
            examples=[Example(kind="judged", why=HOSTILE_TEXT, input=HOSTILE_TEXT, output="&" * 4000)] * 5,
        )
        for v in ("control", "candidate")
    ],
    judge="<judge>",
    judge_stage=JudgeSpend(percent=100),
)

SHADOW = StageQuality(
    deployment="support-triage",
    index=0,
    percent=0,
    ended="breach",
    why="win_rate: candidate 0.447 vs 0.5",
    arms=[arm("control"), arm("candidate")],
    shadow=ShadowQuality(
        shadow=5,
        mirrored=1200,
        judged=800,
        wins=10,
        ties=700,
        losses=90,
        win_rate=0.447,
        win_rate_ci=(0.43, 0.46),
        examples=[
            SideBySide(
                input='{"t": "order [REDACTED]"}',
                control='{"team": "billing"}',
                candidate='Triage for [REDACTED]: {"team": "billing"}',
                verdict="candidate first: B; control first: A",
            )
        ]
        # the second example shown (two are): hostile text stays escaped and within a section's limit
        + [SideBySide(input=HOSTILE_TEXT, control="&" * 300, candidate=HOSTILE_TEXT, verdict=HOSTILE_TEXT)]
        * 4,
    ),
)


@pytest.mark.parametrize(
    ("q", "present", "absent"),
    [
        (
            PLAIN,
            [
                "stage 0 (20%) passed its gate",
                "control    1,200  10.0% [8.0%, 12.0%]",
                "No output of this stage failed",
            ],
            ["Judge", "Examples", "Top failing checks"],
        ),
        (
            JUDGED,
            [
                "stage 1 (50%) breached its gate",
                "_invalid_rate: candidate 10.0% vs control 0.0%_",
                "0.842 [0.720, 0.960]",
                "• candidate: `online check raw-json: Expected output to be valid JSON` 120 of 1,200 calls "
                "(10.0%)",
                "Judge `sim-classic-2024-06`: 78 sampled output(s) scored in this stage, $0.0123 "
                "(2 unreadable replies); $0.4567 of the $5 daily cap spent today",
                '*candidate* · online check raw-json\ninput: `{"t": "x"}`\n```Triage for [REDACTED]:```',
            ],
            ["No output of this stage failed"],
        ),
        (
            HOSTILE,
            [
                "stage 2 (100%) asks a human",
                "&lt;!channel&gt; &amp;",
                "more check(s) in the report",
                "Judge `&lt;judge&gt;`",
            ],
            ["<!channel>", "<judge>"],
        ),
        (
            SHADOW,
            [
                "stage 0 (shadow 5%) breached its gate",
                "*Shadow*: 5% of units' requests mirrored to the candidate, none served by it; "
                "1,200 mirrored, 800 pair(s) judged in both orders. Candidate win rate 0.447 [0.430, 0.460] "
                "(0.5: as good as control): 10 won, 700 tied, 90 lost.",
                'input: `{"t": "order [REDACTED]"}`\n*control*\n```{"team": "billing"}```\n*candidate*\n'
                '```Triage for [REDACTED]: {"team": "billing"}```\n'
                "_judge: candidate first: B; control first: A_",
            ],
            ["<!channel>", "Examples (redacted"],
        ),
    ],
)
def test_stage_quality_blocks(q: StageQuality, present: list[str], absent: list[str]) -> None:
    blocks = stage_quality_blocks(q)
    text = "\n".join(
        [b.get("text", {}).get("text", "") for b in blocks]
        + [e["text"] for b in blocks for e in b.get("elements", [])]
    )
    for want in present:
        assert want in text
    for unwanted in absent:
        assert unwanted not in text
    assert limit_violations(Message(text=title(q), blocks=blocks)) == []
    for b in blocks:  # outside text cannot open or close a code block: the fences pair up
        assert b.get("text", {}).get("text", "").count("```") % 2 == 0
    examples = [
        b for b in blocks if "```" in b.get("text", {}).get("text", "") and "input:" in b["text"]["text"]
    ]
    assert len(examples) <= 2 * len(q.arms)


def test_examples_are_cut_to_their_budget_even_when_escaping_grows_them() -> None:
    (ex,) = [b for b in stage_quality_blocks(HOSTILE) if "input:" in b.get("text", {}).get("text", "")][:1]
    body = ex["text"]["text"].split("```")[1]
    assert body.endswith("…") and len(body) <= 1200 and body.count("&amp;") <= EXAMPLE_CHARS


def test_a_stage_quality_notice_is_a_message_in_the_thread() -> None:
    notice = Notice(
        kind="stage_quality",
        deployment="support-triage",
        migration="migration-support-triage",
        title="support-triage: stage 1 (50%) breached its gate: quality",
        stage=1,
        quality=JUDGED,
        channel="#llm-migrations",
    )
    message = notice_message(notice)
    assert limit_violations(message) == [] and len(message.blocks) < MAX_BLOCKS
    assert message.blocks[0]["type"] == "header" and "breached its gate" in message.blocks[0]["text"]["text"]
    assert message.blocks[-1]["elements"][0]["text"] == "`migration-support-triage` · stage 1"
    assert not any(b["type"] == "actions" for b in message.blocks), "figures ask nothing"
    plain = notice_message(notice.model_copy(update={"quality": None}))  # an old worker's notice: generic
    assert plain.blocks[0]["type"] == "header" and limit_violations(plain) == []
