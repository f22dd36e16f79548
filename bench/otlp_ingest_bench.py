"""OTLP ingest benchmark: ``POST /v1/traces``'s work (decode + map + split check + store) on SQLite, spans/s.
Writes ``bench/results/otlp_ingest.md``.

Run: ``.venv/bin/python bench/otlp_ingest_bench.py`` (about ten seconds). No target is asserted: the figure
says how many GenAI spans one API process turns into observations per second, for sizing a collector's fork.

- batches of 512 spans (the OTel SDK's and the collector's default export batch), protobuf-encoded as the
  OTLPSpanExporter sends them, GenAI-convention attributes, units spread over a 20% canary split;
- each batch: ``otlp_ingest.decode`` then ``otlp_ingest.ingest`` in its own transaction, timed together; the
  HTTP layer (uvicorn, auth) is not included.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span  # noqa: E402

from pairshift.apply import apply_path  # noqa: E402
from pairshift.registry.models import Deployment  # noqa: E402
from pairshift.registry.store import open_registry  # noqa: E402
from pairshift.router import bucket  # noqa: E402
from pairshift.telemetry import otlp_ingest  # noqa: E402

DEPLOYMENT, MIGRATION = "support-triage", "migration-bench"
ACTIVE, CANDIDATE = ("support-triage@1", "sim-classic-2024-06"), ("support-triage@2", "sim-fresh-2025-09")
BATCH, BATCHES, PERCENT = 512, 20, 20.0


def _kv(key: str, value: str | int) -> KeyValue:
    v = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
    return KeyValue(key=key, value=v)


def batch(offset: int) -> bytes:
    now = time.time_ns()
    spans = []
    for i in range(BATCH):
        unit = f"user-{offset + i}"
        prompt, model = CANDIDATE if bucket(MIGRATION, unit) < PERCENT * 100 else ACTIVE
        attrs = [
            _kv("gen_ai.operation.name", "chat"),
            _kv("gen_ai.request.model", model),
            _kv("gen_ai.response.model", model),
            _kv("gen_ai.usage.input_tokens", 200),
            _kv("gen_ai.usage.output_tokens", 60),
            _kv("pairshift.deployment", DEPLOYMENT),
            _kv("pairshift.unit", unit),
            _kv("pairshift.prompt", prompt),
        ]
        spans.append(
            Span(
                trace_id=bytes(16),
                span_id=(i + 1).to_bytes(8, "big"),
                name=f"chat {model}",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=now - 400_000_000,
                end_time_unix_nano=now,
                attributes=attrs,
            )
        )
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])
    return request.SerializeToString()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "otlp_ingest.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        registry = open_registry(f"sqlite:///{tmp}/registry.db")
        apply_path(registry, REPO / "examples", by="bench")
        with registry.session() as s:
            dep = s.get(Deployment, DEPLOYMENT)
            dep.candidate_prompt, dep.candidate_model = CANDIDATE
            dep.canary_percent, dep.migration = PERCENT, MIGRATION
        bodies = [batch(b * BATCH) for b in range(BATCHES + 2)]
        seconds, stored = [], 0
        for n, body in enumerate(bodies):
            start = time.perf_counter()
            request = otlp_ingest.decode(body, otlp_ingest.PROTOBUF)
            with registry.session() as s:
                result = otlp_ingest.ingest(s, request)
            elapsed = time.perf_counter() - start
            assert not result.rejected, result.message()
            if n >= 2:  # two warm-up batches
                seconds.append(elapsed)
                stored += len(result.stored)
    rate = stored / sum(seconds)
    lines = [
        "# OTLP ingest (POST /v1/traces without HTTP)",
        "",
        f"Command: `.venv/bin/python bench/otlp_ingest_bench.py` on {platform.machine()}, Python "
        f"{platform.python_version()}, SQLite, {BATCHES} batches of {BATCH} GenAI spans (protobuf) at a "
        f"{PERCENT:g}% canary.",
        "",
        "| spans stored | spans/s | batch median ms | batch max ms |",
        "| --- | --- | --- | --- |",
        f"| {stored:,} | {rate:,.0f} | {statistics.median(seconds) * 1000:.1f} | {max(seconds) * 1000:.1f} |",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
