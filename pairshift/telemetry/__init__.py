"""Observability both ways (issue 19): Prometheus metrics and OpenTelemetry traces out, GenAI spans in.

- :mod:`~pairshift.telemetry.metrics`: the process's Prometheus counters and the ``/metrics`` exposition;
- :mod:`~pairshift.telemetry.tracing`: OpenTelemetry set-up (OTLP export only when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set), Temporal's tracing interceptor, GenAI spans of provider calls;
- :mod:`~pairshift.telemetry.otlp_ingest`: ``POST /v1/traces`` spans turned into observations;
- :mod:`~pairshift.telemetry.prometheus_source`: a canary stage's variant statistics from PromQL.
"""
