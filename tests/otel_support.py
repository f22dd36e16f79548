"""OpenTelemetry in tests: one SDK tracer provider for the session whose spans are kept only inside
:func:`capture` (the rest of the suite runs with tracing on but keeps nothing)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider


class _Capturing(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] | None = None
        self.lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        with self.lock:
            if self.spans is not None:
                self.spans.append(span)


_processor = _Capturing()


def _install() -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if _processor not in getattr(provider._active_span_processor, "_span_processors", ()):
        provider.add_span_processor(_processor)


@contextmanager
def capture() -> Iterator[list[ReadableSpan]]:
    """Spans ended inside the block (the list fills as they end)."""
    _install()
    spans: list[ReadableSpan] = []
    with _processor.lock:
        _processor.spans = spans
    try:
        yield spans
    finally:
        with _processor.lock:
            _processor.spans = None
