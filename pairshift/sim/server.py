"""The local fake provider server: Anthropic and OpenAI wire formats over the sim snapshots.

Used by tests, the demo and benchmarks so that the official ``anthropic`` and ``openai`` SDKs run
unchanged against 127.0.0.1. Routes:

- Anthropic: ``POST /v1/messages`` and Message Batches (create, list, retrieve, cancel, results JSONL:
  :mod:`pairshift.sim.batches`). ``GET /v1/models`` answers in Anthropic's shape
  when the request carries ``anthropic-version``, otherwise in OpenAI's (with ``shutdown_date``).
- OpenAI: ``POST /v1/chat/completions``, ``POST /v1/responses`` (the Responses API), and the Files + Batch
  API (:mod:`pairshift.sim.openai_batches`). Both batch APIs run on the clock of
  :mod:`pairshift.sim.batch_jobs`
  (``batch_delay_ms``, ``batch_failure_rate``, ``batch_expire_rate``, ``batch_cancel_ms``).
- Streaming (``stream: true``) on ``/v1/messages`` and ``/v1/chat/completions``, as server-sent events in each
  provider's shape (:mod:`pairshift.wire_stream`); every check runs before the first byte, so a refusal is
  still a JSON error with its status. OpenAI's ``stream_options`` without ``stream`` is refused as OpenAI
  refuses it; the Responses API does not stream here.
- Control: ``GET|POST /_admin/settings`` (POST merges top-level keys), ``POST /_admin/aliases``,
  ``POST /_admin/faults/next`` (script the next faults of a model), ``GET /_admin/stats``,
  ``GET /_admin/batches`` (every batch created: id, wire, custom ids, status requests seen),
  ``GET /_admin/answers`` (how often each distinct request was answered, by :func:`request_fingerprint`),
  ``POST /_admin/reset`` (back to the start settings, empty stats and windows).

A requested id resolves through ``aliases`` to a sim snapshot or a ``mirror`` (a real-looking id,
e.g. ``claude-sonnet-4-20250514``, answered with a sim snapshot's behaviour); the response's
``model`` is the resolved id. Checks run in this order: API key (only if ``require_api_key``),
model (404 unknown/retired), quota (``out_of_quota``: OpenAI's 429 ``insufficient_quota``, Anthropic's 400
credit balance), permission (``forbidden``: 403), the behaving snapshot's request rules (400 with the
provider's own wording, :mod:`pairshift.sim.rules`), rate limit (429), injected faults (500 / 529 or 503 /
timeout), then ``latency_ms`` is slept and the sim answers. Batches skip rate limits and faults.

Prompt caching is simulated the way each provider bills it: on the OpenAI wires a system text of 1024 tokens
or more is cached automatically after its first use (``cached_tokens`` in 128-token steps); on the Anthropic
wire only a system block marked ``cache_control`` is, written once (``cache_creation_input_tokens``) and read
after (``cache_read_input_tokens``).

Stats count, per resolved model, ``requests``, ``ok``, each refusal and fault, and ``repeated``: answers to a
request identical to one already answered (same model, system, messages and seed): the calls a client made
again, which is how tests and benchmarks see an eval that asks for a stored result twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pairshift import wire_stream
from pairshift.sim import refusals, wire, wire_responses
from pairshift.sim.batch_jobs import Job
from pairshift.sim.batches import add_batch_routes
from pairshift.sim.openai_batches import SimFile, add_openai_batch_routes
from pairshift.sim.rules import check_request, rules_for
from pairshift.sim.snapshots import ALIASES, SNAPSHOTS, SimOutput, count_tokens, simulate
from pairshift.sim.wire import Failure

CACHE_MIN_TOKENS = 1024  # both providers' minimum cacheable prefix (Sonnet/Opus; OpenAI's automatic caching)
OPENAI_CACHE_STEP = 128  # OpenAI reports cache hits in 128-token increments

FaultKind = Literal["500", "529", "timeout"]


class RateLimit(BaseModel):
    """At most ``requests`` per sliding window of ``per_seconds`` (60 = requests per minute)."""

    requests: int = Field(ge=1)
    per_seconds: float = Field(default=60.0, gt=0)


class Faults(BaseModel):
    """Share of requests that fail with each injected fault (drawn from a seeded generator)."""

    error_500: float = Field(default=0.0, ge=0, le=1)
    overloaded_529: float = Field(default=0.0, ge=0, le=1, description="529 (Anthropic) / 503 (OpenAI)")
    timeout: float = Field(default=0.0, ge=0, le=1, description="hang timeout_s, then 504")
    timeout_s: float = Field(default=5.0, ge=0)


class SimSettings(BaseModel):
    """Everything the fake server can be told; changeable at run time through ``/_admin``."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0.0, ge=0, description="slept before every answer")
    latency_scale: float = Field(default=0.0, ge=0, description="x the snapshot's simulated latency")
    rate_limits: dict[str, RateLimit] = Field(default_factory=dict, description="by resolved id; '*' = each")
    faults: dict[str, Faults] = Field(default_factory=dict, description="by resolved id; '*' = every model")
    fault_seed: int = 0
    aliases: dict[str, str] = Field(
        default_factory=lambda: {
            **ALIASES,
            "claude-sonnet-4-0": "claude-sonnet-4-20250514",
            "gpt-4o": "gpt-4o-2024-08-06",
        }
    )
    mirrors: dict[str, str] = Field(
        default_factory=lambda: {
            "claude-sonnet-4-20250514": "sim-classic-2024-06",
            "claude-sonnet-4-6": "sim-fresh-2025-09",
            "gpt-4o-2024-08-06": "sim-classic-2024-06",
            "gpt-5-2025-08-07": "sim-literal-2025-11",
            "o3-2025-04-16": "sim-reason-2026-03",
            "claude-opus-4-8": "sim-strict-2026-05",
        },
        description="served id -> sim snapshot whose behaviour answers it",
    )
    retired: list[str] = Field(default_factory=list, description="ids answered with 404")
    shutdown_dates: dict[str, date] = Field(
        default_factory=lambda: {"claude-sonnet-4-20250514": date(2026, 6, 15)},
        description="shown in /v1/models; sim snapshots default to their catalogue retires_on",
    )
    require_api_key: str | None = Field(default=None, description="if set, other keys get 401")
    out_of_quota: list[str] = Field(
        default_factory=list, description="resolved ids ('*' = all) out of credit"
    )
    forbidden: list[str] = Field(default_factory=list, description="resolved ids this key may not use (403)")
    context_windows: dict[str, int] = Field(
        default_factory=dict, description="snapshot -> context window in tokens, over its rules' default"
    )
    batch_delay_ms: float = Field(default=0.0, ge=0, description="a batch reports in_progress this long")
    batch_failure_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of batch lines errored (500)"
    )
    batch_expire_rate: float = Field(default=0.0, ge=0, le=1, description="share of batch lines expired")
    batch_cancel_ms: float = Field(default=0.0, ge=0, description="a canceled batch says canceling this long")
    batch_status_delay_ms: float = Field(
        default=0.0, ge=0, description="a batch status request (GET of the batch) answers this late"
    )
    hold: list[str] = Field(
        default_factory=list,
        description="resolved ids whose live requests wait (counted as held) until the id leaves this list",
    )


