"""A simulated production app for demos, tests and benchmarks: resolves units through a :class:`Router`, gets
an outcome for each request, and records observations, with a chosen per-model (or per-pair) behaviour.

Two ways to drive it:

- :meth:`TrafficGenerator.generate` (synchronous, clock-free): ``n`` requests' observations stamped ``at``,
  written straight to the registry in one transaction before it returns. Tests on Temporal's time-skipping
  server call it once per simulated interval, so the gate activity reads exactly the traffic of that interval.
- :meth:`TrafficGenerator.run` (async, paced): requests at ``rate_per_s`` for a duration, through
  :meth:`Router.complete` (the in-process sim provider) or :meth:`Router.record`, as a real app would.

Units are drawn uniformly by default; ``activity_sigma`` makes a few units make most of the calls, and
``error_prone_units`` gives a share of units a high error rate whatever the pair: the sticky heterogeneity
of real traffic (pairshift.sim.population models it for the calibration bench).

Outcomes are either synthesised from :class:`Behaviour` (error rate, invalid rate, a Beta score distribution,
log-normal latency, token counts) or, with ``use_sim``, produced by the sim snapshot answering the rendered
prompt (invalid = not a JSON object, score = triage correct), with the behaviour's error rate on top. Every
random draw comes from one seeded numpy Generator: the same seed and calls give the same traffic.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pairshift.observations import MAX_BATCH, ObservationIn, store_batch
from pairshift.providers import ProviderError, cost_usd
from pairshift.router import Assignment, Router
from pairshift.sim import snapshots

Outcome = Literal["ok", "error", "invalid"]


class Behaviour(BaseModel):
    """How one model (or pair) behaves in synthesised traffic."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(0.0, ge=0, le=1, description="share of calls that fail")
    invalid_rate: float = Field(0.0, ge=0, le=1, description="share of successful calls with invalid output")
    score_mean: float | None = Field(
        None, ge=0, le=1, description="mean 0..1 score; None: calls carry no score"
    )
    score_concentration: float = Field(
        20.0, gt=0, description="Beta(a+b): larger = scores closer to the mean"
    )
    latency_median_ms: float = Field(500.0, gt=0)
    latency_sigma: float = Field(0.3, ge=0, description="log-normal sigma of latency")
    input_tokens: int = Field(200, ge=0)
    output_tokens: int = Field(60, ge=0)


class TrafficProfile(BaseModel):
    """What traffic to generate: rate, unit population, behaviours, seed."""

    model_config = ConfigDict(extra="forbid")

    rate_per_s: float = Field(20.0, gt=0, description="requests per second in run()")
    units: int = Field(10_000, ge=1, description="distinct unit keys requests are drawn from")
    seed: int = 0
    behaviours: dict[str, Behaviour] = Field(default_factory=dict, description="by model id or pair id")
    default: Behaviour = Field(default_factory=Behaviour)
    use_sim: bool = Field(
        False, description="answer with the sim snapshot (sim models only) instead of synthesis"
    )
    vars_pool: list[dict[str, Any]] = Field(default_factory=list, description="prompt variables for use_sim")
    activity_sigma: float = Field(
        0.0,
        ge=0,
        le=4,
        description="log-normal sigma of the units' call rates: 0 = every unit equally active, 1.5 = a few "
        "units make most of the calls (as in pairshift.sim.population)",
    )
    error_prone_units: float = Field(
        0.0, ge=0, le=1, description="share of units whose calls fail at error_prone_rate, whatever the pair"
    )
    error_prone_rate: float = Field(0.5, ge=0, le=1)

    def behaviour(self, assignment: Assignment) -> Behaviour:
        return self.behaviours.get(assignment.pair) or self.behaviours.get(assignment.model) or self.default


def vars_from_dataset(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The ``vars`` of a JSONL dataset's cases, as a request pool for ``use_sim``."""
    out: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line)["vars"])
            if limit and len(out) >= limit:
                break
    return out


