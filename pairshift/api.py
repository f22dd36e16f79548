"""`pairshift api`: the HTTP front of the router, the observation store and migration status (PRODUCT §9).

A thin layer: routes validate with pydantic and call :mod:`pairshift.router`, :mod:`pairshift.observations`
and the registry; they hold no business logic. Every error answers JSON ``{"error": "...", "detail": [...]}``
naming the bad field or item index: malformed JSON 400, a batch over 10,000 items 413, invalid values 422,
unknown names 404, an unreachable registry 503. ``POST /v1/deployments/{name}/complete`` serves a completion
the way ``Router.complete`` does (:mod:`pairshift.completion`): a provider failure answers 502/503/504 naming
the pair. OpenAPI is served at ``/openapi.json`` and ``/docs``.

Every route but ``/healthz`` (and the signature-authenticated ``/slack/interactions``) needs a bearer token
with its scope (:mod:`pairshift.api_guard`): ``resolve`` to resolve, ``complete`` for completions,
``observe`` to send observations (``POST /v1/observations``, or OTLP spans on ``POST /v1/traces``), ``read``
for migrations, reports and the Prometheus ``/metrics``; 401 without a live token, 403 without the scope.
Bodies are capped (1 MB by default, ``PAIRSHIFT_API_MAX_BODY_BYTES``; Slack's 64 KB) before they are read in
full.

``POST /slack/interactions`` belongs to the Slack module: pass its router as ``extra_routers`` (or call
``app.include_router`` on the returned app); this module defines no Slack route.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pairshift.api_guard import (
    SLACK_MAX_BODY,
    AuthConfig,
    AuthError,
    BodyLimit,
    RowRateLimit,
    TokenCache,
    require,
)
from pairshift.completion import Served, ServeError, serve
from pairshift.gateway import GatewayRoutes, gateway_routes
from pairshift.observations import MAX_BATCH, BatchRejected, ObservationBatch, ObservationWriter, store_batch
from pairshift.observations.split_check import check_against_split
from pairshift.registry.models import MigrationRow
from pairshift.registry.store import Registry, open_registry
from pairshift.router import Assignment, Router, UnknownDeployment
from pairshift.settings import get_settings
from pairshift.telemetry import metrics, otlp_ingest, tracing
from pairshift.tokens import TokenInfo

log = logging.getLogger(__name__)

TemporalClientFactory = Callable[[], Awaitable[Any]]  # async () -> temporalio.client.Client


class ApiError(Exception):
    """An error with an HTTP status, answered as ``{"error", "detail"}``."""

    def __init__(
        self,
        status: int,
        message: str,
        detail: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.detail, self.headers = status, message, detail or [], headers


class Accepted(BaseModel):
    """The answer of ``POST /v1/observations``."""

    accepted: int


class CompleteIn(BaseModel):
    """The body of ``POST /v1/deployments/{name}/complete``."""

    model_config = ConfigDict(extra="forbid")

    unit: str = Field(min_length=1, max_length=512, description="the unit key (sticky assignment)")
    variables: dict[str, Any] = Field(default_factory=dict, description="the prompt's variables")


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int


class CompleteOut(BaseModel):
    """The answer of ``POST /v1/deployments/{name}/complete``: the output and where it came from."""

    output: str
    deployment: str
    pair: str = Field(description="the pair that served (a fallback's pair when the assigned one failed)")
    variant: str
    model: str
    resolved_model: str = Field(description="the response's model: what an alias resolved to")
    usage: Usage
    cost_usd: float
    latency_ms: float
    fallback_from: str | None = Field(
        None, description="the assigned pair that failed, when a fallback served"
    )


class ErrorBody(BaseModel):
    """Every 4xx answer: one line saying what is wrong."""

    error: str
    detail: list[dict[str, Any]] = []


class MigrationOut(BaseModel):
    """A row of the ``migrations`` table (the ``get migrations --json`` keys), plus live status when known."""

    id: str
    run_id: str
    deployment: str
    phase: str
    reason: str
    from_pair: str
    to_pair: str
    requested_by: str
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, Any] = {}
    live: dict[str, Any] | None = None
    live_error: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 413, 422, 429, 502, 503, 504)
}


class _State:
    """Per-app state: the registry and one router per deployment, made on first use."""

    def __init__(
        self,
        registry: Registry | None,
        temporal_client_factory: TemporalClientFactory | None,
        auth: AuthConfig,
        observe_rows_per_minute: float,
    ) -> None:
        self._registry = registry
        self.temporal_client_factory = temporal_client_factory
        self.auth = auth
        self.token_cache = TokenCache()
        self.observe_limit = RowRateLimit(observe_rows_per_minute)
        self.routers: dict[str, Router] = {}
        self._writer: ObservationWriter | None = (
            None  # one writer shared by the routers: /complete and the gateway record through it
        )
        self._lock = threading.Lock()
        self.metrics_registry = CollectorRegistry(auto_describe=False)  # the registry's view, per app
        self.metrics_registry.register(metrics.RegistryCollector(self))

    def session(self) -> Any:  # what RegistryCollector reads through (the registry is opened lazily)
        return self.registry.session()

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = open_registry()
        return self._registry

    def router(self, deployment: str) -> Router:
        router = self.routers.get(deployment)
        if router is not None:
            return router
        with self._lock:  # two first requests for a deployment must not start two refresh threads
            if deployment not in self.routers:
                if self._writer is None:
                    self._writer = ObservationWriter(self.registry)
                self.routers[deployment] = Router(deployment, self.registry, writer=self._writer).start()
            return self.routers[deployment]

    def observation_losses(self) -> dict[str, int]:
        """What the API's own writer (``/complete``, the gateway) wrote, lost or has pending, for /healthz."""
        w = self._writer
        if w is None:
            return {"written": 0, "dropped": 0, "rejected": 0, "pending": 0, "failed_flushes": 0}
        return {
            "written": w.written,
            "dropped": w.dropped,
            "rejected": w.rejected,
            "pending": w.pending,
            "failed_flushes": w.failed_flushes,
        }

    def flush_observations(self) -> int:
        """Write the queued observations now (tests, shutdown); returns how many."""
        return self._writer.flush() if self._writer is not None else 0

    def close(self) -> None:
        for router in self.routers.values():
            router.close()
        self.routers.clear()
        if self._writer is not None:
            self._writer.close()


