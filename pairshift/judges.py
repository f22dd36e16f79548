"""The judge: the model grading model-graded assertions, named by the policy (``eval.judge``), never guessed.

A judge that changed with the registry's contents (the alphabetically first live model of another family) made
the same eval grade differently after a calendar sync. So a policy names its judge, and:

- ``pairshift apply`` refuses a policy whose judge is unknown, retired, or retires within the horizon of a
  migration under that policy (:func:`policy_horizon`: its stages' longest durations and the approval wait),
  and a deployment whose golden dataset has model-graded assertions while its policy names no judge;
- eval planning refuses the same (a dataset or policy may have changed since) and keeps the warning when the
  judge is of the same family as a model under test (a model grading its own family is lenient with it).

Pure decisions over registry rows; the callers own the session and the error type.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Any

from pairshift.datasets import MODEL_GRADED_TYPES, Case
from pairshift.policy import Policy
from pairshift.registry.models import Model

JUDGE_KEY = "eval.judge"  # where a policy names its judge


def policy_horizon(policy: Policy) -> timedelta:
    """How long a migration under ``policy`` may run after it starts: every stage at its longest, plus the
    approval wait (a judge grades online samples for that long)."""
    hours = sum(s.max_hours if s.max_hours is not None else s.min_hours for s in policy.canary.stages)
    return timedelta(days=math.ceil((hours + policy.approvals.timeout_hours) / 24))


def judge_problem(
    judge: Model | None, name: str, today: date, horizon: timedelta = timedelta(0)
) -> str | None:
    """Why ``name`` cannot judge from ``today`` for ``horizon`` (unknown, retired, retiring soon), or None."""
    if judge is None:
        return f"judge {name} is not a known model (add it under models: or `pairshift models sync`)"
    if judge.retires_on is not None and judge.retires_on <= today:
        return f"judge {name} retired on {judge.retires_on}; name another model"
    if judge.retires_on is not None and judge.retires_on <= today + horizon:
        return (
            f"judge {name} retires on {judge.retires_on}, within the {horizon.days} days a migration under "
            "this policy may run; name a model that outlives it"
        )
    return None


def first_model_graded(cases: Iterable[Case]) -> tuple[str, str] | None:
    """(case id, assertion type) of the first model-graded assertion, nested ones included, or None."""
    for case in cases:
        for assertion in case.assert_:
            for a in (assertion, *(assertion.assert_ or [])):
                if a.base_type in MODEL_GRADED_TYPES:
                    return case.id, a.type
    return None


def first_model_graded_in(rows: Iterable[dict[str, Any]]) -> tuple[str, str] | None:
    """:func:`first_model_graded` over stored case rows (``DatasetCase.data``), without validating each."""
    for data in rows:
        for assertion in data.get("assert") or []:
            for a in (assertion, *(assertion.get("assert") or [])):
                kind = str(a.get("type", "")).removeprefix("not-")
                if kind in MODEL_GRADED_TYPES:
                    return str(data.get("id")), str(a.get("type"))
    return None


def missing_judge_message(where: str, graded: tuple[str, str]) -> str:
    """The refusal when model-graded assertions meet a policy without a judge: names the key to set."""
    case, kind = graded
    return (
        f"{where} has model-graded assertions ({kind} in case {case!r}) and its policy names no judge: set "
        f"`judge: MODEL_ID` in the policy's eval section (policies[].eval.judge)"
    )


def same_family_warning(judge: Model, under_test: Sequence[Model]) -> str | None:
    """A warning when the judge is of the same family as a model under test."""
    from pairshift.evals.planning import model_family  # the one family rule (eval planning owns it)

    family = model_family(judge.id, judge.provider)
    peers = sorted({m.id for m in under_test if model_family(m.id, m.provider) == family})
    if not peers:
        return None
    return (
        f"judge {judge.id} is of the same family as {', '.join(peers)} ({family}): it may grade its own "
        "family leniently; name a judge of another family for unbiased model-graded assertions"
    )
