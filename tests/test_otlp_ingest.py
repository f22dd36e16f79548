"""GenAI spans in: the real OpenTelemetry SDK and its OTLP/HTTP exporter send spans to `pairshift api`'s
``POST /v1/traces``; model-call spans become observations on the right pair and variant (GenAI conventions and
OpenLLMetry's attribute names), spans that do not map or disagree with the split are counted and skipped,
bodies that are not OTLP answer 4xx and store nothing."""

from __future__ import annotations

import gzip
import json
import threading
import time
from typing import Any

import pytest
import uvicorn
from conftest import api_token, bearer
from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from test_router_support import (
    ACTIVE_PAIR,
    CANDIDATE_PAIR,
    DEPLOYMENT,
    MIGRATION,
    apply_example,
    move_split,
    set_split,
)

from pairshift.api import create_app
from pairshift.observations import stage_stats
from pairshift.registry.models import Observation
from pairshift.router import bucket


def unit_on(variant: str, skip: int = 0) -> str:
    """A unit key the live 50% split routes to ``variant``."""
    found = [
        u
        for u in (f"user-{i}" for i in range(200))
        if (bucket(MIGRATION, u) < 5_000) == (variant == "candidate")
    ]
    return found[skip]


class Served:
    """`pairshift api` on a free loopback port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:  # uvicorn offers no event to await from another thread
            assert time.monotonic() < deadline and self.thread.is_alive(), "pairshift api did not start"
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def api(sqlite_registry):
    apply_example(sqlite_registry)
    set_split(sqlite_registry, 50)
    served = Served(create_app(sqlite_registry))
    yield served
    served.stop()


def rows(registry) -> list[Observation]:
    with registry.session() as s:
        out = list(s.scalars(select(Observation).order_by(Observation.id)))
        s.expunge_all()
        return out


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_spans_from_the_sdk_become_observations_on_the_right_pair_and_variant(api, sqlite_registry):
    token = api_token(sqlite_registry, "observe")
    exporter = OTLPSpanExporter(
        endpoint=f"http://127.0.0.1:{api.port}/v1/traces", headers={"authorization": f"Bearer {token}"}
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "support-app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    cand, ctrl, ctrl2 = unit_on("candidate"), unit_on("control"), unit_on("control", 1)
    stored_before = counter("pairshift_otlp_spans_total", result="stored", reason="")
    skipped_before = counter(
        "pairshift_otlp_spans_total", result="skipped", reason="disagrees with the split"
    )
    # 1. GenAI semantic conventions, the pair named: the candidate on its unit, a failed call
    with tracer.start_as_current_span("chat sim-fresh-2025-09", kind=SpanKind.CLIENT) as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "sim-fresh-2025-09",
                "gen_ai.response.model": "sim-fresh-2025-09",
                "gen_ai.usage.input_tokens": 210,
                "gen_ai.usage.output_tokens": 40,
                "pairshift.deployment": DEPLOYMENT,
                "pairshift.unit": cand,
                "pairshift.prompt": "support-triage@2",
            }
        )
        span.set_status(Status(StatusCode.ERROR, "upstream 503"))
    # 2. OpenLLMetry's names: association properties, prompt/completion tokens, no prompt: the split says
    with tracer.start_as_current_span("openai.chat", kind=SpanKind.CLIENT) as span:
        span.set_attributes(
            {
                "llm.request.type": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": "sim-classic-2024-06",
                "gen_ai.response.model": "sim-classic-2024-06",
                "gen_ai.usage.prompt_tokens": 1000,
                "gen_ai.usage.completion_tokens": 100,
                "llm.usage.total_tokens": 1100,
                "traceloop.association.properties.user_id": ctrl,
                "traceloop.association.properties.pairshift_deployment": DEPLOYMENT,
            }
        )
    # 3. does not map: no deployment; another library's HTTP span (not a model call)
    with tracer.start_as_current_span("chat gpt-x", kind=SpanKind.CLIENT) as span:
        span.set_attributes({"gen_ai.request.model": "gpt-x", "user.id": ctrl})
    with tracer.start_as_current_span("GET /tickets", kind=SpanKind.SERVER) as span:
        span.set_attribute("http.route", "/tickets")
    # 4. disagrees with the split: this control unit sent on the candidate's model
    with tracer.start_as_current_span("chat sim-fresh-2025-09", kind=SpanKind.CLIENT) as span:
        span.set_attributes(
            {
                "gen_ai.request.model": "sim-fresh-2025-09",
                "pairshift.deployment": DEPLOYMENT,
                "user.id": ctrl2,
            }
        )
    assert provider.force_flush()
    provider.shutdown()
    got = rows(sqlite_registry)
    assert [(r.pair, r.variant, r.outcome) for r in got] == [
        (CANDIDATE_PAIR, "candidate", "error"),
        (ACTIVE_PAIR, "control", "ok"),
    ]
    first, second = got
    assert (first.input_tokens, first.output_tokens, first.migration) == (210, 40, MIGRATION)
    assert first.resolved_model == "sim-fresh-2025-09" and 0 <= first.latency_ms < 10_000
    assert (second.input_tokens, second.output_tokens) == (1000, 100)
    assert second.cost_usd == pytest.approx((1000 * 3.0 + 100 * 15.0) / 1e6)  # the registry's prices
    assert counter("pairshift_otlp_spans_total", result="stored", reason="") - stored_before == 2
    assert counter("pairshift_otlp_spans_total", result="skipped", reason="disagrees with the split") == (
        skipped_before + 1
    )


def _json_export(unit: str, **extra: Any) -> dict[str, Any]:
    now = time.time_ns()
    attrs = {
        "gen_ai.request.model": "sim-classic-2024-06",
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 7,
        "pairshift.deployment": DEPLOYMENT,
        "session.id": unit,
        **extra,
    }
    kv = [
        {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
        for k, v in attrs.items()
    ]
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "chat",
        "kind": 3,
        "startTimeUnixNano": str(now - 250_000_000),
        "endTimeUnixNano": str(now),
        "attributes": kv,
        "status": {},
    }
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [span]}]}]}


@pytest.fixture
def client(sqlite_registry):
    apply_example(sqlite_registry)
    set_split(sqlite_registry, 50)
    token = api_token(sqlite_registry, "observe")
    with TestClient(create_app(sqlite_registry), raise_server_exceptions=False, headers=bearer(token)) as c:
        yield c


def test_otlp_json_and_gzip_are_taken_and_the_answer_is_otlp(client, sqlite_registry):
    unit = unit_on("control")
    r = client.post("/v1/traces", json=_json_export(unit))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {}  # full success: no partial_success
    body = gzip.compress(json.dumps(_json_export(unit, **{"pairshift.prompt": "support-triage@2"})).encode())
    r = client.post(
        "/v1/traces", content=body, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "disagrees with the split" in partial["errorMessage"]
    got = rows(sqlite_registry)
    assert [(o.pair, o.variant, o.latency_ms) for o in got] == [
        (ACTIVE_PAIR, "control", pytest.approx(250.0))
    ]


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"\xff\xfe not protobuf", {"content-type": "application/x-protobuf"}, 400),
        (b"{not json", {"content-type": "application/json"}, 400),
        (b"<spans/>", {"content-type": "application/xml"}, 415),
        (b"abc", {"content-type": "application/json", "content-encoding": "gzip"}, 400),
        (b"abc", {"content-type": "application/json", "content-encoding": "br"}, 415),
    ],
)
def test_bodies_that_are_not_otlp_answer_4xx_and_store_nothing(
    client, sqlite_registry, content, headers, status
):
    r = client.post("/v1/traces", content=content, headers=headers)
    assert r.status_code == status and r.json()["error"]
    with sqlite_registry.session() as s:
        assert s.scalar(select(func.count()).select_from(Observation)) == 0


def test_a_span_that_carries_its_percent_counts_in_that_stage(sqlite_registry):
    """The split moved from 20% to 50% a moment ago: a span of a unit on control under both, sent with the
    percent resolve answered (20), is the 20% stage's; without it the live stage's; a percent no split had is
    skipped as disagreeing."""
    apply_example(sqlite_registry)
    move_split(sqlite_registry, 20.0)
    move_split(sqlite_registry, 50.0)
    unit = next(u for u in (f"user-{i}" for i in range(200)) if bucket(MIGRATION, u) >= 5_000)
    token = api_token(sqlite_registry, "observe")
    with TestClient(create_app(sqlite_registry), headers=bearer(token)) as c:
        assert c.post("/v1/traces", json=_json_export(unit, **{"pairshift.percent": 20})).json() == {}
        assert c.post("/v1/traces", json=_json_export(unit)).json() == {}
        r = c.post("/v1/traces", json=_json_export(unit, **{"pairshift.percent": 35}))
        assert "disagrees with the split" in r.json()["partialSuccess"]["errorMessage"]
    with sqlite_registry.session() as s:
        assert {p: stage_stats(s, MIGRATION, p)["control"].n for p in (20.0, 50.0)} == {20.0: 1, 50.0: 1}


def test_traces_need_the_observe_scope(client, sqlite_registry):
    assert client.post("/v1/traces", json={}, headers={"authorization": ""}).status_code == 401
    r = client.post("/v1/traces", json={}, headers=bearer(api_token(sqlite_registry, "read")))
    assert r.status_code == 403 and "observe" in r.json()["error"]
