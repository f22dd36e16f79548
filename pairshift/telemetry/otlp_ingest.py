"""GenAI spans in: ``POST /v1/traces`` (OTLP/HTTP, protobuf or JSON) turned into observations (issue 19).

Teams that already trace their LLM calls (OpenTelemetry's GenAI conventions, OpenLLMetry, Langfuse's OTel SDK,
OpenInference) fork their pipeline into pairshift instead of sending observations in pairshift's own format.
One span of a model call becomes one observation:

- deployment: ``pairshift.deployment``; unit: ``pairshift.unit``, else ``user.id``, else ``session.id``
  (each also read as OpenLLMetry's ``traceloop.association.properties.<name>``, with ``user_id`` and
  ``session_id``, and Langfuse's ``langfuse.user.id``/``langfuse.session.id``; span attributes first, then the
  resource's);
- the pair: ``pairshift.prompt`` (``name@version``) plus the request model (``gen_ai.request.model``, or
  ``llm.request.model``); without ``pairshift.prompt``, the pair the split routes the unit to when its model
  is the span's (by id or alias); the variant: ``pairshift.variant``, else where the split routes the unit;
  ``pairshift.percent`` (what resolve answered, optional) names the split that routed it: only that one is
  tried, and the row counts in that stage even when it arrives after the stage moved;
- outcome: ``error`` when the span's status is ERROR, else ``ok`` (``pairshift.outcome`` may say
  ``invalid``); latency: the span's duration; ``at``: its end;
- tokens: ``gen_ai.usage.input_tokens``/``output_tokens`` (or the older ``prompt_tokens``/
  ``completion_tokens``, or OpenLLMetry's ``llm.usage.*``); cost: ``pairshift.cost_usd`` or
  ``gen_ai.usage.cost``, else the model's prices in the registry; ``resolved_model``:
  ``gen_ai.response.model``.

Every row then goes the way ``POST /v1/observations`` rows go: checked against the live split
(:func:`pairshift.observations.split_check.split_errors`) and stored with :func:`store_batch`. Unlike that
route, a span that does not map or disagrees with the split is counted and skipped, never an error for the
whole batch: the answer is OTLP's own, with ``partial_success.rejected_spans`` and a one-line reason.
Spans that are not model calls (no model attribute: HTTP, database, the app's own) are ignored and counted.
"""

from __future__ import annotations

import gzip
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from pairshift.observations import BatchRejected, ObservationIn, store_batch
from pairshift.observations.split_check import RoutingSplit, live_splits, split_errors
from pairshift.registry.models import Deployment, Model

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_ASSOC = "traceloop.association.properties."
DEPLOYMENT_KEYS = ("pairshift.deployment", _ASSOC + "pairshift.deployment", _ASSOC + "pairshift_deployment")
UNIT_KEYS = (
    "pairshift.unit",
    _ASSOC + "pairshift.unit",
    "user.id",
    _ASSOC + "user_id",
    _ASSOC + "user.id",
    "langfuse.user.id",
    "session.id",
    _ASSOC + "session_id",
    _ASSOC + "session.id",
    "langfuse.session.id",
)
PROMPT_KEYS = ("pairshift.prompt", _ASSOC + "pairshift.prompt", _ASSOC + "pairshift_prompt")
VARIANT_KEYS = ("pairshift.variant", _ASSOC + "pairshift.variant")
PERCENT_KEYS = ("pairshift.percent", _ASSOC + "pairshift.percent")
REQUEST_MODEL_KEYS = ("gen_ai.request.model", "llm.request.model")
RESPONSE_MODEL_KEYS = ("gen_ai.response.model", "llm.response.model")
INPUT_TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens")
OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.completion_tokens",
)
COST_KEYS = ("pairshift.cost_usd", "gen_ai.usage.cost", "llm.usage.cost")
MAX_INFLATED = 16_000_000  # a gzip body inflates to at most this many bytes (a zip bomb stops here)


