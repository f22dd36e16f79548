"""The gateway: OpenAI- and Anthropic-wire routes on ``pairshift api`` for apps whose prompt is in their code.

``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic), plain and streaming, where the
request's ``model`` names a deployment declared ``prompt: external``. The app's own messages go to the model
of the pair its unit is assigned (through :mod:`pairshift.completion`, the path ``Router.complete`` takes:
sticky assignment, the fallback chain, one observation a call). The unit is the ``X-Pairshift-Unit`` header,
else the OpenAI ``user`` field or the Anthropic ``metadata.user_id``; a request without one is its own unit.
The app states its prompt version in ``X-Pairshift-Prompt`` (recorded with the observation).

The official SDKs work unchanged: ``base_url`` at the API and a pairshift token (scope ``complete``) as the
key, sent as ``Authorization: Bearer`` (OpenAI) or ``x-api-key`` (Anthropic). Errors come in the wire's own
shape so the SDKs raise their usual exceptions: 401/403 for the token, 404 for an unknown deployment, 400 for
what the gateway does not take (tools, images, n > 1) or a deployment that renders its own prompt, and
502/503/504 naming the pair when the provider fails. Answers carry ``x-pairshift-pair``,
``x-pairshift-variant`` and, when the chain served, ``x-pairshift-fallback-from``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from pairshift import wire_stream
from pairshift.completion import Call, ServeError, serve
from pairshift.completion import open_stream as open_completion_stream
from pairshift.providers import CallParams, Completion, Message, ProviderError
from pairshift.router import Assignment, Router, UnknownDeployment

Wire = Literal["openai", "anthropic"]
UNIT_HEADER = "x-pairshift-unit"
PROMPT_HEADER = "x-pairshift-prompt"
MAX_HEADER_VALUE = 200


class GatewayError(Exception):
    """An error answered in the wire's shape."""

    def __init__(self, status: int, kind: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.param = status, kind, message, param


_OPENAI_TYPES = {
    "invalid_request": ("invalid_request_error", None),
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "permission": ("invalid_request_error", "insufficient_scope"),
    "not_found": ("invalid_request_error", "model_not_found"),
    "provider": ("server_error", "upstream_error"),
}
_ANTHROPIC_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "provider": "api_error",
}


