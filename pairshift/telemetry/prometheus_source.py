"""``canary.source: prometheus``: a stage's per-variant numbers from PromQL, not pairshift's observations.

Teams whose LLM calls are already counted in Prometheus (Argo Rollouts and Flagger read the metrics teams
have) point the canary at those counters: the policy's queries (:class:`pairshift.policy.PrometheusQueries`)
answer, per variant, the calls, errors and optionally invalid outputs of the stage, its p95 latency and its
total cost. :func:`fetch` runs them against Prometheus' HTTP API; :func:`prometheus_gate` (pure) judges them.

What the decision keeps and what it cannot:

- error and invalid rate keep the canary's always-valid decision (:func:`pairshift.gates.stage_gate`) on the
  counts. Prometheus has no per-unit aggregates, so the variance is the per-call one: calls are taken as
  independent, which is narrower than the builtin source's cluster-robust variance when a few units make many
  calls. The sample-ratio check needs units and is not run.
- latency p95 and cost per call are single numbers: compared as point estimates (candidate / control against
  the policy's ``max_ratio``) once both arms have :data:`~pairshift.gates.MIN_RATIO_SAMPLES` calls, as an
  Argo analysis template's success condition would; they say so in their reason.
- score is not read from Prometheus (not measured).
"""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pairshift.contracts.gates import StageCheck
from pairshift.gates import MIN_RATIO_SAMPLES, stage_gate
from pairshift.policy import CanaryPolicy, PrometheusSource
from pairshift.unit_stats import RatioSums, VariantStats

VARIANTS: tuple[Literal["control", "candidate"], ...] = ("control", "candidate")
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class PrometheusQueryError(RuntimeError):
    """Prometheus did not answer a query with one number (the check is retried like any failed check)."""


