"""The canary's sampled judge (``canary.judge``): a share of served outputs scored 0..1 against a rubric.

Routers keep ``sample_rate`` of the outputs they serve during a migration, in both variants (input and output,
redacted by the deployment's rules and bounded, before they are queued; ``output_samples`` kind ``judge``,
deleted after ``retention_days``). At each gate check of the migration, before the gate reads the stage,
:func:`judge_round` has the judge score the samples not scored yet (oldest first, at most
:data:`JUDGED_PER_CHECK`), with the eval's llm-rubric prompt (plus the input) and reply parser
(:mod:`pairshift.scorers.model_graded`), and adds each score to its unit's row of the stage
(``unit_aggregates``): the judge's scores feed the ``score`` metric the stage gate compares between the arms.

The daily cap holds strictly: before each call the judge's spend of the UTC day for the deployment, plus an
upper bound of that call's cost (every character of the prompt a token, the whole ``max_tokens`` answered),
must stay within ``max_cost_usd_per_day``; otherwise the round stops and the samples wait for the next day.
One round runs at a time per migration (the migration's own gate checks call it; a StageWatch does not), and
stops starting calls after :data:`ROUND_SECONDS` (the check's activity must answer within a minute); what is
left waits for the next check.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time
from time import monotonic

from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pairshift import judges, providers
from pairshift.policy import CanaryJudge
from pairshift.providers import CallParams, Completion, Message, ModelSpec
from pairshift.registry.models import OutputSample, ShadowPair, UnitAggregate
from pairshift.registry.store import Registry
from pairshift.resolver import resolve_model
from pairshift.scorers.model_graded import parse_rubric_reply

JUDGED_PER_CHECK = 200  # samples one gate check scores at most (the rest wait for the next check)
ROUND_SECONDS = 30.0  # a round stops starting calls after this long: the gate check's activity has 60 s
JUDGE_PARAMS = CallParams(temperature=0, max_tokens=256)
FRAMING_TOKENS = 16  # a message's framing tokens, on top of its text, in the cost bound

Complete = Callable[[ModelSpec, str | None, list[Message], CallParams], Awaitable[Completion]]


def judge_prompt(rubric: str, input_text: str, output: str) -> str:
    """The eval's llm-rubric prompt, with the request the output answered."""
    return (
        "You grade an AI system's output against a rubric.\n\n"
        f"<Input>\n{input_text}\n</Input>\n\n<Output>\n{output}\n</Output>\n\n<Rubric>\n{rubric}\n</Rubric>\n\n"
        "Decide whether the output satisfies the rubric. Answer with one JSON object and nothing else:\n"
        '{"reason": "<one or two sentences>", "pass": true or false, "score": <0.0 to 1.0>}'
    )


def cost_bound(spec: ModelSpec, prompt: str, params: CallParams = JUDGE_PARAMS) -> float:
    """An upper bound of one judge call's cost: every character a token, the whole max_tokens answered."""
    return providers.cost_usd(spec, len(prompt) + FRAMING_TOKENS, params.max_tokens)


class JudgeRound(BaseModel):
    """What one round of the judge did, for the gate check's reasons."""

    judge: str
    judged: int = 0
    unreadable: int = 0
    cost_usd: float = 0.0
    spent_today_usd: float = 0.0
    cap_usd: float
    capped: bool = False
    waiting: int = 0  # samples not scored after this round
    warning: str | None = None

    def reasons(self) -> list[str]:
        said = (
            f"judge {self.judge}: {self.judged} sampled output(s) scored this check (${self.cost_usd:.4f}); "
            f"${self.spent_today_usd:.4f} of the ${self.cap_usd:g} daily cap spent today"
        )
        if self.unreadable:
            said += f"; {self.unreadable} reply(ies) unreadable, not scored"
        out = [said]
        if self.capped:
            out.append(
                f"judge {self.judge}: daily cap reached; {self.waiting} sampled output(s) wait for tomorrow "
                "(the score metric sees fewer samples)"
            )
        if self.warning:
            out.append(self.warning)
        return out


def day_start(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(UTC).date(), time(), UTC)


def spent_today(session: Session, deployment: str, now: datetime) -> float:
    """The judge's spend for ``deployment`` since the start of ``now``'s UTC day: sampled outputs scored and
    a shadow stage's pairs compared (pairshift.shadow) share the one daily cap."""
    c = OutputSample.__table__.c  # type: ignore[attr-defined]
    p = ShadowPair.__table__.c  # type: ignore[attr-defined]
    start = day_start(now)
    spent = session.scalar(
        select(func.coalesce(func.sum(c.cost_usd), 0.0)).where(
            c.deployment == deployment, c.kind == "judge", c.judged_at >= start
        )
    )
    pairs = session.scalar(
        select(func.coalesce(func.sum(p.judge_cost_usd), 0.0)).where(
            p.deployment == deployment, p.judged_at >= start
        )
    )
    return float(spent or 0.0) + float(pairs or 0.0)


