"""Online checks: ``online_checks:`` on a deployment, reference-free assertions run on every served output.

The checks use the dataset's assertion vocabulary (``is-json``, ``contains-json`` with a JSON schema,
``regex``, ``not-contains``, ``starts-with``, ``word-count``, ``assert-set``, every ``not-`` form...) with
their values inline, so they need no reference answer. They run wherever pairshift serves an output:
``Router.complete``, ``POST /v1/deployments/{name}/complete`` and the gateway, plain or streamed
(:mod:`pairshift.completion`). An output that fails one is recorded as outcome ``invalid``, with the failing
check in the observation's ``detail``, and the canary gates ``invalid_rate`` like ``error_rate``
(unit-clustered; :mod:`pairshift.gates`).

Refused at apply, naming the check: model-graded types (they need a judge and a call per output), scripts
(``python``/``javascript``: no code runs on the serving path) and ``latency``/``cost`` (the canary gates
those already).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pairshift.datasets import MODEL_GRADED_TYPES, Case
from pairshift.datasets.cases import DatasetError, build_case
from pairshift.scorers import Output, score_case_sync

NOT_ONLINE = {
    "python": "a script: no code runs on the serving path",
    "javascript": "a script: no code runs on the serving path",
    "latency": "the canary gates latency_p95 already",
    "cost": "the canary gates cost_per_call already",
}


class OnlineCheckError(ValueError):
    """``online_checks`` that cannot run on every output; the message names the check."""


def build(checks: Sequence[dict[str, Any]]) -> Case | None:
    """The checks as one case without variables (None when none); raises :class:`OnlineCheckError`."""
    if not checks:
        return None
    try:
        case = build_case({"id": "online-checks", "vars": {}, "assert": list(checks)}, "online_checks")
    except DatasetError as exc:
        raise OnlineCheckError(str(exc).removeprefix("online_checks, case 'online-checks': ")) from None
    for i, a in enumerate(case.assert_):
        for one in [a, *(a.assert_ or [])]:
            why = NOT_ONLINE.get(one.base_type)
            if one.base_type in MODEL_GRADED_TYPES:
                why = "model-graded: it needs a judge (canary.judge samples outputs instead)"
            if why:
                raise OnlineCheckError(f"check {i + 1} ({one.type}) cannot run online: {why}")
    return case


def failure(case: Case, text: str) -> str | None:
    """The first check ``text`` fails, as ``online check <name>: <reason>``; None when every check passes."""
    scored = score_case_sync(case, Output(text=text))
    if scored.passed:
        return None
    failed = next((r for r in scored.results if not r.passed and r.parent is None), scored.results[0])
    return f"online check {failed.metric or failed.type}: {failed.reason}"