class TraceRequestError(ValueError):
    """A body that is not an OTLP trace export (400), or an unsupported encoding (415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class IngestResult:
    """What one export did: rows stored, spans skipped by reason (``ignored``: not a model call)."""

    stored: list[ObservationIn] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    ignored: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < 3:
            self.examples.append(example)

    def message(self) -> str:
        if not self.rejected:
            return ""
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"{self.rejected} GenAI span(s) not stored ({reasons}); e.g. {'; '.join(self.examples)}"[:1000]


# ---- decoding ------------------------------------------------------------------------------------------


def decode(body: bytes, content_type: str, content_encoding: str = "") -> ExportTraceServiceRequest:
    """The export request in ``body`` (protobuf or OTLP JSON, optionally gzip/deflate)."""
    encoding = content_encoding.strip().lower()
    if encoding in ("gzip", "deflate"):
        try:
            inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
            body = inflater.decompress(body, MAX_INFLATED)
            if inflater.unconsumed_tail:
                raise TraceRequestError(413, f"the body inflates to over {MAX_INFLATED:,} bytes")
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise TraceRequestError(400, f"body is not valid {encoding}: {exc}") from None
    elif encoding not in ("", "identity"):
        raise TraceRequestError(415, f"unsupported content-encoding {content_encoding!r} (gzip or none)")
    media = content_type.split(";", 1)[0].strip().lower()
    request = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise TraceRequestError(400, f"body is not an OTLP protobuf trace export: {exc}") from None
    elif media == JSON:
        try:
            json_format.Parse(body or b"{}", request, ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
            msg = str(exc).splitlines()[0][:200]
            raise TraceRequestError(400, f"body is not an OTLP JSON trace export: {msg}") from None
    else:
        raise TraceRequestError(415, f"unsupported content-type {content_type!r}: {PROTOBUF} or {JSON}")
    return request


def encode_response(result: IngestResult, media: str) -> tuple[bytes, str]:
    """OTLP's answer: empty on full success, else ``partial_success`` with the rejected count and why."""
    response = ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.rejected_spans = result.rejected
        response.partial_success.error_message = result.message()
    if media == JSON:
        return json_format.MessageToJson(response, indent=None).encode(), JSON
    return response.SerializeToString(), PROTOBUF


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    """OTLP key/values as a plain dict."""
    return {kv.key: _value(kv.value) for kv in kvs}


# ---- mapping -------------------------------------------------------------------------------------------


def _first(keys: tuple[str, ...], *sources: dict[str, Any]) -> Any:
    for source in sources:
        for key in keys:
            value = source.get(key)
            if value not in (None, ""):
                return value
    return None


def _number(keys: tuple[str, ...], attrs: dict[str, Any]) -> float | None:
    value = _first(keys, attrs)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Span:
    """The parts of a span mapping needs, read once."""

    name: str
    attrs: dict[str, Any]
    resource: dict[str, Any]
    start_ns: int
    end_ns: int
    error: bool


def _spans(request: ExportTraceServiceRequest) -> list[_Span]:
    out = []
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                out.append(_read(span, resource))
    return out


def _read(span: Span, resource: dict[str, Any]) -> _Span:
    return _Span(
        name=span.name,
        attrs=attributes(span.attributes),
        resource=resource,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        error=span.status.code == Status.STATUS_CODE_ERROR,
    )


class _Registry:
    """What mapping reads from the registry, once per export: deployments, their splits, model aliases."""

    def __init__(self, session: Session, names: set[str], now: datetime) -> None:
        deps = session.scalars(select(Deployment).where(Deployment.name.in_(names))).all() if names else []
        self.splits: dict[str, list[RoutingSplit]] = {d.name: live_splits(d, now) for d in deps}
        models = {
            pair.partition("+")[2]
            for splits in self.splits.values()
            for split in splits
            for pair in (split.active_pair, split.candidate_pair)
            if pair
        }
        rows = session.scalars(select(Model).where(Model.id.in_(models))).all() if models else []
        self.models = {m.id: m for m in rows}

    def names(self, model_id: str) -> set[str]:
        row = self.models.get(model_id)
        return {model_id, *(row.aliases if row is not None else [])}

    def cost(self, model_id: str, input_tokens: int, output_tokens: int) -> float:
        from pairshift.providers import ModelSpec
        from pairshift.providers.cost import cost_usd

        row = self.models.get(model_id)
        if row is None:
            return 0.0
        return cost_usd(ModelSpec.from_model(row), input_tokens, output_tokens)


def _route(
    reg: _Registry,
    deployment: str,
    unit: str,
    prompt: str | None,
    models: set[str],
    variant: str | None,
    percent: float | None = None,
) -> tuple[str, str, str | None] | None:
    """(variant, pair, migration) of the split that routes ``unit`` to a pair this span can be, else None."""
    for split in reg.splits[deployment]:
        if percent is not None and percent != split.percent:
            continue
        routed_variant, pair = split.assign(unit)
        pair_prompt, _, pair_model = pair.partition("+")
        if variant is not None and variant != routed_variant:
            continue
        if prompt is not None and prompt != pair_prompt:
            continue
        if models & reg.names(pair_model):
            return routed_variant, pair, split.migration
    return None