@dataclass
class SimState:
    """Mutable server state; touched only from the server's event loop."""

    initial: SimSettings
    settings: SimSettings = field(init=False)
    stats: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    windows: defaultdict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    scripted: defaultdict[str, deque[FaultKind]] = field(default_factory=lambda: defaultdict(deque))
    batches: dict[str, Job] = field(default_factory=dict)
    files: dict[str, SimFile] = field(default_factory=dict)
    answered: Counter[str] = field(default_factory=Counter)  # request_fingerprint -> answers
    prompt_cache: set[tuple[str, str]] = field(default_factory=set)
    rng: random.Random = field(init=False)
    settings_changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self.reset()

    async def wait_released(self, resolved: str) -> None:
        """Wait while ``resolved`` is held (``hold``): tests keep a call in flight without a sleep."""
        async with self.settings_changed:
            await self.settings_changed.wait_for(lambda: resolved not in self.settings.hold)

    def reset(self) -> None:
        self.settings = self.initial.model_copy(deep=True)
        self.rng = random.Random(self.settings.fault_seed)  # own instance: global state stays untouched
        for table in (
            self.stats,
            self.windows,
            self.scripted,
            self.batches,
            self.files,
            self.answered,
            self.prompt_cache,
        ):
            table.clear()

    def resolve(self, requested: str) -> tuple[str, str]:
        """(resolved id, behaving snapshot) or a 404 :class:`Failure` naming the model."""
        s = self.settings
        resolved = s.aliases.get(requested, requested)
        for model in (requested, resolved):
            if model in s.retired:
                raise Failure("not_found", f"model: {model} has been retired and is no longer served")
        behaviour = resolved if resolved in SNAPSHOTS else s.mirrors.get(resolved)
        if behaviour is None or behaviour not in SNAPSHOTS:
            raise Failure("not_found", f"model: {requested} does not exist or you do not have access to it")
        return resolved, behaviour

    def check_rate(self, model: str, wire_name: wire.WireName) -> dict[str, str]:
        """Admit one request under the model's limit (headers to send) or raise a 429 Failure."""
        limit = self.settings.rate_limits.get(model) or self.settings.rate_limits.get("*")
        if limit is None:
            return {}
        now, window = time.monotonic(), self.windows[model]
        while window and window[0] <= now - limit.per_seconds:
            window.popleft()
        reset_in = (window[0] + limit.per_seconds - now) if window else limit.per_seconds
        if len(window) >= limit.requests:
            headers = wire.rate_headers(wire_name, limit.requests, 0, reset_in, retry_after=reset_in)
            raise Failure(
                "rate_limit",
                f"rate limit of {limit.requests} requests per {limit.per_seconds:g}s "
                f"exceeded for model {model}",
                headers,
            )
        window.append(now)
        return wire.rate_headers(wire_name, limit.requests, limit.requests - len(window), reset_in)

    def draw_fault(self, model: str) -> tuple[FaultKind | None, float]:
        """The fault to inject for this request (scripted first, then seeded draws) and its hang."""
        faults = self.settings.faults.get(model) or self.settings.faults.get("*") or Faults()
        for key in (model, "*"):
            if self.scripted[key]:
                return self.scripted[key].popleft(), faults.timeout_s
        draw, rate_end = self.rng.random(), 0.0
        shares: tuple[tuple[FaultKind, float], ...] = (
            ("500", faults.error_500),
            ("529", faults.overloaded_529),
            ("timeout", faults.timeout),
        )
        for kind, share in shares:
            rate_end += share
            if draw < rate_end:
                return kind, faults.timeout_s
        return None, 0.0


