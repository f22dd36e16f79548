"""Score one case's output: every assertion, ``not-``, weights, assert-set and thresholds (promptfoo's rules).

What is implemented (promptfoo src/assertions/index.ts and assertionsResult.ts, docs "Assertions & metrics"):

- an assertion's score is in [0, 1]; ``not-X`` passes when X fails and scores ``1 - score``;
- ``weight: 0`` makes an assertion a pure measurement: it always passes and does not count in the score;
- a group (the case, or an ``assert-set``) scores the weighted mean of its members' scores (0 when the
  total weight is 0) and passes when every member passes; when the group has a ``threshold`` the weighted
  score alone decides (``score >= threshold``), overriding individual failures. An ``assert-set`` counts in
  its case as one assertion with its own weight;
- an output with ``error`` set fails every assertion with score 0 and the error as reason;
- a case without assertions passes with score 1 (the importers refuse such cases).

Assertion values are rendered with the case vars first (``value: "{{expected_team}}"``), as promptfoo does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from pairshift.datasets import MODEL_GRADED_TYPES, Assertion, Case, render_value
from pairshift.scorers.assertions import CHECKS, Output, Verdict
from pairshift.scorers.model_graded import Judge, ScorerError, grade

# Position of an assertion in a case: (index in case.assert_, index inside its assert-set or None).
Position = tuple[int, int | None]


class AssertionResult(BaseModel):
    """One assertion's outcome. ``parent`` is the index of the enclosing assert-set in the case, if any."""

    type: str
    passed: bool
    score: float
    reason: str
    weight: float
    metric: str | None = None
    parent: int | None = None


class CaseScore(BaseModel):
    """A case's verdict: ``results`` lists each assertion, an assert-set's children right after it."""

    passed: bool
    score: float
    results: list[AssertionResult]


def _walk(case: Case) -> list[tuple[Position, Assertion]]:
    found: list[tuple[Position, Assertion]] = []
    for i, a in enumerate(case.assert_):
        found.append(((i, None), a))
        found.extend(((i, j), child) for j, child in enumerate(a.assert_ or []))
    return found


def model_graded_positions(case: Case) -> list[tuple[Position, Assertion]]:
    return [(pos, a) for pos, a in _walk(case) if a.base_type in MODEL_GRADED_TYPES]


def _finish(a: Assertion, verdict: Verdict, parent: int | None) -> AssertionResult:
    passed, score, reason = verdict.passed, verdict.score, verdict.reason
    if a.inverse and not verdict.grader_error:
        passed = not passed
        score = score if verdict.fixed_score else min(1.0, max(0.0, 1.0 - score))
        detail = "" if verdict.reason == "Assertion passed" else f" ({verdict.reason})"
        reason = "Assertion passed" if passed else f"Expected {a.base_type} not to hold, but it does{detail}"
    if a.weight == 0:
        passed = True  # promptfoo: a weight-0 assertion records a metric and cannot fail the case
    return AssertionResult(
        type=a.type,
        passed=passed,
        score=score,
        reason=reason,
        weight=a.weight,
        metric=a.metric,
        parent=parent,
    )


def _deterministic(a: Assertion, case: Case, output: Output) -> Verdict:
    try:
        return CHECKS[a.base_type](render_value(a.value, case.vars), a, output)
    except Exception as exc:  # noqa: BLE001 — a check that cannot run fails its assertion, never the run
        return Verdict(False, 0.0, f"Assertion error: {exc}", grader_error=True)


def _combine(results: list[AssertionResult], threshold: float | None) -> tuple[bool, float]:
    total = sum(r.weight for r in results)
    score = sum(r.score * r.weight for r in results) / total if total > 0 else 0.0
    passed = all(r.passed for r in results)
    if threshold is not None:
        passed = score >= threshold
    return passed, score


def _aggregate(case: Case, output: Output, graded: dict[Position, Verdict]) -> CaseScore:
    if not output.vars and case.vars:  # the checks see the case's vars (once per case, not per assertion)
        output = output.model_copy(update={"vars": case.vars})

    def verdict_for(pos: Position, a: Assertion) -> Verdict:
        return graded[pos] if a.base_type in MODEL_GRADED_TYPES else _deterministic(a, case, output)

    top: list[AssertionResult] = []
    flat: list[AssertionResult] = []
    for i, a in enumerate(case.assert_):
        if a.base_type != "assert-set":
            top.append(_finish(a, verdict_for((i, None), a), None))
            flat.append(top[-1])
            continue
        children = [_finish(c, verdict_for((i, j), c), i) for j, c in enumerate(a.assert_ or [])]
        passed, score = _combine(children, a.threshold)
        total = sum(1 for c in children if c.passed)
        reason = f"{total}/{len(children)} assertions in the set passed; weighted score {score:.2f}"
        top.append(_finish(a, Verdict(passed, score, reason), None))
        flat.extend([top[-1], *children])
    if not top:
        return CaseScore(passed=True, score=1.0, results=[])
    passed, score = _combine(top, case.threshold)
    return CaseScore(passed=passed, score=score, results=flat)


def _errored(case: Case, output: Output) -> CaseScore:
    results = [
        AssertionResult(
            type=a.type,
            passed=False,
            score=0.0,
            reason=f"Output error: {output.error}",
            weight=a.weight,
            metric=a.metric,
            parent=pos[0] if pos[1] is not None else None,
        )
        for pos, a in _walk(case)
    ]
    return CaseScore(passed=False, score=0.0, results=results)


async def score_case(case: Case, output: Output, *, judge: Judge | None = None) -> CaseScore:
    """Score every assertion of ``case`` on ``output``; model-graded ones ask ``judge`` concurrently."""
    if output.error is not None:
        return _errored(case, output)
    pending = model_graded_positions(case)

    async def ask(a: Assertion) -> Verdict:
        return await grade(a, render_value(a.value, case.vars), case, output, judge)

    verdicts: list[Any] = await asyncio.gather(*(ask(a) for _, a in pending))
    return _aggregate(case, output, {pos: v for (pos, _), v in zip(pending, verdicts, strict=True)})


def score_case_sync(case: Case, output: Output) -> CaseScore:
    """Deterministic-only fast path; raises ScorerError when the case has a model-graded assertion."""
    pending = model_graded_positions(case)
    if pending:
        raise ScorerError(
            f"case {case.id!r}: {pending[0][1].type!r} is model-graded; use score_case with a judge"
        )
    if output.error is not None:
        return _errored(case, output)
    return _aggregate(case, output, {})