def judge_setup(
    session: Session, judge: CanaryJudge, deployment: str, now: datetime, under_test: tuple[str, ...]
) -> tuple[ModelSpec, str | None, float]:
    """What a judge round needs first: the judge's spec, the same-family warning against the models under
    test, and the deployment's judge spend today (the daily cap is shared by sampled outputs and pairs)."""
    resolved = resolve_model(session, judge.model)
    if resolved is None:
        raise LookupError(f"canary.judge {judge.model} is not a known model")
    peers = [r.row for m in under_test if (r := resolve_model(session, m)) is not None]
    warning = judges.same_family_warning(resolved.row, peers) if peers else None
    return resolved.spec(), warning, spent_today(session, deployment, now)


def _add_score(session: Session, sample: OutputSample, score: float) -> bool:
    """Add ``score`` to the sample's unit row of its stage; False when the row is not stored yet."""
    a = UnitAggregate.__table__.c  # type: ignore[attr-defined]
    result = session.execute(
        update(UnitAggregate.__table__)  # type: ignore[arg-type]
        .where(
            a.migration == sample.migration,
            a.percent == sample.percent,
            a.variant == sample.variant,
            a.unit == sample.unit,
        )
        .values(
            score_n=a.score_n + 1, score_sum=a.score_sum + score, score_sumsq=a.score_sumsq + score * score
        )
    )
    return bool(result.rowcount)


def _unit_stored(session: Session, sample: OutputSample) -> bool:
    a = UnitAggregate.__table__.c  # type: ignore[attr-defined]
    return (
        session.scalar(
            select(func.count()).where(
                a.migration == sample.migration,
                a.percent == sample.percent,
                a.variant == sample.variant,
                a.unit == sample.unit,
            )
        )
        or 0
    ) > 0


async def judge_round(
    registry: Registry,
    deployment: str,
    migration: str,
    judge: CanaryJudge,
    *,
    now: datetime,
    complete: Complete | None = None,
    under_test: tuple[str, ...] = (),
    seconds: float = ROUND_SECONDS,
) -> JudgeRound:
    """Score the migration's unscored samples within the daily cap (see the module doc)."""
    call = complete or providers.complete
    with registry.session() as s:
        spec, warning, spent = judge_setup(s, judge, deployment, now, under_test)
        todo = list(
            s.scalars(
                select(OutputSample)
                .where(
                    OutputSample.deployment == deployment,  # type: ignore[arg-type]
                    OutputSample.migration == migration,  # type: ignore[arg-type]
                    OutputSample.kind == "judge",  # type: ignore[arg-type]
                    OutputSample.judged_at.is_(None),  # type: ignore[union-attr]
                )
                .order_by(OutputSample.id)  # type: ignore[arg-type]
                .limit(JUDGED_PER_CHECK)
            )
        )
        s.expunge_all()
    out = JudgeRound(
        judge=judge.model, cap_usd=judge.max_cost_usd_per_day, spent_today_usd=spent, warning=warning
    )
    started = monotonic()
    for i, sample in enumerate(todo):
        if i and monotonic() - started > seconds:  # at least one call a round: progress
            out.waiting = len(todo) - i
            break
        prompt = judge_prompt(judge.rubric, sample.input, sample.output)
        if spent + cost_bound(spec, prompt) > judge.max_cost_usd_per_day:
            out.capped, out.waiting = True, len(todo) - i
            break
        with registry.session() as s:
            if not _unit_stored(s, sample):
                continue  # its observation is not stored yet: score it at the next check
        done = await call(spec, None, [Message(role="user", content=prompt)], JUDGE_PARAMS)
        verdict = parse_rubric_reply(done.text, None)
        unreadable = verdict.grader_error
        score = None if unreadable or not math.isfinite(verdict.score) else min(max(verdict.score, 0.0), 1.0)
        with registry.session() as s:
            row = s.get(OutputSample, sample.id)
            assert row is not None
            row.score, row.cost_usd, row.judged_at = score, done.cost_usd, now
            s.add(row)
            if score is not None:
                _add_score(s, row, score)
            s.commit()
        spent += done.cost_usd
        out.cost_usd += done.cost_usd
        out.judged += score is not None
        out.unreadable += score is None
    out.spent_today_usd = spent
    return out