def _migration_out(m: MigrationRow) -> MigrationOut:
    return MigrationOut(
        id=m.workflow_id,
        run_id=m.run_id,
        deployment=m.deployment,
        phase=m.phase,
        reason=m.reason,
        from_pair=m.from_pair,
        to_pair=m.to_pair,
        requested_by=m.requested_by,
        started_at=m.started_at,
        finished_at=m.finished_at,
        summary=m.summary or {},
    )


def _routes(state: _State) -> APIRouter:
    api = APIRouter(responses=ERRORS)

    @api.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        """Liveness plus a registry round trip (503 when it does not answer), and the observations this API's
        writer dropped (queue full) or had refused: operators see lost telemetry next to the liveness."""
        try:
            with state.registry.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise ApiError(503, f"registry unavailable: {type(exc).__name__}") from exc
        return {"ok": True, "registry": "ok", "observations": state.observation_losses()}

    @api.get(
        "/v1/deployments/{name}/resolve",
        response_model=Assignment,
        tags=["router"],
        dependencies=[Depends(require("resolve"))],
    )
    async def resolve(
        name: str, unit: str = Query(..., min_length=1, max_length=512, description="the unit key")
    ) -> Assignment:
        """The pair serving ``unit`` now (sticky): for apps that cannot embed the Python router."""
        assignment = (await _router_async(state, name)).resolve(unit)  # in memory: no thread hop
        metrics.ROUTER_ASSIGNMENTS.labels(assignment.deployment, assignment.variant).inc()
        return assignment

    @api.post(
        "/v1/deployments/{name}/complete",
        response_model=CompleteOut,
        tags=["router"],
        dependencies=[Depends(require("complete"))],
    )
    async def complete(name: str, body: CompleteIn) -> CompleteOut:
        """Resolve the unit, render its pair's prompt, call the provider, check and record (as
        ``Router.complete`` does). A provider failure answers 502 (refused), 503 (unavailable or rate limited
        after retries) or 504 (timeout) naming the pair; the observation is recorded either way."""
        router = await _router_async(state, name)
        try:
            served = await serve(
                router, body.unit, router.call_for(body.variables), capture_request={"vars": body.variables}
            )
        except ServeError as exc:
            raise ApiError(exc.status, exc.message, [exc.detail()]) from None
        metrics.ROUTER_ASSIGNMENTS.labels(served.assignment.deployment, served.assignment.variant).inc()
        return complete_out(served)

    @api.post("/v1/observations", response_model=Accepted, tags=["observations"])
    def observations(batch: ObservationBatch, token: TokenInfo = Depends(require("observe"))) -> Accepted:
        """Store a batch of at most 10,000 observations: all of them, or none with the bad items named.

        Each row must agree with the live split (its unit's variant and pair, the live migration) and carry
        an ``at`` within [now - 15 min, now + 1 min]; each token may send a bounded number per minute."""
        wait = state.observe_limit.take(token.name, len(batch.observations))
        if wait:
            metrics.OBSERVATIONS.labels("api", "refused").inc(len(batch.observations))
            raise ApiError(
                429,
                f"token {token.name!r} is over its observation rate limit; retry in {wait:.1f} s",
                headers={"retry-after": str(max(1, round(wait)))},
            )
        try:
            with state.registry.session() as s:
                check_against_split(s, batch.observations)
                accepted = store_batch(s, batch.observations)
        except BatchRejected as exc:
            metrics.OBSERVATIONS.labels("api", "refused").inc(len(batch.observations))
            detail = [{"index": e.index, "field": e.field, "msg": e.msg} for e in exc.errors]
            raise ApiError(422, str(exc), detail) from exc
        metrics.observe_stored("api", batch.observations)
        return Accepted(accepted=accepted)

    @api.post(
        "/v1/traces",
        tags=["observations"],
        response_class=Response,
        responses={
            200: {"content": {otlp_ingest.PROTOBUF: {}, otlp_ingest.JSON: {}}},
            415: {"model": ErrorBody},
        },
    )
    async def traces(request: Request, token: TokenInfo = Depends(require("observe"))) -> Response:
        """OTLP/HTTP traces (protobuf or JSON, gzip allowed): GenAI spans become observations.

        Each model-call span is mapped (deployment, unit, pair and variant from its attributes and the live
        split; outcome from its status; latency from its duration; tokens and cost from its usage), checked
        against the split like ``POST /v1/observations`` rows and stored; a span that does not map is counted
        and skipped (``partial_success.rejected_spans`` says how many and why), never a failed batch."""
        body = await request.body()
        try:
            export = otlp_ingest.decode(
                body, request.headers.get("content-type", ""), request.headers.get("content-encoding", "")
            )
        except otlp_ingest.TraceRequestError as exc:
            raise ApiError(exc.status, exc.message) from None
        spans = sum(len(ss.spans) for rs in export.resource_spans for ss in rs.scope_spans)
        wait = state.observe_limit.take(token.name, spans)
        if wait:
            raise ApiError(
                429,
                f"token {token.name!r} is over its observation rate limit; retry in {wait:.1f} s",
                headers={"retry-after": str(max(1, round(wait)))},
            )

        def store() -> otlp_ingest.IngestResult:
            with state.registry.session() as s:
                return otlp_ingest.ingest(s, export)

        result = await run_in_threadpool(store)
        metrics.OTLP_SPANS.labels("stored", "").inc(len(result.stored))
        metrics.OTLP_SPANS.labels("ignored", "not a model call").inc(result.ignored)
        for reason, n in result.skipped.items():
            metrics.OTLP_SPANS.labels("skipped", reason).inc(n)
        metrics.observe_stored("otlp", result.stored)
        if result.rejected:
            metrics.OBSERVATIONS.labels("otlp", "refused").inc(result.rejected)
        media = (
            otlp_ingest.JSON if "json" in request.headers.get("content-type", "") else otlp_ingest.PROTOBUF
        )
        content, media = otlp_ingest.encode_response(result, media)
        return Response(content, media_type=media)

    @api.get("/metrics", tags=["ops"], dependencies=[Depends(require("read"))])
    def prometheus_metrics() -> Response:
        """Prometheus text exposition: this process's counters plus the registry's migrations and splits."""
        body, content_type = metrics.exposition(state.metrics_registry)
        return Response(body, media_type=content_type)

    @api.get(
        "/v1/migrations",
        response_model=list[MigrationOut],
        tags=["migrations"],
        dependencies=[Depends(require("read"))],
    )
    def migrations(
        deployment: str | None = None, limit: int = Query(100, ge=1, le=1000)
    ) -> list[MigrationOut]:
        """Migrations, newest first, live and finished (the registry's record)."""
        query = select(MigrationRow).order_by(MigrationRow.started_at.desc()).limit(limit)
        if deployment:
            query = query.where(MigrationRow.deployment == deployment)
        with state.registry.session() as s:
            return [_migration_out(m) for m in s.scalars(query)]

    @api.get(
        "/v1/migrations/{migration_id}",
        response_model=MigrationOut,
        tags=["migrations"],
        dependencies=[Depends(require("read"))],
    )
    async def migration(migration_id: str) -> MigrationOut:
        """One migration by workflow id (its latest run) or run id; ``live``: the status query."""
        query = (
            select(MigrationRow)
            .where((MigrationRow.workflow_id == migration_id) | (MigrationRow.run_id == migration_id))
            .order_by(MigrationRow.started_at.desc())
            .limit(1)
        )

        def read() -> MigrationRow | None:
            with state.registry.session() as s:
                return s.scalars(query).first()

        row = await run_in_threadpool(read)  # keep the event loop free of database I/O
        if row is None:
            raise ApiError(
                404,
                f"unknown migration {migration_id!r}",
                [{"loc": ["path", "migration_id"], "field": "migration_id", "msg": "not found"}],
            )
        out = _migration_out(row)
        if state.temporal_client_factory is not None:
            await _add_live_status(state.temporal_client_factory, out)
        return out

    @api.get(
        "/reports/{report_id}",
        response_class=HTMLResponse,
        tags=["reports"],
        dependencies=[Depends(require("read"))],
    )
    async def report_html(report_id: str) -> HTMLResponse:
        """An eval report as a self-contained HTML page (the link in Slack notices)."""
        from pairshift.evals import EvalInputError, flipped_outputs, load_report
        from pairshift.reports import render_html

        def read() -> str:
            try:
                report = load_report(state.registry, report_id)
            except EvalInputError:
                raise ApiError(
                    404,
                    f"unknown report {report_id!r}",
                    [{"loc": ["path", "report_id"], "field": "report_id", "msg": "not found"}],
                ) from None
            return render_html(report, flipped_outputs(state.registry, report))

        return HTMLResponse(await run_in_threadpool(read))

    return api


