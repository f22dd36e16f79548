"""Wire shapes of the fake provider server: request parsing and response bodies, both providers.

Kept apart from ``server.py`` (which holds the routes and the rate-limit / fault state) so each
shape sits in one place next to its twin: what Anthropic sends for a thing, then what OpenAI sends.
Shapes follow ENGINEERING.md "Providers, offline" and the providers' public API references.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pairshift.providers.base import CallParams, Message
from pairshift.sim.rules import Sent
from pairshift.sim.snapshots import SimOutput, count_input_tokens

WireName = Literal["anthropic", "openai", "responses"]
ErrorKind = Literal[
    "invalid_request",
    "authentication",
    "permission",
    "not_found",
    "rate_limit",
    "api_error",
    "overloaded",
    "timeout",
]

# kind -> (HTTP status, Anthropic error.type)
_ANTHROPIC_ERRORS: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request_error"),
    "authentication": (401, "authentication_error"),
    "permission": (403, "permission_error"),
    "not_found": (404, "not_found_error"),
    "rate_limit": (429, "rate_limit_error"),
    "api_error": (500, "api_error"),
    "overloaded": (529, "overloaded_error"),
    "timeout": (504, "timeout_error"),
}
# kind -> (HTTP status, OpenAI error.type, error.code); OpenAI has no 529 and says 503 instead
_OPENAI_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "invalid_request": (400, "invalid_request_error", None),
    "authentication": (401, "invalid_request_error", "invalid_api_key"),
    "permission": (403, "invalid_request_error", "model_not_found"),
    "not_found": (404, "invalid_request_error", "model_not_found"),
    "rate_limit": (429, "requests", "rate_limit_exceeded"),
    "api_error": (500, "server_error", None),
    "overloaded": (503, "server_error", "overloaded"),
    "timeout": (504, "server_error", "timeout"),
}


class Failure(Exception):
    """A provider error, sent in the wire format of the route that raised it.

    ``body`` overrides the generic error object (``{"message", "type", "code", "param"}`` for OpenAI,
    ``{"type", "message"}`` for Anthropic) where a provider words a refusal its own way; ``status`` overrides
    the kind's.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        status: int | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind, self.message, self.headers = kind, message, headers or {}
        self.status, self.body = status, body


class SimRequest(BaseModel):
    """A request of any wire format, reduced to what the sim reads and what the rules check."""

    model: str
    system: str | None
    messages: list[Message]
    params: CallParams
    sent: Sent = Field(default_factory=Sent)
    cache_system: bool = Field(False, description="Anthropic: the system text carries cache_control")
    stream: bool = Field(False, description="answer as server-sent events")
    include_usage: bool = Field(False, description="OpenAI stream_options.include_usage")


