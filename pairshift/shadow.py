"""The shadow stage's store side: its pairs' statistics for the gate, the pairwise judge round, retention.

A shadow stage (``{shadow: P}``) serves nobody from the candidate: routers mirror P% of units' control
requests to it (:mod:`pairshift.mirror`) and store each answered mirror as a ``shadow_pairs`` row. This module
reads those rows back: :func:`stage_pairs` gives the gate control's and the candidate's statistics over the
same mirrored inputs (``VariantStats`` of each arm, clustered by unit) and the pair scores' ``RatioSums``;
:func:`judge_pairs` has the canary's judge compare the two outputs of each unjudged pair in both orders
(position bias cancels: :mod:`pairshift.pairwise`), within the judge's daily cap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
from time import monotonic
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from pairshift import providers
from pairshift.online_judge import JUDGE_PARAMS, ROUND_SECONDS, Complete, cost_bound, judge_setup
from pairshift.pairwise import pair_score, pairwise_prompt, parse_preference
from pairshift.policy import CanaryJudge
from pairshift.providers import Message
from pairshift.registry.models import ShadowPair
from pairshift.registry.store import Registry
from pairshift.unit_stats import RatioSums, VariantStats

RanksFor = Callable[[int], Iterable[int]]
PAIRS_PER_CHECK = 100  # pairs one gate check judges at most (two calls each: the canary judge's 200 calls)
CONTROL_ERRORS = ("error", "fallback")  # a control call that failed (the chain served) counts as its error


def delete_older_than(session: Session, cutoff: datetime) -> int:
    """Delete shadow pairs stored before ``cutoff`` (retention); returns how many."""
    result = session.execute(delete(ShadowPair).where(ShadowPair.at < cutoff))  # type: ignore[arg-type]
    session.commit()
    return int(result.rowcount or 0)


# ---- the gate's statistics


def stage_pairs(
    session: Session, migration: str, shadow: float, *, ranks_for: RanksFor | None = None
) -> tuple[VariantStats, VariantStats, RatioSums]:
    """(control, candidate, pair scores) of one shadow stage: each arm's calls on the mirrored requests only,
    clustered by unit (one latency per unit: its first answered call, as the live gate reads it), and the
    judged pairs' scores summed by unit (y = a unit's pair scores, n = its judged pairs)."""
    c = ShadowPair.__table__.c  # type: ignore[attr-defined]
    rows = session.execute(
        select(
            c.unit,
            c.control_outcome,
            c.control_latency_ms,
            c.control_cost_usd,
            c.candidate_outcome,
            c.candidate_latency_ms,
            c.candidate_cost_usd,
            c.score,
        )
        .where(c.migration == migration, c.shadow == shadow)
        .order_by(c.id)
    ).all()
    units: dict[str, dict[str, list[float]]] = {}
    for unit, c_out, c_lat, c_cost, t_out, t_lat, t_cost, score in rows:
        u = units.setdefault(unit, {})
        for arm, outcome, latency, cost in (("c", c_out, c_lat, c_cost), ("t", t_out, t_lat, t_cost)):
            _add(u, arm, outcome, latency, cost or 0.0)
        if score is not None:
            _sum(u, "pair", [1.0, score, score * score])
    return _arm(units, "c", ranks_for), _arm(units, "t", ranks_for), _pairs(units)


def _sum(u: dict[str, list[float]], key: str, values: list[float]) -> None:
    acc = u.setdefault(key, [0.0] * len(values))
    for i, v in enumerate(values):
        acc[i] += v


def _add(u: dict[str, list[float]], arm: str, outcome: str, latency: float | None, cost: float) -> None:
    error = outcome in CONTROL_ERRORS
    # calls, errors, invalid, cost, cost^2
    _sum(u, arm, [1.0, float(error), float(outcome == "invalid"), cost, cost * cost])
    if not error and latency is not None and f"{arm}_latency" not in u:
        u[f"{arm}_latency"] = [latency]


def _arm(units: dict[str, dict[str, list[float]]], arm: str, ranks_for: RanksFor | None) -> VariantStats:
    sums = np.array([u[arm] for u in units.values()], dtype=float).reshape(-1, 5)
    latency = [u[f"{arm}_latency"][0] for u in units.values() if f"{arm}_latency" in u]
    return VariantStats.from_units(
        sums[:, 0],
        sums[:, 1],
        invalid=sums[:, 2],
        cost_sum=sums[:, 3],
        cost_sumsq=float(sums[:, 4].sum()),
        first_latency=latency,
        ranks=ranks_for(len(latency)) if ranks_for is not None else None,
    )


def _pairs(units: dict[str, dict[str, list[float]]]) -> RatioSums:
    judged = np.array([u["pair"] for u in units.values() if "pair" in u], dtype=float).reshape(-1, 3)
    return RatioSums.from_units(judged[:, 1], judged[:, 0], float(judged[:, 2].sum()))


# ---- the pairwise judge round


class PairRound(BaseModel):
    """What one pairwise round of the judge did, for the gate check's reasons."""

    judge: str
    judged: int = 0  # pairs scored (both orders read)
    unreadable: int = 0  # pairs dropped: an order's reply could not be read
    wins: int = 0  # pair score > 0.5
    ties: int = 0
    losses: int = 0
    cost_usd: float = 0.0
    spent_today_usd: float = 0.0
    cap_usd: float
    capped: bool = False
    waiting: int = 0
    warning: str | None = None

    def reasons(self) -> list[str]:
        said = (
            f"judge {self.judge}: {self.judged} mirrored pair(s) compared in both orders this check "
            f"({self.wins} candidate wins, {self.ties} ties, {self.losses} losses; ${self.cost_usd:.4f}); "
            f"${self.spent_today_usd:.4f} of the ${self.cap_usd:g} daily cap spent today"
        )
        if self.unreadable:
            said += f"; {self.unreadable} pair(s) with an unreadable reply dropped"
        out = [said]
        if self.capped:
            out.append(
                f"judge {self.judge}: daily cap reached; {self.waiting} mirrored pair(s) wait for tomorrow"
            )
        if self.warning:
            out.append(self.warning)
        return out


