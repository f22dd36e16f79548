"""The OpenAI Responses API's wire shapes on the fake server: the request as the sim reads it, the response.

``input`` is a string or a list of messages, ``instructions`` the system text, ``max_output_tokens`` the limit
(reasoning included), ``reasoning.effort`` and ``text.format`` the knobs; the seed rides in ``metadata.seed``
(pairshift's backend puts it there; the API itself has no seed). A response cut by the limit is ``incomplete``
with ``incomplete_details.reason: max_output_tokens``; usage carries ``input_tokens_details.cached_tokens``
and ``output_tokens_details.reasoning_tokens``. Errors use OpenAI's body (``wire.error_body``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pairshift.providers.base import CallParams, Message
from pairshift.sim.rules import Sent
from pairshift.sim.snapshots import SimOutput, count_input_tokens
from pairshift.sim.wire import SEED, Failure, OpenAIMessage, SimRequest, effort, sampling, text_of, validate


class _ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[OpenAIMessage] = Field(min_length=1)
    instructions: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = Field(default=None, gt=0)
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream: bool = False


def parse_responses(body: Any) -> SimRequest:
    """A Responses API request body (``input`` a string or messages, ``instructions`` the system text)."""
    req = validate(_ResponsesRequest, body)
    turns = [OpenAIMessage(role="user", content=req.input)] if isinstance(req.input, str) else req.input
    system_parts = [req.instructions or ""] + [
        text_of(m.content) for m in turns if m.role in ("system", "developer")
    ]
    system = "\n".join(p for p in system_parts if p) or None
    messages = [
        Message(role=m.role, content=text_of(m.content)) for m in turns if m.role in ("user", "assistant")
    ]
    if not messages:
        raise Failure("invalid_request", "input: at least one user message is required")
    fmt = ((req.text or {}).get("format") or {}).get("type")
    seed_match = SEED.match(str((req.metadata or {}).get("seed", "")))
    params = CallParams(
        temperature=min(req.temperature, 2.0) if req.temperature is not None else None,
        max_tokens=req.max_output_tokens or 4096,
        seed=int(seed_match.group(1)) if seed_match else None,
        response_format="json" if fmt in ("json_object", "json_schema") else None,
        reasoning_effort=effort((req.reasoning or {}).get("effort")),
    )
    sent = Sent(
        params=sampling(temperature=req.temperature, top_p=req.top_p),
        input_tokens=count_input_tokens(system, messages),
    )
    return SimRequest(model=req.model, system=system, messages=messages, params=params, sent=sent)


def responses_object(resolved: str, out: SimOutput, cached_tokens: int = 0) -> dict[str, Any]:
    """A Responses API response: reasoning and message output items; a cut answer is ``incomplete``."""
    cut = out.finish_reason == "length"
    output: list[dict[str, Any]] = []
    if out.reasoning_tokens:
        output.append({"id": f"rs_{uuid.uuid4().hex[:24]}", "type": "reasoning", "summary": []})
    if out.text or not cut:
        content: dict[str, Any] = (
            {"type": "refusal", "refusal": out.text}
            if out.finish_reason == "refusal"
            else {"type": "output_text", "text": out.text, "annotations": []}
        )
        output.append(
            {
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "role": "assistant",
                "status": "incomplete" if cut else "completed",
                "content": [content],
            }
        )
    return {
        "id": f"resp_{uuid.uuid4().hex[:24]}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "model": resolved,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": out.input_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens},
            "output_tokens": out.output_tokens,
            "output_tokens_details": {"reasoning_tokens": out.reasoning_tokens},
            "total_tokens": out.input_tokens + out.output_tokens,
        },
    }
