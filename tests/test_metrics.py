"""Prometheus /metrics: scraped and parsed with prometheus-client's own parser, the counters move with traffic
(resolves, observations accepted and refused, provider calls with their 429s and retries, the registry's view
of splits and migrations), and the route needs a token like every other."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import api_token, bearer
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_router_support import (
    ACTIVE_PAIR,
    CANDIDATE_PAIR,
    DEPLOYMENT,
    MIGRATION,
    apply_example,
    obs,
    set_split,
)

from pairshift.api import create_app
from pairshift.observations import ObservationWriter
from pairshift.observations.store import BatchRejected, ItemError, ObservationIn
from pairshift.providers import CallParams, Completion, Message, ModelSpec, RateLimited, base, complete
from pairshift.router import bucket

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def routed(unit: str, **kw: Any) -> dict[str, Any]:
    variant = "candidate" if bucket(MIGRATION, unit) < 5_000 else "control"
    pair = CANDIDATE_PAIR if variant == "candidate" else ACTIVE_PAIR
    return obs(unit=unit, variant=variant, pair=pair, at=datetime.now(UTC).isoformat()) | kw


@pytest.fixture
def client(sqlite_registry):
    apply_example(sqlite_registry)
    set_split(sqlite_registry, 50)
    token = api_token(sqlite_registry, "read", "resolve", "observe")
    with TestClient(create_app(sqlite_registry), raise_server_exceptions=False, headers=bearer(token)) as c:
        yield c


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def test_counters_move_with_resolves_and_observations(client):
    before = scrape(client)
    units = [f"user-{i}" for i in range(40)]
    variants = [client.get(f"/v1/deployments/{DEPLOYMENT}/resolve", params={"unit": u}).json() for u in units]
    n_cand = sum(a["variant"] == "candidate" for a in variants)
    assert 0 < n_cand < 40
    good = [routed(u) for u in units[:10]] + [routed(units[10], outcome="error", latency_ms=2500.0)]
    assert client.post("/v1/observations", json={"observations": good}).status_code == 200
    wrong = routed("user-0")
    wrong["variant"] = "candidate" if wrong["variant"] == "control" else "control"
    assert (
        client.post("/v1/observations", json={"observations": [routed("user-1"), wrong]}).status_code == 422
    )
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("pairshift_router_assignments_total", deployment=DEPLOYMENT, variant="candidate") == n_cand
    assert (
        moved("pairshift_router_assignments_total", deployment=DEPLOYMENT, variant="control") == 40 - n_cand
    )
    assert moved("pairshift_observations_total", source="api", result="accepted") == 11
    assert moved("pairshift_observations_total", source="api", result="refused") == 2
    by_variant = {v: sum(routed(u)["variant"] == v for u in units[:11]) for v in ("control", "candidate")}
    err_variant = routed(units[10])["variant"]
    ok_calls = moved(
        "pairshift_observed_calls_total", deployment=DEPLOYMENT, variant=err_variant, outcome="ok"
    )
    assert ok_calls == by_variant[err_variant] - 1
    assert (
        moved("pairshift_observed_calls_total", deployment=DEPLOYMENT, variant=err_variant, outcome="error")
        == 1
    )
    # the 2.5 s error lands above the 2 s bucket of its variant's latency histogram
    le2 = moved(
        "pairshift_observed_latency_seconds_bucket", deployment=DEPLOYMENT, variant=err_variant, le="2.0"
    )
    count = moved("pairshift_observed_latency_seconds_count", deployment=DEPLOYMENT, variant=err_variant)
    assert (count, le2) == (by_variant[err_variant], by_variant[err_variant] - 1)
    assert value(after, "pairshift_canary_percent", deployment=DEPLOYMENT) == 50.0
    assert value(after, "pairshift_canary_bound", deployment=DEPLOYMENT, metric="error_rate_max_increase") > 0


def test_metrics_needs_a_token_with_read(client, sqlite_registry):
    assert client.get("/metrics", headers={"authorization": ""}).status_code == 401
    observe_only = api_token(sqlite_registry, "observe")
    r = client.get("/metrics", headers=bearer(observe_only))
    assert r.status_code == 403 and "read" in r.json()["error"]


class _Backend:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)

    async def __call__(self, spec: ModelSpec, system: Any, messages: Any, params: Any) -> Completion:
        if self.errors:
            raise self.errors.pop(0)
        return Completion(
            text="ok",
            resolved_model=spec.id + "-2025",
            input_tokens=120,
            output_tokens=30,
            latency_ms=300.0,
            cost_usd=0.25,
            finish_reason="stop",
        )


async def _no_sleep(_: float) -> None:
    return None


async def test_provider_calls_429s_retries_and_cost_are_counted(client, monkeypatch):
    monkeypatch.setattr(
        base, "_backend", lambda provider: _Backend(RateLimited("429", model="m", retry_after=1))
    )
    spec = ModelSpec(id="metrics-model", provider="sim")
    before = scrape(client)
    done = await complete(spec, None, [Message(role="user", content="hi")], CallParams(), sleep=_no_sleep)
    assert done.attempts == 2
    monkeypatch.setattr(base, "_backend", lambda provider: _Backend(*[RateLimited("429", model="m")] * 9))
    with pytest.raises(RateLimited):
        await complete(spec, None, [Message(role="user", content="hi")], CallParams(), sleep=_no_sleep)
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("pairshift_provider_calls_total", model="metrics-model", outcome="ok") == 1
    assert moved("pairshift_provider_calls_total", model="metrics-model", outcome="rate_limited") == 1
    assert moved("pairshift_provider_rate_limited_total", model="metrics-model") == 1 + 4
    assert moved("pairshift_provider_retries_total", model="metrics-model") == 1 + 3
    assert moved("pairshift_provider_cost_usd_total", model="metrics-model") == pytest.approx(0.25)
    assert moved("pairshift_provider_tokens_total", model="metrics-model", direction="input") == 120


def test_the_writer_counts_what_it_drops_and_what_the_store_refuses(client):
    before = scrape(client)

    calls: list[int] = []

    def refuse_first(batch: list[ObservationIn]) -> int:
        calls.append(len(batch))
        if len(calls) == 1:
            raise BatchRejected([ItemError(index=0, msg="unknown pair")])
        return len(batch)

    writer = ObservationWriter(sink=refuse_first, max_queue=3, batch_size=10)
    for i in range(5):  # two over the queue's size: the oldest two dropped
        writer.put(ObservationIn(**obs(unit=f"w{i}")))
    writer.flush()  # the store refuses item 0 of the batch, stores the other two
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("pairshift_observations_total", source="writer", result="dropped") == 2
    assert moved("pairshift_observations_total", source="writer", result="refused") == 1
    assert moved("pairshift_observations_total", source="writer", result="accepted") == 2 == calls[-1]


def test_the_worker_endpoint_serves_the_process_counters():
    import httpx

    from pairshift.telemetry.metrics import GATE_CHECKS, serve_metrics

    GATE_CHECKS.labels("pass").inc(0)  # the child exists, so its sample is exposed
    server = serve_metrics("127.0.0.1:0")
    try:
        r = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    samples = parse(r.text)
    assert ("pairshift_gate_checks_total", (("decision", "pass"),)) in samples
    assert "# TYPE pairshift_provider_calls_total counter" in r.text


def test_a_bad_metrics_address_is_refused(monkeypatch):
    from pydantic import ValidationError

    from pairshift.settings import Settings

    monkeypatch.setenv("PAIRSHIFT_WORKER_METRICS_ADDRESS", "nine-four-six-four")
    with pytest.raises(ValidationError, match="worker_metrics_address"):
        Settings()
    monkeypatch.setenv("PAIRSHIFT_WORKER_METRICS_ADDRESS", "[::1]:9464")
    assert Settings().worker_metrics_address == "[::1]:9464"