def _observation(span: _Span, reg: _Registry) -> tuple[ObservationIn | None, str, str]:
    """(observation, "", "") or (None, reason, example) for a GenAI span."""
    a, r = span.attrs, span.resource
    deployment = _first(DEPLOYMENT_KEYS, a, r)
    if deployment is None:
        return None, "no deployment", f"span {span.name!r} has no pairshift.deployment"
    deployment = str(deployment)
    if deployment not in reg.splits:
        return None, "unknown deployment", f"unknown deployment {deployment!r}"
    unit = _first(UNIT_KEYS, a, r)
    if unit is None:
        return None, "no unit", f"span {span.name!r} has no pairshift.unit, user.id or session.id"
    request_model = _first(REQUEST_MODEL_KEYS, a)
    response_model = _first(RESPONSE_MODEL_KEYS, a)
    models = {str(m) for m in (request_model, response_model) if m is not None}
    prompt = _first(PROMPT_KEYS, a, r)
    variant = _first(VARIANT_KEYS, a, r)
    percent = _number(PERCENT_KEYS, a)
    routed = _route(
        reg,
        deployment,
        str(unit),
        None if prompt is None else str(prompt),
        models,
        variant and str(variant),
        percent,
    )
    if routed is None:
        what = f"{prompt}+{request_model}" if prompt else f"model {request_model}"
        return None, "disagrees with the split", f"{what} is not where {deployment} routes this unit"
    variant, pair, migration = routed
    input_tokens = int(_number(INPUT_TOKEN_KEYS, a) or 0)
    output_tokens = int(_number(OUTPUT_TOKEN_KEYS, a) or 0)
    cost = _number(COST_KEYS, a)
    if cost is None:
        cost = reg.cost(pair.partition("+")[2], input_tokens, output_tokens)
    outcome = "error" if span.error else str(a.get("pairshift.outcome") or "ok")
    end = span.end_ns or span.start_ns
    try:
        return (
            ObservationIn(
                deployment=deployment,
                pair=pair,
                variant=variant,  # type: ignore[arg-type]
                unit=str(unit),
                latency_ms=max(0, span.end_ns - span.start_ns) / 1e6,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost,
                outcome=outcome,  # type: ignore[arg-type]
                score=a.get("pairshift.score"),
                at=datetime.fromtimestamp(end / 1e9, UTC),
                migration=migration,
                percent=percent,
                resolved_model=None if response_model is None else str(response_model)[:200],
            ),
            "",
            "",
        )
    except ValidationError as exc:
        e = exc.errors()[0]
        return None, "invalid", f"span {span.name!r}: {'.'.join(map(str, e['loc']))}: {e['msg']}"


def is_genai(span: _Span) -> bool:
    """A model call: it names a model (GenAI conventions or OpenLLMetry's older names)."""
    return _first(REQUEST_MODEL_KEYS, span.attrs) is not None


def ingest(
    session: Session, request: ExportTraceServiceRequest, *, now: datetime | None = None
) -> IngestResult:
    """Store the GenAI spans of ``request`` that map and agree with the split; count the rest."""
    now = now or datetime.now(UTC)
    result = IngestResult()
    spans = _spans(request)
    genai = [s for s in spans if is_genai(s)]
    result.ignored = len(spans) - len(genai)
    names = {str(d) for s in genai if (d := _first(DEPLOYMENT_KEYS, s.attrs, s.resource)) is not None}
    reg = _Registry(session, names, now)
    rows: list[ObservationIn] = []
    for span in genai:
        row, reason, example = _observation(span, reg)
        if row is None:
            result.skip(reason, example)
        else:
            rows.append(row)
    errors = split_errors(session, rows, now=now)  # the same check POST /v1/observations makes
    bad = {e.index for e in errors}
    for e in errors:
        result.skip("refused by the split check", f"{e.field}: {e.msg}")
    good = [row for i, row in enumerate(rows) if i not in bad]
    if good:
        try:
            store_batch(session, good)
        except BatchRejected as exc:  # the store's own refusal (a pair it no longer knows): skip, never fail
            for e in exc.errors:
                result.skip("refused by the store", f"{e.field}: {e.msg}")
            bad = {e.index for e in exc.errors} if exc.total_bad == len(exc.errors) else set(range(len(good)))
            good = [row for i, row in enumerate(good) if i not in bad]
            result.skipped["refused by the store"] += max(0, len(bad) - len(exc.errors))
            store_batch(session, good)
    result.stored = good
    return result