async def _router_async(state: _State, name: str) -> Router:
    """The deployment's router: from memory once started, else started on a thread (it reads the registry)."""
    router = state.routers.get(name)
    return router if router is not None else await run_in_threadpool(_router_or_404, state, name)


def _router_or_404(state: _State, name: str) -> Router:
    try:
        return state.router(name)
    except UnknownDeployment as exc:
        raise ApiError(404, str(exc), [{"loc": ["path", "name"], "field": "name", "msg": str(exc)}]) from exc


def complete_out(served: Served) -> CompleteOut:
    """The wire answer of a served completion."""
    a, c = served.served, served.completion
    return CompleteOut(
        output=served.output,
        deployment=a.deployment,
        pair=a.pair,
        variant=a.variant,
        model=a.model,
        resolved_model=c.resolved_model,
        usage=Usage(
            input_tokens=c.input_tokens,
            output_tokens=c.output_tokens,
            cached_input_tokens=c.cached_input_tokens,
        ),
        cost_usd=c.cost_usd,
        latency_ms=served.latency_ms,
        fallback_from=served.fallback_from,
    )


async def _add_live_status(factory: TemporalClientFactory, out: MigrationOut) -> None:
    # Live status is a bonus over the registry's record: any Temporal failure is reported, never a 5xx.
    try:
        client = await factory()
        status = await client.get_workflow_handle(out.id, run_id=out.run_id).query("status")
        out.live = status.model_dump(mode="json") if isinstance(status, BaseModel) else status
    except Exception as exc:  # noqa: BLE001
        out.live_error = f"{type(exc).__name__}: {exc}"[:300]


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _json(
            400, "malformed JSON body", [{"loc": list(e.get("loc", [])), "msg": e.get("msg")} for e in errors]
        )
    detail = []
    for e in errors:
        loc = [p for p in e.get("loc", []) if p != "body"]
        index = loc[1] if len(loc) > 1 and loc[0] == "observations" and isinstance(loc[1], int) else None
        field = ".".join(str(p) for p in (loc[2:] if index is not None else loc)) or None
        detail.append({"loc": loc, "index": index, "field": field, "msg": e.get("msg")})
    if any(
        e.get("type") == "too_long" and [p for p in e.get("loc", []) if p != "body"] == ["observations"]
        for e in errors
    ):
        return _json(413, f"a batch holds at most {MAX_BATCH:,} observations; nothing was stored", detail)
    first = detail[0]
    where = (
        f"observation {first['index']}" + (f" field {first['field']}" if first["field"] else "")
        if first["index"] is not None
        else f"field {first['field'] or 'body'}"
    )
    more = f" (and {len(detail) - 1} more error(s))" if len(detail) > 1 else ""
    return _json(422, f"{where}: {first['msg']}{more}; nothing was stored", detail)


