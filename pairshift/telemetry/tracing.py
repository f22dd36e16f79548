"""OpenTelemetry traces out: exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else nothing.

- :func:`setup_tracing` installs an SDK tracer provider with a batching OTLP/HTTP exporter, configured by the
  standard ``OTEL_*`` variables (endpoint, headers, service name through ``OTEL_SERVICE_NAME``), in
  ``pairshift api`` and ``pairshift worker``. Without the endpoint it does nothing: the API's no-op tracer
  stays, spans cost a function call and nothing leaves the process.
- :func:`temporal_interceptors` is Temporal's own ``TracingInterceptor`` when a tracer provider is installed:
  on the client it traces workflow starts, signals, queries and updates, and (a client interceptor is also a
  worker interceptor) every workflow run and activity of a worker built on that client, with the context
  carried in Temporal headers, so a migration is one trace: workflow -> activity -> provider call.
- :func:`genai_span` is a provider call as a GenAI client span with the semantic-convention attributes
  (``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
  ``gen_ai.usage.input_tokens``/``output_tokens``, ``error.type``), opened by
  :func:`pairshift.providers.complete` around its retry loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_PROVIDER_NAMES = {"anthropic": "anthropic", "openai": "openai", "openai-compatible": "openai", "sim": "sim"}
_installed: list[Any] = []  # the provider setup_tracing installed (at most one per process)


def export_configured(environ: dict[str, str] | None = None) -> bool:
    """Whether the standard OTLP endpoint variables ask for export (and the SDK is not disabled)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_ENVS)


def setup_tracing(service_name: str) -> bool:
    """Install a tracer provider exporting over OTLP/HTTP when an endpoint is configured; False when not.

    ``OTEL_SERVICE_NAME`` overrides ``service_name``. Called once per process; later calls change nothing.
    """
    if _installed:
        return True
    if not export_configured():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _installed.append(provider)
    return True


def shutdown_tracing() -> None:
    """Flush and stop the exporter :func:`setup_tracing` started (at process exit)."""
    for provider in _installed:
        provider.shutdown()


def tracing_active() -> bool:
    """Whether spans go anywhere: an SDK tracer provider is installed (ours, or a test's in-memory one)."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:  # pragma: no cover - the SDK is a dependency
        return False
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def temporal_interceptors() -> list[Any]:
    """``[TracingInterceptor()]`` when tracing is active, else ``[]`` (nothing added to Temporal headers)."""
    if not tracing_active():
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


@contextmanager
def genai_span(model_id: str, provider: str, operation: str = "chat") -> Iterator[Span]:
    """A GenAI client span around one logical model call (its attempts included); the caller sets results."""
    tracer = trace.get_tracer("pairshift.providers")
    attributes = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": _PROVIDER_NAMES.get(provider, provider),
        "gen_ai.system": _PROVIDER_NAMES.get(provider, provider),  # the older convention, still widely read
        "gen_ai.request.model": model_id,
    }
    with tracer.start_as_current_span(
        f"{operation} {model_id}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def record_completion(span: Span, completion: Any) -> None:
    """Set a successful call's response attributes on its GenAI span."""
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "gen_ai.response.model": completion.resolved_model,
            "gen_ai.usage.input_tokens": completion.input_tokens,
            "gen_ai.usage.output_tokens": completion.output_tokens,
            "gen_ai.response.finish_reasons": [completion.finish_reason],
            "pairshift.cost_usd": completion.cost_usd,
            "pairshift.attempts": completion.attempts,
        }
    )


def record_error(span: Span, error: Any) -> None:
    """Mark a failed call's GenAI span: ``error.type`` is the typed error's kind (``rate_limited``, ...)."""
    if not span.is_recording():
        return
    span.set_attribute("error.type", getattr(error, "kind", type(error).__name__))
    span.set_attribute("pairshift.attempts", getattr(error, "attempts", 1))
    if getattr(error, "status", None) is not None:
        span.set_attribute("http.response.status_code", error.status)
    span.set_status(Status(StatusCode.ERROR, str(getattr(error, "message", error))[:200]))