def render(query: str, values: dict[str, str]) -> str:
    """``query`` with its ``{{name}}`` placeholders filled in."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], query)


def _number(body: Any, query: str) -> float | None:
    """The one number of an instant query's answer; None when the vector is empty (no series yet)."""
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise PrometheusQueryError(f"Prometheus refused {query!r}: {error or 'no success status'}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return float(result[1])
    if kind == "vector":
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusQueryError(
                f"{query!r} answered {len(result)} series; aggregate it to one (sum(...), max(...))"
            )
        return float(result[0]["value"][1])
    raise PrometheusQueryError(f"{query!r} answered a {kind}; an instant vector or scalar is needed")


def fetch(
    source: PrometheusSource,
    *,
    deployment: str,
    migration: str,
    since: datetime,
    now: datetime | None = None,
    client: Any = None,
) -> dict[str, dict[str, float | None]]:
    """Run every query of ``source`` for both variants: ``{variant: {metric: value or None}}``."""
    import httpx

    now = now or datetime.now(UTC)
    window = f"{max(1, math.ceil((now - since).total_seconds()))}s"
    headers = {}
    if source.bearer_token_env:
        token = os.environ.get(source.bearer_token_env)
        if not token:
            raise PrometheusQueryError(
                f"environment variable {source.bearer_token_env} (the token) is not set"
            )
        headers["authorization"] = f"Bearer {token}"
    queries = {k: v for k, v in source.queries.model_dump().items() if v is not None}
    own = client is None
    http = client or httpx.Client(timeout=source.timeout_s)
    out: dict[str, dict[str, float | None]] = {}
    try:
        for variant in VARIANTS:
            values = {"deployment": deployment, "variant": variant, "migration": migration, "window": window}
            out[variant] = {}
            for metric, template in queries.items():
                query = render(template, values)
                r = http.get(
                    source.url.rstrip("/") + "/api/v1/query",
                    params={"query": query, "time": f"{now.timestamp():.3f}"},
                    headers=headers,
                )
                try:
                    body = r.json()
                except ValueError:
                    raise PrometheusQueryError(f"Prometheus answered {r.status_code} without JSON") from None
                out[variant][metric] = _number(body, query)
    finally:
        if own:
            http.close()
    return out


def _counts(y: float, n: float) -> RatioSums:
    """Counts as if every call were its own unit: the per-call variance (no per-unit data in Prometheus)."""
    n, y = max(0.0, n), min(max(0.0, y), max(0.0, n))
    return RatioSums(units=int(n), y=y, n=n, yy=y, nn=n, yn=y, call_sq=y)


def variant_stats(values: dict[str, float | None]) -> VariantStats:
    """A variant's :class:`VariantStats` from its query values (score, units and latency left empty)."""
    calls = values.get("calls") or 0.0
    return VariantStats(
        n=int(round(calls)),
        errors=_counts(values.get("errors") or 0.0, calls),
        invalid=_counts(values.get("invalid") or 0.0, calls),
    )


def _point(
    name: str, control: float | None, candidate: float | None, max_ratio: float, calls: tuple[int, int]
) -> dict[str, Any]:
    if min(calls) < MIN_RATIO_SAMPLES:
        why = f"too few calls ({calls[0]} control, {calls[1]} candidate; {MIN_RATIO_SAMPLES} needed)"
        return {"verdict": "inconclusive", "reason": f"{name} (prometheus): {why}"}
    if control is None or candidate is None or not control > 0:
        return {
            "verdict": "inconclusive",
            "reason": f"{name} (prometheus): no value for an arm (control {control}, candidate {candidate})",
        }
    ratio = candidate / control
    verdict = "breach" if ratio > max_ratio else "ok"
    said = "above" if verdict == "breach" else "within"
    return {
        "control": control,
        "candidate": candidate,
        "ratio": ratio,
        "limit": max_ratio,
        "verdict": verdict,
        "reason": (
            f"{name} (prometheus): control {control:.4g}, candidate {candidate:.4g}, ratio {ratio:.3f} "
            f"{said} max {max_ratio:.3f} (a point estimate: Prometheus gives no interval)"
        ),
    }


def prometheus_gate(
    values: dict[str, dict[str, float | None]],
    percent: float,
    canary: CanaryPolicy,
    *,
    elapsed_hours: float,
    min_hours: float,
) -> StageCheck:
    """Judge one check from the queries' values (pure): rates by :func:`stage_gate`, the rest by point."""
    control, candidate = variant_stats(values["control"]), variant_stats(values["candidate"])
    rates_only = canary.model_copy(
        update={
            "metrics": canary.metrics.model_copy(
                update={"latency_p95": None, "cost_per_call": None, "score": None}
            )
        }
    )
    check = stage_gate(
        control, candidate, percent, rates_only, elapsed_hours=elapsed_hours, min_hours=min_hours
    )
    if percent >= 100:
        return check
    calls = (control.n, candidate.n)
    points: dict[str, dict[str, Any]] = {}
    if canary.metrics.latency_p95 is not None:
        points["latency_p95"] = _point(
            "latency_p95",
            values["control"].get("latency_p95_ms"),
            values["candidate"].get("latency_p95_ms"),
            canary.metrics.latency_p95.max_ratio,
            calls,
        )
    if canary.metrics.cost_per_call is not None:
        per_call = {
            v: (values[v].get("cost_usd") or 0.0) / n if n else None
            for v, n in zip(VARIANTS, calls, strict=True)
        }
        points["cost_per_call"] = _point(
            "cost_per_call",
            per_call["control"],
            per_call["candidate"],
            canary.metrics.cost_per_call.max_ratio,
            calls,
        )
    decision = check.decision
    verdicts = {m["verdict"] for m in points.values()}
    if "breach" in verdicts:
        decision = "breach"
    elif decision == "pass" and "inconclusive" in verdicts:
        decision = "inconclusive"
    return check.model_copy(
        update={
            "decision": decision,
            "reasons": [*check.reasons, *(m["reason"] for m in points.values())],
            "metrics": {**check.metrics, **points},
        }
    )