def error_response(wire: Wire, err: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    if wire == "openai":
        type_, code = _OPENAI_TYPES[err.kind]
        body: dict[str, Any] = {
            "error": {"message": err.message, "type": type_, "param": err.param, "code": code}
        }
    else:
        body = {"type": "error", "error": {"type": _ANTHROPIC_TYPES[err.kind], "message": err.message}}
    return JSONResponse(body, status_code=err.status, headers=headers)


# ---- requests


class _Text(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str = ""


class _OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_Text] | None = None


class OpenAIChatIn(BaseModel):
    """What the gateway reads of a chat completions request (other fields are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[_OpenAIMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(None, max_length=512)
    n: int | None = Field(None, ge=1, le=1, description="one choice")
    tools: None = Field(None, description="not taken by the gateway")


class _AnthropicMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str | list[_Text]


class AnthropicMessagesIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    max_tokens: int = Field(gt=0)
    messages: list[_AnthropicMessage] = Field(min_length=1)
    system: str | list[_Text] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    stream: bool = False
    tools: None = Field(None, description="not taken by the gateway")


@dataclass(frozen=True)
class GatewayRequest:
    """A wire request reduced to what a provider call needs, plus where it routes and what it records."""

    deployment: str
    system: str | None
    messages: list[Message]
    params: CallParams
    stream: bool
    include_usage: bool
    unit: str
    prompt_version: str | None


def _text(content: str | list[_Text] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    for i, block in enumerate(content):
        if block.type != "text":
            raise GatewayError(
                400, "invalid_request", f"{where}[{i}]: only text content is taken by the gateway", where
            )
    return "".join(block.text for block in content)


def _validated(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "body"
        msg = first["msg"]
        if first["loc"] and first["loc"][0] == "tools":
            msg = "tools are not taken by the pairshift gateway"
        raise GatewayError(400, "invalid_request", f"{where}: {msg}", where) from None


def _unit(request: Request, from_body: str | None) -> str:
    header = request.headers.get(UNIT_HEADER)
    unit = header or from_body
    if unit is not None and not 0 < len(unit) <= 512:
        raise GatewayError(400, "invalid_request", "the unit is 1..512 characters", UNIT_HEADER)
    return unit or f"request-{uuid.uuid4().hex}"  # without a unit, a request is its own unit


def _prompt_version(request: Request) -> str | None:
    value = request.headers.get(PROMPT_HEADER)
    if value is not None and not 0 < len(value) <= MAX_HEADER_VALUE:
        raise GatewayError(400, "invalid_request", f"{PROMPT_HEADER} is 1..{MAX_HEADER_VALUE} characters")
    return value


def parse_openai(request: Request, body: Any) -> GatewayRequest:
    req: OpenAIChatIn = _validated(OpenAIChatIn, body)
    if req.stream_options is not None and not req.stream:
        raise GatewayError(
            400,
            "invalid_request",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    system = "\n".join(
        _text(m.content, f"messages.{i}.content")
        for i, m in enumerate(req.messages)
        if m.role in ("system", "developer")
    )
    messages = [
        Message(role=m.role, content=_text(m.content, f"messages.{i}.content"))
        for i, m in enumerate(req.messages)
        if m.role in ("user", "assistant")
    ]
    if not messages:
        raise GatewayError(400, "invalid_request", "messages: at least one user message", "messages")
    json_mode = (req.response_format or {}).get("type") in ("json_object", "json_schema")
    params = CallParams(
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_completion_tokens or req.max_tokens or CallParams().max_tokens,
        stop=[req.stop] if isinstance(req.stop, str) else req.stop,
        seed=req.seed,
        response_format="json" if json_mode else None,
        reasoning_effort=req.reasoning_effort,
    )
    return GatewayRequest(
        deployment=req.model,
        system=system or None,
        messages=messages,
        params=params,
        stream=req.stream,
        include_usage=bool((req.stream_options or {}).get("include_usage")),
        unit=_unit(request, req.user),
        prompt_version=_prompt_version(request),
    )


def parse_anthropic(request: Request, body: Any) -> GatewayRequest:
    req: AnthropicMessagesIn = _validated(AnthropicMessagesIn, body)
    budget = (
        (req.thinking or {}).get("budget_tokens") if (req.thinking or {}).get("type") == "enabled" else None
    )
    try:
        params = CallParams(
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=req.max_tokens,
            stop=req.stop_sequences,
            thinking_budget=budget,
            effort=(req.output_config or {}).get("effort"),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise GatewayError(
            400, "invalid_request", f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None
    user_id = (req.metadata or {}).get("user_id")
    return GatewayRequest(
        deployment=req.model,
        system=_text(req.system, "system") or None,
        messages=[
            Message(role=m.role, content=_text(m.content, f"messages.{i}.content"))
            for i, m in enumerate(req.messages)
        ],
        params=params,
        stream=req.stream,
        include_usage=True,
        unit=_unit(request, user_id if isinstance(user_id, str) else None),
        prompt_version=_prompt_version(request),
    )


# ---- answers


def _headers(assignment: Assignment, served: Assignment, fallback_from: str | None) -> dict[str, str]:
    headers = {"x-pairshift-pair": served.pair, "x-pairshift-variant": assignment.variant}
    if fallback_from:
        headers["x-pairshift-fallback-from"] = fallback_from
    return headers


def openai_answer(c: Completion) -> dict[str, Any]:
    refused = c.finish_reason == "refusal"
    finish = {"length": "length", "content_filter": "content_filter"}.get(c.finish_reason, "stop")
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": c.resolved_model,
        "system_fingerprint": "fp_pairshift",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None if refused else c.text,
                    "refusal": c.text if refused else None,
                },
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": wire_stream.openai_usage(
            c.input_tokens, c.output_tokens, c.cached_input_tokens, c.reasoning_tokens
        ),
    }


_STOP = {"length": "max_tokens", "refusal": "refusal", "tool_calls": "tool_use"}


def anthropic_answer(c: Completion) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": c.resolved_model,
        "content": [{"type": "text", "text": c.text}],
        "stop_reason": _STOP.get(c.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": c.input_tokens - c.cached_input_tokens - c.cache_write_tokens,
            "output_tokens": c.output_tokens,
            "cache_creation_input_tokens": c.cache_write_tokens,
            "cache_read_input_tokens": c.cached_input_tokens,
        },
    }


# ---- routes


async def handle(request: Request, wire: Wire, state: Any) -> Response:
    """One request of either wire: authorize, parse, route, serve (or stream); every failure in the wire's
    shape. ``state`` is the API's per-app state (routers, token cache, registry)."""
    try:
        await _authorize(request, state)
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise GatewayError(400, "invalid_request", "the request body is not valid JSON") from None
        req = parse_openai(request, body) if wire == "openai" else parse_anthropic(request, body)
        router = state.routers.get(req.deployment)  # started: no thread hop
        router = _external(router) if router else await run_in_threadpool(_router, state, req.deployment)
        if req.stream:
            return await _stream(router, req, wire)
        served = await serve(
            router,
            req.unit,
            _call_for(router, req),
            prompt_version=req.prompt_version,
            capture_request=_capture_request(req),
        )
    except GatewayError as err:
        return error_response(wire, err)
    except ServeError as exc:
        return error_response(wire, GatewayError(exc.status, "provider", exc.message))
    answer = openai_answer(served.completion) if wire == "openai" else anthropic_answer(served.completion)
    return JSONResponse(answer, headers=_headers(served.assignment, served.served, served.fallback_from))


def gateway_routes(state: Any) -> APIRouter:
    """The two wire routes, as the API's OpenAPI document shows them. ``pairshift api`` serves them through
    :class:`GatewayRoutes` in front of its router (the same :func:`handle`); these serve an app without it."""
    api = APIRouter(tags=["gateway"])

    @api.post(
        "/v1/chat/completions", summary="OpenAI chat completions, routed by deployment (scope complete)"
    )
    async def chat_completions(request: Request) -> Response:
        """The OpenAI wire: ``model`` names a ``prompt: external`` deployment (module doc)."""
        return await handle(request, "openai", state)

    @api.post("/v1/messages", summary="Anthropic Messages, routed by deployment (scope complete)")
    async def messages(request: Request) -> Response:
        """The Anthropic wire: ``model`` names a ``prompt: external`` deployment (module doc)."""
        return await handle(request, "anthropic", state)

    return api


PATHS: dict[str, Wire] = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}