def _json(
    status: int,
    message: str,
    detail: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": message, "detail": detail or []}, headers=headers
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.message, exc.detail, exc.headers)

    @app.exception_handler(AuthError)
    async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return _json(exc.status, exc.message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json(exc.status_code, str(exc.detail))

    @app.exception_handler(SQLAlchemyError)
    async def _db(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.warning("registry error: %s", exc)
        return _json(503, f"registry unavailable: {type(exc).__name__}")


def create_app(
    registry: Registry | None = None,
    temporal_client_factory: TemporalClientFactory | None = None,
    extra_routers: Sequence[APIRouter] = (),
    *,
    auth: bool = True,
    max_body_bytes: int | None = None,
    observe_rows_per_minute: float | None = None,
) -> FastAPI:
    """The API app. ``registry`` defaults to the settings' registry (opened on first use);
    ``temporal_client_factory`` (e.g. ``pairshift.temporal_client.connect``) enables live migration status;
    ``extra_routers`` are mounted as they are (the Slack interactions route). ``auth=False`` serves every
    route without a token (``pairshift api --no-auth``, loopback only); limits default to the settings'."""
    settings = get_settings()
    state = _State(
        registry,
        temporal_client_factory,
        AuthConfig(enabled=auth),
        settings.api_observe_rows_per_minute if observe_rows_per_minute is None else observe_rows_per_minute,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()  # stop router refresh threads and the writer thread

    app = FastAPI(
        title="pairshift",
        version="0.1.0",
        lifespan=lifespan,
        description="Router, observations and migration status of pairshift (PRODUCT §9).",
    )
    app.state.pairshift = state
    # the gateway's two routes before the router (pairshift.gateway.GatewayRoutes), inside the body limit
    app.add_middleware(GatewayRoutes, state=state, exception_handlers=app.exception_handlers)
    app.add_middleware(
        BodyLimit,
        default=max_body_bytes or settings.api_max_body_bytes,
        limits={"/slack/": SLACK_MAX_BODY},
    )
    _install_error_handlers(app)
    app.include_router(_routes(state))
    app.include_router(gateway_routes(state))
    for extra in extra_routers:
        app.include_router(extra)
    if tracing.tracing_active():  # server spans for every route but the scrapes and probes
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="/metrics,/healthz")
    return app
