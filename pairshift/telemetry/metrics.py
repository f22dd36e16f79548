"""The Prometheus metrics of pairshift's processes (``prometheus-client``), served at ``/metrics``.

Counters live in prometheus-client's default registry, so one process (``pairshift api`` or ``pairshift
worker``) exposes what it did itself: the API the router answers and the observations it took, the worker
the gate checks, phases, provider calls and eval calls of the activities it ran. Label values are bounded
by configuration (deployments, variants, models, outcomes, phases, decisions), never by traffic (no unit,
no run id). Names follow Prometheus' conventions: counters end in ``_total`` on the wire.

``pairshift api`` adds the registry's current view at scrape time (:class:`RegistryCollector`): migrations by
phase and each deployment's canary percent, so a dashboard shows the split without a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Latency buckets in seconds: LLM calls run from tens of milliseconds to minutes.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)

ROUTER_ASSIGNMENTS = Counter(
    "pairshift_router_assignments",
    "Units pairshift api routed, by deployment and variant (resolve, and complete calls served).",
    ["deployment", "variant"],
)
OBSERVATIONS = Counter(
    "pairshift_observations",
    "Observations by source (api, otlp, writer) and result (accepted, refused, dropped).",
    ["source", "result"],
)
OBSERVED_CALLS = Counter(
    "pairshift_observed_calls",
    "Accepted production calls by deployment, variant and outcome (ok, error, invalid).",
    ["deployment", "variant", "outcome"],
)
OBSERVED_LATENCY = Histogram(
    "pairshift_observed_latency_seconds",
    "Latency of accepted production calls, by deployment and variant.",
    ["deployment", "variant"],
    buckets=LATENCY_BUCKETS,
)
OBSERVED_COST = Counter(
    "pairshift_observed_cost_usd",
    "Cost of accepted production calls in USD, by deployment and variant.",
    ["deployment", "variant"],
)
GATE_CHECKS = Counter(
    "pairshift_gate_checks",
    "Canary stage checks by decision (pass, inconclusive, breach, srm).",
    ["decision"],
)
MIGRATION_PHASES = Counter(
    "pairshift_migration_phase_transitions",
    "Migration runs entering a phase (recorded by the worker).",
    ["phase"],
)
PROVIDER_CALLS = Counter(
    "pairshift_provider_calls",
    "Logical provider calls by model and outcome (ok, or the error kind after the last attempt).",
    ["model", "outcome"],
)
PROVIDER_RATE_LIMITED = Counter(
    "pairshift_provider_rate_limited",
    "Provider attempts answered 429 (rate limited or quota), by model.",
    ["model"],
)
PROVIDER_RETRIES = Counter(
    "pairshift_provider_retries",
    "Provider attempts retried by the one retry loop (pairshift.providers.complete), by model.",
    ["model"],
)
PROVIDER_COST = Counter(
    "pairshift_provider_cost_usd",
    "Cost of successful provider calls in USD, by model.",
    ["model"],
)
PROVIDER_TOKENS = Counter(
    "pairshift_provider_tokens",
    "Tokens of successful provider calls, by model and direction (input, output).",
    ["model", "direction"],
)
PROVIDER_LATENCY = Histogram(
    "pairshift_provider_latency_seconds",
    "Wall time of successful provider calls (the successful attempt), by model.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
EVAL_CALLS = Counter(
    "pairshift_eval_calls",
    "Eval (case, epoch) calls finished by batch activities: made, cached (reused) or error.",
    ["kind"],
)
OTLP_SPANS = Counter(
    "pairshift_otlp_spans",
    "Spans received on POST /v1/traces: stored, skipped (a GenAI span that does not map or disagrees with "
    "the split; reason says which) or ignored (not a model call).",
    ["result", "reason"],
)


def observe_stored(source: str, items: Iterable[Any]) -> int:
    """Count accepted observations (``ObservationIn``-shaped) by deployment, variant and outcome."""
    n = 0
    for o in items:
        n += 1
        OBSERVED_CALLS.labels(o.deployment, o.variant, o.outcome).inc()
        OBSERVED_LATENCY.labels(o.deployment, o.variant).observe(o.latency_ms / 1000.0)
        if o.cost_usd:
            OBSERVED_COST.labels(o.deployment, o.variant).inc(o.cost_usd)
    if n:
        OBSERVATIONS.labels(source, "accepted").inc(n)
    return n


class RegistryCollector(Collector):
    """The registry at scrape time: migrations by phase and each deployment's canary percent."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from sqlalchemy import func, select
        from sqlalchemy.exc import SQLAlchemyError

        from pairshift.registry.models import Deployment, MigrationRow, PolicyRow

        phases = GaugeMetricFamily(
            "pairshift_migrations", "Migration runs in the registry by phase.", labels=["phase"]
        )
        split = GaugeMetricFamily(
            "pairshift_canary_percent",
            "Share of a deployment's units routed to its candidate pair (0 without a migration).",
            labels=["deployment"],
        )
        bounds = GaugeMetricFamily(
            "pairshift_canary_bound",
            "The canary gate's bounds in each deployment's policy: error_rate_max_increase (absolute), "
            "latency_p95_max_ratio and cost_per_call_max_ratio (candidate / control).",
            labels=["deployment", "metric"],
        )
        try:
            with self._registry.session() as s:
                by_phase = s.execute(
                    select(MigrationRow.phase, func.count()).group_by(MigrationRow.phase)
                ).all()
                deployments = s.execute(
                    select(Deployment.name, Deployment.canary_percent, Deployment.policy)
                ).all()
                specs = dict(s.execute(select(PolicyRow.name, PolicyRow.spec)).all())
        except SQLAlchemyError as exc:  # a scrape never fails on the registry: the counters still answer
            log.warning("metrics: registry unavailable: %s", exc)
            return
        for phase, count in by_phase:
            phases.add_metric([phase], count)
        for name, percent, policy in deployments:
            split.add_metric([name], percent or 0.0)
            for metric, bound in _bounds(specs.get(policy)).items():
                bounds.add_metric([name, metric], bound)
        yield phases
        yield split
        yield bounds


def _bounds(spec: dict[str, Any] | None) -> dict[str, float]:
    """The gated bounds of a stored policy spec (the defaults when the policy row is missing)."""
    from pydantic import ValidationError

    from pairshift.policy import Policy

    try:
        gates = Policy.model_validate(spec or {}).canary.metrics
    except ValidationError:
        return {}
    out: dict[str, float] = {}
    if gates.error_rate is not None:
        out["error_rate_max_increase"] = gates.error_rate.max_increase
    if gates.latency_p95 is not None:
        out["latency_p95_max_ratio"] = gates.latency_p95.max_ratio
    if gates.cost_per_call is not None:
        out["cost_per_call_max_ratio"] = gates.cost_per_call.max_ratio
    return out


def exposition(*extra: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition of the process's metrics plus ``extra`` registries, and its content type."""
    body = generate_latest(REGISTRY) + b"".join(generate_latest(r) for r in extra)
    return body, CONTENT_TYPE_LATEST


def serve_metrics(address: str) -> Any:
    """Serve ``/metrics`` of this process on ``host:port`` (the worker's endpoint; port 0 picks a free one).

    Returns the server (``server_port`` is the bound port; ``shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1")
    return server