class GatewayRoutes:
    """ASGI middleware serving ``POST`` on the two wire routes before the app's router: the gateway's hot path
    without FastAPI's route matching (every route tried in turn) and per-request dependency machinery, which
    cost about a fifth of a gateway request's CPU (bench/results/gateway.md). Every other request, and any
    other method on these paths, goes on to the app. An exception :func:`handle` does not answer itself (a
    registry error) is answered by the app's exception handler for it, as it would be behind the router."""

    def __init__(self, app: Any, *, state: Any, exception_handlers: dict[Any, Any]) -> None:
        self.app, self.state, self.exception_handlers = app, state, exception_handlers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        wire = PATHS.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if wire is None or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await handle(request, wire, self.state)
        except Exception as exc:
            handler = next(
                (self.exception_handlers[t] for t in type(exc).__mro__ if t in self.exception_handlers), None
            )
            if handler is None:
                raise
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
        await response(scope, receive, send)


async def _authorize(request: Request, state: Any) -> None:
    if not state.auth.enabled:
        return
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key")
    if not token:
        raise GatewayError(401, "authentication", "authentication required: a pairshift token as the API key")
    hit, info = state.token_cache.fresh(token)  # the hot path: no thread hop while the cache is fresh
    if not hit:
        info = await run_in_threadpool(state.token_cache.lookup, state.registry, token)
    if info is None:
        raise GatewayError(401, "authentication", "invalid or revoked token")
    if not info.allows("complete"):
        raise GatewayError(403, "permission", f"token {info.name!r} lacks the 'complete' scope")


def _router(state: Any, deployment: str) -> Router:
    try:
        router: Router = state.router(deployment)
    except UnknownDeployment:
        raise GatewayError(
            404,
            "not_found",
            f"model {deployment!r}: no deployment of that name (the model names a deployment)",
            "model",
        ) from None
    return _external(router)


def _external(router: Router) -> Router:
    deployment = router.deployment
    if not router.split.external:
        raise GatewayError(
            400,
            "invalid_request",
            f"deployment {deployment} renders its own prompt: use POST /v1/deployments/{deployment}/complete,"
            " or declare it `prompt: external` to send your own messages",
            "model",
        )
    return router


def _capture_request(req: GatewayRequest) -> dict[str, Any]:
    """What a capture keeps of a gateway request: the app's own turns, system text and call parameters (the
    request a model-only eval replays; redacted before storage)."""
    turns = [{"role": m.role, "content": m.content} for m in req.messages]
    params = req.params.model_dump(exclude_none=True, exclude_defaults=True)
    return {
        "messages": turns,
        **({"system": req.system} if req.system else {}),
        **({"params": params} if params else {}),
    }


def _call_for(router: Router, req: GatewayRequest) -> Any:
    def build(assignment: Assignment) -> Call:
        spec = router.split.models.get(assignment.model)
        if spec is None:
            raise LookupError(
                f"model {assignment.model} of deployment {req.deployment} is not in the registry"
            )
        return Call(spec, req.system, req.messages, req.params)

    return build


