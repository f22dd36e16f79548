"""``canary.source: prometheus``: the policy's PromQL per variant (placeholders filled, a token from env), the
decision on what comes back (error/invalid rate always-valid on counts, latency and cost as point estimates),
the policy refusing what cannot work, and check_stage asking a Prometheus on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from pydantic import ValidationError

from pairshift.contracts.migration import StageCheckInput
from pairshift.policy import CanaryPolicy
from pairshift.telemetry.prometheus_source import PrometheusQueryError, fetch, prometheus_gate

SELECT = 'deployment="{{deployment}}",variant="{{variant}}"'
Q = {
    "calls": "sum(increase(pairshift_observed_calls_total{" + SELECT + "}[{{window}}]))",
    "errors": "sum(increase(pairshift_observed_calls_total{" + SELECT + ',outcome="error"}[{{window}}]))',
    "latency_p95_ms": (
        'histogram_quantile(0.95, sum by (le) (rate(app_llm_latency_bucket{variant="{{ variant }}"}'
        "[{{window}}]))) * 1000"
    ),
    "cost_usd": 'sum(increase(app_cost_usd_total{variant="{{variant}}",migration="{{migration}}"}'
    "[{{window}}]))",
}


def policy(url: str = "http://127.0.0.1:9090", **kw: Any) -> CanaryPolicy:
    return CanaryPolicy.model_validate(
        {"source": "prometheus", "prometheus": {"url": url, "queries": Q, **kw}, "min_samples": 1000}
    )


def arm(calls: float, errors: float, p95: float | None = 800.0, cost: float | None = None) -> dict[str, Any]:
    return {
        "calls": calls,
        "errors": errors,
        "latency_p95_ms": p95,
        "cost_usd": calls * 0.002 if cost is None else cost,
    }


@pytest.mark.parametrize(
    ("control", "candidate", "elapsed", "decision", "why"),
    [
        (arm(20_000, 100), arm(20_000, 100), 3.0, "pass", "same rates, latency and cost"),
        (arm(20_000, 100), arm(20_000, 1_000), 3.0, "breach", "error_rate"),
        (arm(20_000, 100), arm(20_000, 100, p95=2_000.0), 3.0, "breach", "latency_p95 (prometheus)"),
        (
            arm(20_000, 100),
            arm(20_000, 100, cost=20_000 * 0.004),
            3.0,
            "breach",
            "cost_per_call (prometheus)",
        ),
        (arm(20_000, 100), arm(20_000, 100, p95=None), 3.0, "inconclusive", "no value for an arm"),
        (arm(20_000, 100), arm(30, 0), 3.0, "inconclusive", "too few"),
        (arm(20_000, 100), arm(20_000, 100), 0.5, "inconclusive", "minimum hours"),
    ],
)
def test_the_decision_on_what_prometheus_answered(control, candidate, elapsed, decision, why):
    check = prometheus_gate(
        {"control": control, "candidate": candidate}, 50, policy(), elapsed_hours=elapsed, min_hours=1
    )
    assert check.decision == decision, check.reasons
    assert any(why in r for r in check.reasons) or why.startswith("same"), check.reasons


def test_error_rate_keeps_the_always_valid_interval():
    check = prometheus_gate(
        {"control": arm(20_000, 100), "candidate": arm(20_000, 1_000)},
        50,
        policy(),
        elapsed_hours=3,
        min_hours=1,
    )
    m = check.metrics["error_rate"]
    assert m["verdict"] == "breach" and m["bound"][0] > 0.01
    assert any(r.startswith("error_rate") and "always-valid" in r for r in check.reasons)
    assert check.samples == {"control": 20_000, "candidate": 20_000}


class _Prometheus(BaseHTTPRequestHandler):
    answers: dict[str, Any] = {}
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802
        query = parse_qs(urlparse(self.path).query)["query"][0]
        self.seen.append((query, self.headers.get("authorization")))
        variant = "candidate" if 'variant="candidate"' in query else "control"
        metric = next(m for m, q in Q.items() if q.split("{")[0] == query.split("{")[0] and _same(q, query))
        value = self.answers[variant][metric]
        result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


def _same(template: str, query: str) -> bool:
    import re

    pattern = re.escape(re.sub(r"\{\{\s*\w+\s*\}\}", "\x00", template)).replace("\x00", '[^",\\]]*')
    return re.fullmatch(pattern, query) is not None


@pytest.fixture
def prometheus():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Prometheus.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_check_stage_asks_prometheus_with_the_stage_filled_in(prometheus, monkeypatch):
    from activities.migration import check_stage

    monkeypatch.setenv("PROM_READ_TOKEN", "s3cret")
    _Prometheus.answers = {"control": arm(20_000, 100), "candidate": arm(20_000, 1_000)}
    since = datetime.now(UTC) - timedelta(hours=2)
    inp = StageCheckInput(
        deployment="support-triage",
        migration="migration-support-triage-1",
        since=since,
        percent=20,
        canary=policy(prometheus, bearer_token_env="PROM_READ_TOKEN"),
        elapsed_hours=2,
        min_hours=1,
    )
    check = check_stage(inp)
    assert check.decision == "breach" and check.metrics["error_rate"]["verdict"] == "breach"
    queries = [q for q, _ in _Prometheus.seen]
    assert len(queries) == 8 and {auth for _, auth in _Prometheus.seen} == {"Bearer s3cret"}
    assert 'deployment="support-triage",variant="candidate",outcome="error"' in " ".join(queries)
    assert 'migration="migration-support-triage-1"' in " ".join(queries)
    windows = {w for q in queries for w in __import__("re").findall(r"\[(\d+)s\]", q)}
    assert len(windows) == 1 and 7200 <= int(windows.pop()) <= 7300


def test_answers_that_are_not_one_number_fail_the_check_clearly():
    source = policy().prometheus
    since = datetime.now(UTC) - timedelta(hours=1)

    def many(request: httpx.Request) -> httpx.Response:
        series = [{"metric": {"pod": str(i)}, "value": [0, "1"]} for i in range(2)]
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": series}}
        )

    with pytest.raises(PrometheusQueryError, match="2 series; aggregate"):
        fetch(
            source,
            deployment="d",
            migration="m",
            since=since,
            client=httpx.Client(transport=httpx.MockTransport(many)),
        )

    def refused(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"status": "error", "error": "parse error at char 5"})

    with pytest.raises(PrometheusQueryError, match="parse error"):
        fetch(
            source,
            deployment="d",
            migration="m",
            since=since,
            client=httpx.Client(transport=httpx.MockTransport(refused)),
        )


def test_a_missing_token_variable_fails_before_asking(monkeypatch):
    monkeypatch.delenv("PROM_READ_TOKEN", raising=False)
    source = policy(bearer_token_env="PROM_READ_TOKEN").prometheus
    with pytest.raises(PrometheusQueryError, match="PROM_READ_TOKEN"):
        fetch(source, deployment="d", migration="m", since=datetime.now(UTC))


@pytest.mark.parametrize(
    ("canary", "message"),
    [
        ({"source": "prometheus"}, "needs canary.prometheus"),
        (
            {
                "source": "prometheus",
                "prometheus": {
                    "url": "http://p:9090",
                    "queries": {"calls": Q["calls"], "errors": Q["errors"]},
                },
            },
            "latency_p95 is gated",
        ),
        (
            {
                "source": "prometheus",
                "prometheus": {"url": "http://p:9090", "queries": {**Q, "calls": "sum(x)"}},
            },
            "{{variant}}",
        ),
        (
            {
                "source": "prometheus",
                "prometheus": {
                    "url": "http://p:9090",
                    "queries": {**Q, "errors": 'x{d="{{dep}}",v="{{variant}}"}'},
                },
            },
            "unknown placeholder",
        ),
        ({"source": "prometheus", "prometheus": {"url": "p:9090", "queries": Q}}, "url"),
        (
            {
                "source": "prometheus",
                "prometheus": {"url": "http://p:9090", "queries": Q, "bearer_token_env": "s3cret token"},
            },
            "bearer_token_env",
        ),
    ],
)
def test_the_policy_refuses_what_cannot_work(canary, message):
    with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        CanaryPolicy.model_validate(canary)


def test_builtin_stays_the_default():
    assert CanaryPolicy().source == "builtin" and CanaryPolicy().prometheus is None
    no_latency = CanaryPolicy.model_validate(
        {
            "source": "prometheus",
            "metrics": {"latency_p95": None, "cost_per_call": None},
            "prometheus": {"url": "http://p:9090", "queries": {"calls": Q["calls"], "errors": Q["errors"]}},
        }
    )
    assert no_latency.prometheus is not None