class TextBlock(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "text"
    text: str = ""


def text_of(content: str | list[TextBlock] | None) -> str:
    """The text of a content string or list of blocks."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(block.text for block in content if block.type == "text")


class _AnthropicMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str | list[TextBlock]


class _AnthropicRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # top_k, tools, ... are accepted and ignored
    model: str
    max_tokens: int = Field(gt=0)
    messages: list[_AnthropicMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    stream: bool = False


class OpenAIMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextBlock] | None = None


class _OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[OpenAIMessage] = Field(min_length=1)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    seed: int | None = None
    stop: str | list[str] | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None


_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def effort(value: Any) -> Any:
    """A reasoning effort the sim knows, else None."""
    return value if value in _EFFORTS else None


def sampling(**values: float | None) -> dict[str, float | bool]:
    return {k: v for k, v in values.items() if v is not None}


SEED = re.compile(r"^seed-(-?\d+)$")
_T = TypeVar("_T", bound=BaseModel)


def validate(model: type[_T], body: Any, *, streams: bool = False) -> _T:
    """A request body as ``model``, or a 400 naming the first bad field; ``stream`` only where ``streams``."""
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "body"
        raise Failure("invalid_request", f"{where}: {first['msg']}") from None
    if getattr(parsed, "stream", False) and not streams:
        raise Failure("invalid_request", "stream: streaming is not supported by the sim server")
    return parsed


def parse_anthropic(body: Any) -> SimRequest:
    """A Messages API request body as a :class:`SimRequest` (the seed rides in metadata.user_id)."""
    req = validate(_AnthropicRequest, body, streams=True)
    seed_match = SEED.match(str((req.metadata or {}).get("user_id", "")))
    params = CallParams(
        temperature=min(req.temperature, 2.0) if req.temperature is not None else None,
        max_tokens=req.max_tokens,
        stop=req.stop_sequences,
        seed=int(seed_match.group(1)) if seed_match else None,
    )
    messages = [Message(role=m.role, content=text_of(m.content)) for m in req.messages]
    system = text_of(req.system) or None
    cached = isinstance(req.system, list) and any(getattr(b, "cache_control", None) for b in req.system)
    sent = Sent(
        params=sampling(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k),
        input_tokens=count_input_tokens(system, messages),
    )
    return SimRequest(
        model=req.model,
        system=system,
        messages=messages,
        params=params,
        sent=sent,
        cache_system=cached,
        stream=req.stream,
    )


def parse_openai(body: Any) -> SimRequest:
    """A chat completions request body as a :class:`SimRequest`; system/developer turns join."""
    req = validate(_OpenAIRequest, body, streams=True)
    if req.stream_options is not None and not req.stream:
        raise Failure(
            "invalid_request",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            body={
                "message": "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "type": "invalid_request_error",
                "param": "stream_options",
                "code": None,
            },
        )
    system = "\n".join(text_of(m.content) for m in req.messages if m.role in ("system", "developer"))
    messages = [
        Message(role=m.role, content=text_of(m.content))
        for m in req.messages
        if m.role in ("user", "assistant")
    ]
    json_mode = (req.response_format or {}).get("type") in ("json_object", "json_schema")
    params = CallParams(
        temperature=min(req.temperature, 2.0) if req.temperature is not None else None,
        max_tokens=req.max_completion_tokens or req.max_tokens or 4096,
        stop=[req.stop] if isinstance(req.stop, str) else req.stop,
        seed=req.seed,
        response_format="json" if json_mode else None,
        reasoning_effort=effort(req.reasoning_effort),
    )
    knobs = sampling(temperature=req.temperature, top_p=req.top_p)
    if req.stop:
        knobs["stop"] = True
    token_field = "max_tokens" if req.max_tokens is not None else None
    sent = Sent(
        params=knobs, token_field=token_field, input_tokens=count_input_tokens(system or None, messages)
    )
    return SimRequest(
        model=req.model,
        system=system or None,
        messages=messages,
        params=params,
        sent=sent,
        stream=req.stream,
        include_usage=bool((req.stream_options or {}).get("include_usage")),
    )


def api_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: Anthropic's x-api-key or a bearer token."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    auth = headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _go_duration(seconds: float) -> str:
    # OpenAI writes reset times as Go durations: "20ms", "1.5s", "6m0s".
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


def rate_headers(
    wire: WireName, limit: int, remaining: int, reset_in_s: float, retry_after: float | None = None
) -> dict[str, str]:
    """Rate-limit headers of the wire; with ``retry_after`` also retry-after (s) and retry-after-ms."""
    if wire == "anthropic":
        reset_at = datetime.now(UTC) + timedelta(seconds=reset_in_s)
        headers = {
            "anthropic-ratelimit-requests-limit": str(limit),
            "anthropic-ratelimit-requests-remaining": str(remaining),
            "anthropic-ratelimit-requests-reset": _iso(reset_at),
        }
    else:
        headers = {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": _go_duration(reset_in_s),
        }
    if retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        headers["retry-after-ms"] = str(max(1, math.ceil(retry_after * 1000)))
    return headers


def error_body(
    wire: WireName, kind: ErrorKind, message: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """(status, body) of an error in the wire's shape; ``body`` replaces the generic error object."""
    if wire == "anthropic":
        status, type_ = _ANTHROPIC_ERRORS[kind]
        return status, {
            "type": "error",
            "error": body or {"type": type_, "message": message},
            "request_id": f"req_{uuid.uuid4().hex[:24]}",
        }
    status, type_, code = _OPENAI_ERRORS[kind]
    return status, {"error": body or {"message": message, "type": type_, "param": None, "code": code}}


def anthropic_message(
    resolved: str, out: SimOutput, cache_read: int = 0, cache_write: int = 0
) -> dict[str, Any]:
    """A Messages API response; ``model`` is the resolved snapshot. ``input_tokens`` excludes cached ones."""
    stop = {"length": "max_tokens", "refusal": "refusal"}.get(out.finish_reason, "end_turn")
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": resolved,
        "content": [{"type": "text", "text": out.text}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": out.input_tokens - cache_read - cache_write,
            "output_tokens": out.output_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
        },
    }


def openai_completion(resolved: str, out: SimOutput, cached_tokens: int = 0) -> dict[str, Any]:
    """A chat completion; a refusal comes as ``message.refusal`` with null content, as OpenAI does."""
    refused = out.finish_reason == "refusal"
    message = {
        "role": "assistant",
        "content": None if refused else out.text,
        "refusal": out.text if refused else None,
    }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": resolved,
        "system_fingerprint": "fp_pairshift_sim",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "length" if out.finish_reason == "length" else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": out.input_tokens,
            "completion_tokens": out.output_tokens,
            "total_tokens": out.input_tokens + out.output_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": out.reasoning_tokens, "audio_tokens": 0},
        },
    }


def model_list(wire: WireName, ids: list[str], shutdown: Mapping[str, date]) -> dict[str, Any]:
    """``GET /v1/models`` in the wire's shape; OpenAI items carry ``shutdown_date`` when known."""
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    if wire == "anthropic":
        data = [{"type": "model", "id": m, "display_name": m, "created_at": _iso(epoch)} for m in ids]
        return {
            "data": data,
            "has_more": False,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
        }
    items = []
    for m in ids:
        item: dict[str, Any] = {
            "id": m,
            "object": "model",
            "created": int(epoch.timestamp()),
            "owned_by": "pairshift-sim",
        }
        if m in shutdown:
            item["shutdown_date"] = shutdown[m].isoformat()
        items.append(item)
    return {"object": "list", "data": items}


def jsonl(lines: list[dict[str, Any]]) -> str:
    """Lines as JSON Lines text."""
    return "".join(json.dumps(line) + "\n" for line in lines)