async def _stream(router: Router, req: GatewayRequest, wire: Wire) -> Response:
    """A streamed answer, one write per network read from the provider. When the serving model speaks the
    client's wire (an OpenAI model to the OpenAI wire, Anthropic to Anthropic), its events go on as they
    came: parsed once for what is recorded, not re-serialised. Otherwise (the chain served through the other
    wire, or a model not called directly) the text is re-encoded in the client's wire."""
    opened = await open_completion_stream(
        router,
        req.unit,
        _call_for(router, req),
        prompt_version=req.prompt_version,
        capture_request=_capture_request(req),
        wire=wire,
        forward_usage=req.include_usage,
    )
    headers = {**wire_stream.SSE_HEADERS, **_headers(opened.assignment, opened.served, opened.fallback_from)}
    model = opened.served.model

    def failed(exc: ProviderError) -> bytes:
        if wire == "openai":
            return wire_stream.sse(
                {"error": {"message": str(exc), "type": "server_error", "param": None, "code": exc.kind}}
            )
        return wire_stream.anthropic_error("api_error", str(exc))

    async def forwarded() -> AsyncIterator[tuple[bytes, bool]]:
        try:
            async with aclosing(opened.reads()) as reads:  # a client gone: reads() records it at once
                async for read in reads:
                    if read.data or read.end:
                        yield read.data, read.end  # the end: sent before the observation is recorded
        except ProviderError as exc:
            yield failed(exc), True

    async def openai_events() -> AsyncIterator[tuple[bytes, bool]]:
        chunks = wire_stream.OpenAIChunks(model)

        def end(c: Completion) -> bytes:
            usage = wire_stream.openai_usage(
                c.input_tokens, c.output_tokens, c.cached_input_tokens, c.reasoning_tokens
            )
            finish = {"length": "length"}.get(c.finish_reason, "stop")
            return b"".join(chunks.finish(finish, usage, req.include_usage))

        try:
            async with aclosing(opened.reads()) as reads:
                async for read in reads:
                    if read.end and read.completion is not None:  # the provider's last event: the end now
                        yield b"".join(map(chunks.delta, read.texts)) + end(read.completion), True
                        async for _ in reads:  # read to its end: the observation is recorded
                            pass
                        return
                    if read.texts:
                        yield b"".join(map(chunks.delta, read.texts)), False  # one write per read
        except ProviderError as exc:
            yield failed(exc), True
            return
        assert opened.completion is not None
        yield end(opened.completion), True  # one write for the end

    async def anthropic_events() -> AsyncIterator[tuple[bytes, bool]]:
        start = b"".join(wire_stream.anthropic_start(model, 0))  # sent with the first text: one write

        def end(c: Completion) -> bytes:
            input_usage = {
                "input_tokens": c.input_tokens - c.cached_input_tokens - c.cache_write_tokens,
                "cache_read_input_tokens": c.cached_input_tokens,
                "cache_creation_input_tokens": c.cache_write_tokens,
            }
            stop = _STOP.get(c.finish_reason, "end_turn")
            return b"".join(wire_stream.anthropic_finish(stop, c.output_tokens, input_usage))

        try:
            async with aclosing(opened.reads()) as reads:
                async for read in reads:
                    if read.end and read.completion is not None:  # the provider's last event: the end now
                        yield (
                            start
                            + b"".join(map(wire_stream.anthropic_delta, read.texts))
                            + end(read.completion),
                            True,
                        )
                        async for _ in reads:  # read to its end: the observation is recorded
                            pass
                        return
                    if read.texts:
                        yield start + b"".join(map(wire_stream.anthropic_delta, read.texts)), False
                        start = b""
        except ProviderError as exc:
            yield start + failed(exc), True
            return
        assert opened.completion is not None
        yield start + end(opened.completion), True

    if opened.raw:
        events = forwarded()
    else:
        events = openai_events() if wire == "openai" else anthropic_events()
    return EventStream(events, media_type=wire_stream.MEDIA_TYPE, headers=headers)


class EventStream(StreamingResponse):
    """A stream of ``(bytes, last)`` pieces, each written as it comes; the last one in the same write as the
    body's end (a client reading to the end waits for that end: one write instead of two, and what the
    generator does after the last piece, recording the observation, is off the client's path).

    A client gone cancels the stream, as with Starlette's ``StreamingResponse``, but watched by one plain
    task instead of an anyio task group and its cancel scopes: the watcher cancels the streaming task, whose
    generators record the stream as abandoned and close the provider's; the response then ends quietly. A
    disconnect after the last piece went out changes nothing (the response was whole)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        ended = gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if not ended:
                gone = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            async for data, last in self.body_iterator:  # type: ignore[misc]
                if not ended:
                    ended = last  # before the write: the watcher leaves a whole response alone
                    await send({"type": "http.response.body", "body": data, "more_body": not last})
            if not ended:
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()  # the client left: the stream's generators recorded it
        finally:
            watcher.cancel()