def production_vars(pool: Sequence[Mapping[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """``pool`` made production-like: each ticket quotes an order number, as real tickets do and curated
    golden cases seldom do (``sim-drift-2026-07`` wraps some of exactly these in prose)."""
    rng = np.random.default_rng([seed, 2])
    return [
        {**v, "ticket_body": f"{v.get('ticket_body', '')} (order {int(rng.integers(10_000, 99_999))})"}
        for v in pool
    ]


@dataclass
class _Result:
    outcome: Outcome
    latency_ms: float
    input_tokens: int
    output_tokens: int
    cost: float
    score: float | None


class TrafficGenerator:
    """See the module doc. The router must be started; ``generate`` writes to the router's registry."""

    def __init__(self, router: Router, profile: TrafficProfile | None = None) -> None:
        self.router = router
        self.profile = profile or TrafficProfile()
        self.rng = np.random.default_rng(self.profile.seed)
        self.sent = 0
        self.errors = 0
        if self.profile.use_sim and not self.profile.vars_pool:
            raise ValueError("use_sim needs vars_pool (e.g. vars_from_dataset(path))")
        # Sticky unit traits come from their own stream, so the default (iid) traffic's draws are unchanged.
        traits = np.random.default_rng([self.profile.seed, 1])
        n = self.profile.units
        weights = (
            traits.lognormal(0.0, self.profile.activity_sigma, n) if self.profile.activity_sigma else None
        )
        self._activity_cdf = None if weights is None else np.cumsum(weights) / weights.sum()
        self._error_prone = traits.random(n) < self.profile.error_prone_units

    def _unit_index(self) -> int:
        if self._activity_cdf is None:
            return int(self.rng.integers(self.profile.units))
        return min(int(np.searchsorted(self._activity_cdf, self.rng.random())), self.profile.units - 1)

    def _unit(self) -> str:
        return f"unit-{self._unit_index()}"

    def _error_rate(self, unit: str, b: Behaviour) -> float:
        prone = self.profile.error_prone_units and self._error_prone[int(unit.removeprefix("unit-"))]
        return self.profile.error_prone_rate if prone else b.error_rate

    def _vars(self) -> Mapping[str, Any]:
        pool = self.profile.vars_pool
        return pool[int(self.rng.integers(len(pool)))] if pool else {}

    def _synthesise(self, a: Assignment, b: Behaviour, error_rate: float | None = None) -> _Result:
        latency = float(b.latency_median_ms * np.exp(b.latency_sigma * self.rng.standard_normal()))
        if self.rng.random() < (b.error_rate if error_rate is None else error_rate):
            return _Result("error", latency, b.input_tokens, 0, 0.0, None)
        spec = self.router.split.models.get(a.model)
        cost = cost_usd(spec, b.input_tokens, b.output_tokens) if spec else 0.0
        outcome: Outcome = "invalid" if self.rng.random() < b.invalid_rate else "ok"
        score = None
        if b.score_mean is not None:
            m = min(max(b.score_mean, 1e-6), 1 - 1e-6)
            score = float(self.rng.beta(m * b.score_concentration, (1 - m) * b.score_concentration))
        return _Result(outcome, latency, b.input_tokens, b.output_tokens, cost, score)

    def _simulate(self, a: Assignment, b: Behaviour, variables: Mapping[str, Any]) -> _Result:
        spec, system, messages, params = self.router.request(a, variables)
        if spec.provider != "sim":
            return self._synthesise(a, b)
        if self.rng.random() < b.error_rate:
            return _Result("error", b.latency_median_ms, 0, 0, 0.0, None)
        out = snapshots.simulate(spec.id, system, messages, params)
        outcome, score = judge_triage(out.text, variables)
        return _Result(
            outcome,
            out.latency_ms,
            out.input_tokens,
            out.output_tokens,
            cost_usd(spec, out.input_tokens, out.output_tokens),
            score,
        )

    def _one(self) -> tuple[str, Assignment, _Result]:
        unit = self._unit()
        a = self.router.resolve(unit)
        b = self.profile.behaviour(a)
        if self.profile.use_sim:
            result = self._simulate(a, b, self._vars())
        else:
            result = self._synthesise(a, b, self._error_rate(unit, b))
        self.sent += 1
        self.errors += result.outcome == "error"
        return unit, a, result

    def generate(
        self, n: int, at: datetime | None = None, *, spread_s: float = 0.0, refresh: bool = True
    ) -> list[ObservationIn]:
        """``n`` requests now, stored before returning; times ``at`` (default now) plus up to ``spread_s``.

        ``refresh`` reloads the router's split first, so a percent a workflow just set is the one used.
        """
        if refresh:
            self.router.refresh()
        start = at or datetime.now(UTC)
        out: list[ObservationIn] = []
        for i in range(n):
            unit, a, r = self._one()
            when = (
                start if not spread_s else datetime.fromtimestamp(start.timestamp() + spread_s * i / n, UTC)
            )
            out.append(
                ObservationIn(
                    deployment=a.deployment,
                    pair=a.pair,
                    variant=a.variant,
                    unit=unit,
                    latency_ms=r.latency_ms,
                    input_tokens=r.input_tokens,
                    output_tokens=r.output_tokens,
                    cost_usd=r.cost,
                    outcome=r.outcome,
                    score=r.score,
                    at=when,
                    migration=a.migration,
                    percent=a.percent,
                )
            )
        with self.router.registry.session() as s:
            for i in range(0, len(out), MAX_BATCH):
                store_batch(s, out[i : i + MAX_BATCH])
        return out

    async def run(self, duration_s: float, *, stop: asyncio.Event | None = None) -> int:
        """Requests at ``rate_per_s`` for ``duration_s`` (or until ``stop``), recorded by the router."""
        rate = self.profile.rate_per_s
        began = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - began) < duration_s and not (stop and stop.is_set()):
            due = (
                int(elapsed * rate) + 1 - sent
            )  # catch up if a tick ran late; never burst beyond the schedule
            for _ in range(max(due, 0)):
                await self._one_async()
                sent += 1
            await asyncio.sleep(max(0.0, (sent / rate) - (time.monotonic() - began)))  # pacing, not waiting
        return sent

    async def _one_async(self) -> None:
        if not self.profile.use_sim:
            unit, a, r = self._one()
            self.router.record(
                unit,
                a,
                latency_ms=r.latency_ms,
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                cost_usd=r.cost,
                outcome=r.outcome,
                score=r.score,
            )
            return
        unit, variables = self._unit(), self._vars()
        a = self.router.resolve(unit)
        self.sent += 1
        if self.rng.random() < self.profile.behaviour(a).error_rate:
            self.errors += 1
            self.router.record(
                unit, a, latency_ms=self.profile.behaviour(a).latency_median_ms, outcome="error"
            )
            return
        try:
            await self.router.complete(
                unit,
                variables,
                validate=lambda text: judge_triage(text, variables)[0] == "ok",
                score=lambda text: judge_triage(text, variables)[1],
            )
        except ProviderError:
            self.errors += 1  # recorded by the router already


def judge_triage(text: str, variables: Mapping[str, Any]) -> tuple[Outcome, float | None]:
    """(outcome, score) of a triage answer: invalid unless a JSON object; 1 if it matches the sim's truth."""
    try:
        answer = json.loads(text)
    except ValueError:
        return "invalid", 0.0
    if not isinstance(answer, dict):
        return "invalid", 0.0
    tier, body = variables.get("customer_tier"), variables.get("ticket_body")
    if tier is None or body is None:
        return "ok", None
    truth = snapshots.triage_truth(str(tier), str(body))
    return "ok", float(all(answer.get(k) == v for k, v in truth.items()))


def profile_for(behaviours: Mapping[str, Behaviour | Mapping[str, Any]], **kw: Any) -> TrafficProfile:
    """Shorthand: ``profile_for({"sim-fresh-2025-09": {"error_rate": 0.05}}, seed=1)``."""
    return TrafficProfile(behaviours={k: Behaviour.model_validate(v) for k, v in behaviours.items()}, **kw)


__all__: Sequence[str] = (
    "Behaviour",
    "TrafficGenerator",
    "TrafficProfile",
    "judge_triage",
    "production_vars",
    "profile_for",
    "vars_from_dataset",
)
