"""Traces out: a migration run under Temporal's tracing interceptor is one trace, workflow -> child workflow
-> activity -> the provider call as a GenAI client span with the semantic-convention attributes; without an
OTLP endpoint nothing is set up, with one the SDK exports."""

from __future__ import annotations

import pytest
from migration_harness import apply_small, migration_worker, start, wait_for, waiting_on
from opentelemetry.trace import SpanKind, StatusCode
from otel_support import capture
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from pairshift.providers import CallParams, Message, ModelSpec, ProviderUnavailable, base, complete
from pairshift.registry import open_registry
from pairshift.telemetry import tracing


def _ancestors(span, by_id):
    out = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        out.append(span.name)
    return out


async def test_a_migration_is_one_trace_down_to_the_provider_calls(
    pairshift_env, tmp_path, time_skipping_env
):
    apply_small(tmp_path, cases=4)
    open_registry()
    config = time_skipping_env.client.config()
    config["interceptors"] = [TracingInterceptor()]
    client = Client(**config)
    with capture() as spans:
        async with migration_worker(client) as tq:
            handle = await start(client, tq)
            await wait_for(handle, waiting_on(0))  # the eval ran: EvalWorkflow, its batches, their calls
            await handle.terminate("test done")
    by_id = {s.context.span_id: s for s in spans}
    calls = [s for s in spans if s.name.startswith("chat ")]
    assert calls, sorted({s.name for s in spans})
    chains = {c.context.span_id: _ancestors(c, by_id) for c in calls}
    batch_calls = [c for c in calls if chains[c.context.span_id][:1] == ["RunActivity:run_eval_batch"]]
    assert batch_calls, sorted({tuple(c) for c in chains.values()})
    call = batch_calls[0]
    assert call.kind is SpanKind.CLIENT
    attrs = dict(call.attributes)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] in ("sim-classic-2024-06", "sim-fresh-2025-09")
    assert attrs["gen_ai.response.model"] and attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] > 0
    # provider call -> activity -> (scheduled by) EvalWorkflow -> started as a child by MigrationWorkflow
    assert chains[call.context.span_id] == [
        "RunActivity:run_eval_batch",
        "StartActivity:run_eval_batch",
        "StartChildWorkflow:EvalWorkflow",
        "StartWorkflow:MigrationWorkflow",
    ]
    trace_id = call.context.trace_id
    runs = {s.name for s in spans if s.context.trace_id == trace_id and s.name.startswith("RunWorkflow:")}
    assert runs == {"RunWorkflow:MigrationWorkflow", "RunWorkflow:EvalWorkflow"}
    assert {c.context.trace_id for c in calls} == {call.context.trace_id}, "one trace for the whole run"


class _Failing:
    async def __call__(self, spec, system, messages, params):
        raise ProviderUnavailable("upstream 503", model=spec.id, status=503)


async def test_a_failed_call_is_an_error_span_with_its_type(monkeypatch):
    monkeypatch.setattr(base, "_backend", lambda provider: _Failing())

    async def no_sleep(_: float) -> None:
        return None

    with capture() as spans:
        with pytest.raises(ProviderUnavailable):
            await complete(
                ModelSpec(id="m-x", provider="openai"),
                None,
                [Message(role="user", content="hi")],
                CallParams(),
                sleep=no_sleep,
            )
    (span,) = [s for s in spans if s.name == "chat m-x"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "unavailable"
    assert span.attributes["pairshift.attempts"] == 4
    assert span.attributes["gen_ai.provider.name"] == "openai"


def test_export_only_with_an_endpoint():
    assert not tracing.export_configured({})
    assert tracing.export_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.export_configured(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}
    )
    assert not tracing.export_configured(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}
    )


def test_nothing_is_set_up_without_an_endpoint(monkeypatch):
    from opentelemetry import trace

    for name in tracing.ENDPOINT_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracing, "_installed", [])
    assert tracing.setup_tracing("pairshift-test") is False and tracing._installed == []
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.NoOpTracerProvider())
    assert tracing.temporal_interceptors() == []


def test_the_api_traces_its_requests(sqlite_registry):
    from conftest import api_token, bearer
    from fastapi.testclient import TestClient
    from test_router_support import DEPLOYMENT, apply_example

    from pairshift.api import create_app

    apply_example(sqlite_registry)
    token = api_token(sqlite_registry, "resolve")
    with capture() as spans:
        app = create_app(sqlite_registry)
        with TestClient(app, headers=bearer(token)) as client:
            assert (
                client.get(f"/v1/deployments/{DEPLOYMENT}/resolve", params={"unit": "u1"}).status_code == 200
            )
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert [s.name for s in servers] == ["GET /v1/deployments/{name}/resolve"]
    assert servers[0].attributes["http.route"] == "/v1/deployments/{name}/resolve"