def request_fingerprint(
    model: str, system: str | None, messages: Iterable[tuple[str, str]], seed: int | None
) -> str:
    """What makes two requests the same call: resolved model, system text, (role, content) turns and seed."""
    blob = json.dumps([model, system or None, [list(m) for m in messages], seed], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _account_checks(state: SimState, wire_name: wire.WireName, resolved: str) -> None:
    """Quota and permission of the key for this model, as the providers answer them."""
    s = state.settings
    if resolved in s.out_of_quota or "*" in s.out_of_quota:
        raise refusals.quota_failure(wire_name)
    if resolved in s.forbidden or "*" in s.forbidden:
        raise refusals.permission_failure(wire_name, resolved)


def _check_rules(state: SimState, wire_name: wire.WireName, behaviour: str, request: wire.SimRequest) -> None:
    """The behaving snapshot's request rules (a context window from the settings wins over its default)."""
    window = state.settings.context_windows.get(behaviour)
    refusal = check_request(behaviour, request.sent, window or rules_for(behaviour).context_window)
    if refusal is not None:
        raise refusals.refusal_failure(wire_name, refusal)


def _cache_usage(
    state: SimState, wire_name: wire.WireName, resolved: str, request: wire.SimRequest
) -> tuple[int, int]:
    """(cache read tokens, cache write tokens) of this request's system text, remembering it for the next."""
    system_tokens = count_tokens(request.system) + 4 if request.system else 0
    if system_tokens < CACHE_MIN_TOKENS or (wire_name == "anthropic" and not request.cache_system):
        return 0, 0
    key = (resolved, request.system or "")
    seen = key in state.prompt_cache
    state.prompt_cache.add(key)
    if wire_name == "anthropic":
        return (system_tokens, 0) if seen else (0, system_tokens)
    return (system_tokens // OPENAI_CACHE_STEP * OPENAI_CACHE_STEP if seen else 0), 0


async def answer(
    state: SimState, wire_name: wire.WireName, request: wire.SimRequest, headers: dict[str, str]
) -> tuple[str, SimOutput, dict[str, str], tuple[int, int]]:
    """Run one live request through every check: (resolved id, output, extra headers, cache read/write)."""
    key = state.settings.require_api_key
    if key is not None and wire.api_key(headers) != key:
        state.stats[request.model]["auth_errors"] += 1
        raise Failure("authentication", "invalid x-api-key")
    try:
        resolved, behaviour = state.resolve(request.model)
    except Failure:
        state.stats[request.model]["not_found"] += 1
        raise
    stats = state.stats[resolved]
    stats["requests"] += 1
    try:
        _account_checks(state, wire_name, resolved)
        _check_rules(state, wire_name, behaviour, request)
    except Failure:
        stats["refused"] += 1
        raise
    try:
        extra = state.check_rate(resolved, wire_name)
    except Failure:
        stats["rate_limited"] += 1
        raise
    fault, hang_s = state.draw_fault(resolved)
    if fault is not None:
        stats[f"fault_{fault}"] += 1
        if fault == "timeout":
            await asyncio.sleep(hang_s)
            raise Failure("timeout", f"request to {resolved} timed out")
        raise Failure("overloaded" if fault == "529" else "api_error", f"injected {fault} for {resolved}")
    if resolved in state.settings.hold:
        stats["held"] += 1
        await state.wait_released(resolved)
        stats["released"] += 1
    out = simulate(behaviour, request.system, request.messages, request.params)
    delay_ms = state.settings.latency_ms + state.settings.latency_scale * out.latency_ms
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000.0)
    cache = _cache_usage(state, wire_name, resolved, request)
    stats["ok"] += 1
    key = request_fingerprint(
        resolved, request.system, [(m.role, m.content) for m in request.messages], request.params.seed
    )
    if state.answered[key]:
        stats["repeated"] += 1
    state.answered[key] += 1
    stats["input_tokens"] += out.input_tokens
    stats["output_tokens"] += out.output_tokens
    stats["cached_input_tokens"] += cache[0]
    return resolved, out, extra, cache


def _error_response(wire_name: wire.WireName, failure: Failure) -> JSONResponse:
    status, body = wire.error_body(wire_name, failure.kind, failure.message, failure.body)
    return JSONResponse(body, status_code=failure.status or status, headers=failure.headers)


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise Failure("invalid_request", "request body is not valid JSON") from None


def _add_provider_routes(app: FastAPI, state: SimState) -> None:
    @app.post("/v1/messages")
    async def anthropic_messages(request: Request) -> Response:
        try:
            sim_request = wire.parse_anthropic(await _json_body(request))
            resolved, out, extra, (read, write) = await answer(
                state, "anthropic", sim_request, dict(request.headers)
            )
        except Failure as failure:
            return _error_response("anthropic", failure)
        if sim_request.stream:
            return _stream(_anthropic_events(resolved, out, read, write), extra)
        return JSONResponse(wire.anthropic_message(resolved, out, read, write), headers=extra)

    @app.post("/v1/chat/completions")
    async def openai_chat(request: Request) -> Response:
        try:
            sim_request = wire.parse_openai(await _json_body(request))
            resolved, out, extra, (read, _) = await answer(
                state, "openai", sim_request, dict(request.headers)
            )
        except Failure as failure:
            return _error_response("openai", failure)
        if sim_request.stream:
            return _stream(_openai_chunks(resolved, out, read, sim_request.include_usage), extra)
        return JSONResponse(wire.openai_completion(resolved, out, read), headers=extra)

    @app.post("/v1/responses")
    async def openai_responses(request: Request) -> Response:
        try:
            sim_request = wire_responses.parse_responses(await _json_body(request))
            resolved, out, extra, (read, _) = await answer(
                state, "responses", sim_request, dict(request.headers)
            )
        except Failure as failure:
            return _error_response("responses", failure)
        return JSONResponse(wire_responses.responses_object(resolved, out, read), headers=extra)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        s = state.settings
        ids = [m for m in [*SNAPSHOTS, *s.mirrors, *s.aliases] if m not in s.retired]
        dates = {m: info.retires_on for m, info in SNAPSHOTS.items() if info.retires_on} | s.shutdown_dates
        shape: wire.WireName = "anthropic" if "anthropic-version" in request.headers else "openai"
        return JSONResponse(wire.model_list(shape, list(dict.fromkeys(ids)), dates))


def _stream(events: Iterator[bytes], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(
        events, media_type=wire_stream.MEDIA_TYPE, headers={**wire_stream.SSE_HEADERS, **headers}
    )


def _anthropic_events(resolved: str, out: SimOutput, read: int, write: int) -> Iterator[bytes]:
    stop = {"length": "max_tokens", "refusal": "refusal"}.get(out.finish_reason, "end_turn")
    yield from wire_stream.anthropic_start(resolved, out.input_tokens - read - write, read, write)
    for piece in wire_stream.pieces(out.text):
        yield wire_stream.anthropic_delta(piece)
    yield from wire_stream.anthropic_finish(stop, out.output_tokens)


def _openai_chunks(resolved: str, out: SimOutput, read: int, include_usage: bool) -> Iterator[bytes]:
    chunks = wire_stream.OpenAIChunks(resolved)
    refusal = out.text if out.finish_reason == "refusal" else None
    if refusal is None:
        for piece in wire_stream.pieces(out.text):
            yield chunks.delta(piece)
    usage = wire_stream.openai_usage(out.input_tokens, out.output_tokens, read, out.reasoning_tokens)
    finish = "length" if out.finish_reason == "length" else "stop"
    yield from chunks.finish(finish, usage, include_usage, refusal)


_ALIAS_MAP = TypeAdapter(dict[str, str])


class _FaultScript(BaseModel):
    model: str = Field(description="resolved model id, or '*' for whichever model is called next")
    faults: list[FaultKind]


def _add_admin_routes(app: FastAPI, state: SimState) -> None:
    @app.get("/_admin/settings")
    async def get_settings() -> dict[str, Any]:
        return state.settings.model_dump(mode="json")

    @app.post("/_admin/settings")
    async def update_settings(request: Request) -> Response:
        try:
            merged = state.settings.model_dump() | dict(await request.json())
            state.settings = SimSettings.model_validate(merged)
        except (ValueError, TypeError, ValidationError) as exc:
            return JSONResponse({"error": f"bad settings: {exc}"}, status_code=400)
        state.rng = random.Random(state.settings.fault_seed)
        async with state.settings_changed:
            state.settings_changed.notify_all()  # a held request may be released
        return JSONResponse(state.settings.model_dump(mode="json"))

    @app.post("/_admin/aliases")
    async def repoint_aliases(request: Request) -> Response:
        try:
            body = _ALIAS_MAP.validate_python(await request.json())
        except (ValueError, ValidationError) as exc:
            return JSONResponse({"error": f"aliases: expected {{alias: target}}: {exc}"}, 400)
        known = set(SNAPSHOTS) | set(state.settings.mirrors)
        bad = [f"{a} -> {t}" for a, t in body.items() if t not in known]
        if bad:
            return JSONResponse({"error": f"alias targets must be sim snapshots or mirrors: {bad}"}, 400)
        state.settings = state.settings.model_copy(update={"aliases": state.settings.aliases | body})
        return JSONResponse(state.settings.aliases)

    @app.post("/_admin/faults/next")
    async def script_faults(script: _FaultScript) -> dict[str, int]:
        state.scripted[script.model].extend(script.faults)
        return {"queued": len(state.scripted[script.model])}

    @app.get("/_admin/stats")
    async def get_stats() -> dict[str, Any]:
        total: Counter[str] = sum(state.stats.values(), Counter())
        return {"models": {m: dict(c) for m, c in state.stats.items()}, "total": dict(total)}

    @app.get("/_admin/batches")
    async def get_batches() -> dict[str, Any]:
        jobs = state.batches.values()
        return {
            "batches": [
                {"id": j.id, "wire": j.wire, "custom_ids": [x.custom_id for x in j.lines], "polls": j.polls}
                for j in jobs
            ]
        }

    @app.get("/_admin/answers")
    async def get_answers() -> dict[str, dict[str, int]]:
        return {"answers": dict(state.answered)}

    @app.post("/_admin/reset")
    async def reset() -> dict[str, str]:
        state.reset()
        async with state.settings_changed:
            state.settings_changed.notify_all()  # the hold list is empty again
        return {"status": "reset"}


def create_app(settings: SimSettings | None = None) -> FastAPI:
    """The fake provider server as an ASGI app (``app.state.sim`` holds its :class:`SimState`)."""
    app = FastAPI(title="pairshift sim provider", docs_url=None, redoc_url=None)
    state = SimState(initial=settings or SimSettings())
    app.state.sim = state
    _add_provider_routes(app, state)
    add_batch_routes(app, state)
    add_openai_batch_routes(app, state)
    _add_admin_routes(app, state)
    return app


def serve(host: str = "127.0.0.1", port: int = 8787, **settings: Any) -> None:
    """Run the fake server in the foreground until interrupted (``pairshift sim serve``)."""
    uvicorn.run(create_app(SimSettings(**settings)), host=host, port=port, log_level="warning")


class RunningServer:
    """A fake server running on a background thread; ``stop()`` shuts it down."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, port: int, state: SimState) -> None:
        self.server, self.thread, self.port, self.state = server, thread, port, state
        self.base_url = f"http://127.0.0.1:{port}"  # Anthropic SDK base_url
        self.openai_base_url = f"{self.base_url}/v1"  # OpenAI SDK base_url

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)


def start_in_thread(
    settings: SimSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 10.0,
) -> RunningServer:
    """Start the fake server on a background thread (port 0: a free port) and wait until it serves."""
    app = create_app(settings)
    server, thread, bound = serve_in_thread(app, host=host, port=port, startup_timeout_s=startup_timeout_s)
    return RunningServer(server, thread, bound, app.state.sim)


def serve_in_thread(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 10.0,
    lifespan: str = "off",
) -> tuple[uvicorn.Server, threading.Thread, int]:
    """Any ASGI app on a background uvicorn thread (port 0: a free port): (server, thread, port) once serving.

    Stop it with ``server.should_exit = True`` and ``thread.join()``."""
    # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on sockets that say so; without it every
    # response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan=lifespan)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-thread", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start on {host}:{sock.getsockname()[1]}")
        time.sleep(0.01)  # polling a flag set by another thread's event loop
    return server, thread, sock.getsockname()[1]