def _judgeable(deployment: str, migration: str, shadow: float) -> Any:
    c = ShadowPair.__table__.c  # type: ignore[attr-defined]
    return (
        c.deployment == deployment,
        c.migration == migration,
        c.shadow == shadow,
        c.judged_at.is_(None),
        c.control_outcome.in_(("ok", "invalid")),
        c.candidate_outcome.in_(("ok", "invalid")),
    )


async def judge_pairs(
    registry: Registry,
    deployment: str,
    migration: str,
    shadow: float,
    judge: CanaryJudge,
    *,
    now: datetime,
    complete: Complete | None = None,
    under_test: tuple[str, ...] = (),
    seconds: float = ROUND_SECONDS,
) -> PairRound:
    """Compare the stage's unjudged pairs, both orders each, within the judge's daily cap (module doc).

    The cap is the canary judge's (``max_cost_usd_per_day``), shared with its sampled outputs: a pair is
    judged only if the day's spend plus an upper bound of both its calls stays within it."""
    call = complete or providers.complete
    with registry.session() as s:
        spec, warning, spent = judge_setup(s, judge, deployment, now, under_test)
        todo = list(
            s.scalars(
                select(ShadowPair)
                .where(*_judgeable(deployment, migration, shadow))
                .order_by(ShadowPair.id)  # type: ignore[arg-type]
                .limit(PAIRS_PER_CHECK)
            )
        )
        s.expunge_all()
    out = PairRound(
        judge=judge.model, cap_usd=judge.max_cost_usd_per_day, spent_today_usd=spent, warning=warning
    )
    started = monotonic()
    for i, pair in enumerate(todo):
        if i and monotonic() - started > seconds:
            out.waiting = len(todo) - i
            break
        candidate = pair.candidate_output or ""
        prompts = (
            pairwise_prompt(judge.rubric, pair.input, candidate, pair.control_output),  # candidate as A
            pairwise_prompt(judge.rubric, pair.input, pair.control_output, candidate),  # candidate as B
        )
        if spent + sum(cost_bound(spec, p) for p in prompts) > judge.max_cost_usd_per_day:
            out.capped, out.waiting = True, len(todo) - i
            break
        replies = await asyncio.gather(
            *(call(spec, None, [Message(role="user", content=p)], JUDGE_PARAMS) for p in prompts)
        )
        as_a, as_b = (parse_preference(r.text) for r in replies)
        score = pair_score(as_a, as_b)
        cost = sum(r.cost_usd for r in replies)
        with registry.session() as s:
            row = s.get(ShadowPair, pair.id)
            assert row is not None
            row.score, row.judge_cost_usd, row.judged_at = score, cost, now
            row.verdict = f"candidate as A: {as_a or 'unreadable'}; as B: {as_b or 'unreadable'}"
            s.add(row)
            s.commit()
        spent += cost
        out.cost_usd += cost
        if score is None:
            out.unreadable += 1
            continue
        out.judged += 1
        out.wins += score > 0.5
        out.ties += score == 0.5
        out.losses += score < 0.5
    out.spent_today_usd = spent
    return out


def shadow_invalid_details(
    session: Session, migration: str, shadow: float, limit: int = 3
) -> list[tuple[str, int]]:
    """The commonest reasons the candidate's mirrored outputs were invalid, with their counts."""
    c = ShadowPair.__table__.c  # type: ignore[attr-defined]
    detail = func.coalesce(c.candidate_detail, "(no detail)")
    rows = session.execute(
        select(detail, func.count())
        .where(c.migration == migration, c.shadow == shadow, c.candidate_outcome == "invalid")
        .group_by(detail)
        .order_by(func.count().desc(), detail)
        .limit(limit)
    )
    return [(str(d), int(n)) for d, n in rows]
