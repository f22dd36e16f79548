"""Server-sent events of the two streaming wires, as the providers send them; the sim server and the gateway
both speak through these, so what the official SDKs parse from one they parse from the other.

- OpenAI chat completions (``stream: true``): ``data: {chat.completion.chunk}`` lines, the first delta
  carrying ``role``, the last choice chunk carrying ``finish_reason``, with ``stream_options.include_usage``
  one more chunk with empty ``choices`` and the ``usage``, then ``data: [DONE]``.
- Anthropic Messages (``stream: true``): ``event: message_start`` (the message with empty content and the
  input usage), ``content_block_start``, ``ping``, one ``content_block_delta`` (``text_delta``) per piece,
  ``content_block_stop``, ``message_delta`` (``stop_reason`` and the output usage), ``message_stop``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
MEDIA_TYPE = "text/event-stream"


def sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    """One server-sent event (``event:`` line when named) with a JSON (or literal) ``data:`` line."""
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {body}\n\n".encode()


# ---- OpenAI


class OpenAIChunks:
    """The chunks of one streamed chat completion (one id, one ``created``)."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self._started = False

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_pairshift",
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return sse(body)

    def delta(self, text: str) -> bytes:
        delta: dict[str, Any] = {"content": text}
        if not self._started:
            self._started = True
            delta = {"role": "assistant", "content": text}
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def finish(
        self,
        finish_reason: str,
        usage: dict[str, Any] | None,
        include_usage: bool,
        refusal: str | None = None,
    ) -> Iterator[bytes]:
        if not self._started:  # an empty answer still opens the assistant turn
            self._started = True
            empty: dict[str, Any] = {"role": "assistant", "content": "" if refusal is None else None}
            if refusal is not None:
                empty["refusal"] = refusal
            yield self._chunk([{"index": 0, "delta": empty, "logprobs": None, "finish_reason": None}])
        yield self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}])
        if include_usage:
            yield self._chunk([], usage or {})
        yield sse("[DONE]")


def openai_usage(
    input_tokens: int, output_tokens: int, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }


# ---- Anthropic


def anthropic_start(
    model: str, input_tokens: int, cache_read: int = 0, cache_write: int = 0
) -> Iterator[bytes]:
    """``message_start``, the text block's start and a ping: everything before the first delta."""
    message = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": 1,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
        },
    }
    yield sse({"type": "message_start", "message": message}, "message_start")
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    yield sse(block, "content_block_start")
    yield sse({"type": "ping"}, "ping")


def anthropic_delta(text: str) -> bytes:
    body = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    return sse(body, "content_block_delta")


def anthropic_finish(
    stop_reason: str, output_tokens: int, input_usage: dict[str, int] | None = None
) -> Iterator[bytes]:
    """The stream's end; ``input_usage`` (input_tokens and the cache counts) when known only now: usage on a
    ``message_delta`` is cumulative and overwrites message_start's."""
    yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {**(input_usage or {}), "output_tokens": output_tokens},
    }
    yield sse(delta, "message_delta")
    yield sse({"type": "message_stop"}, "message_stop")


def anthropic_error(error_type: str, message: str) -> bytes:
    """An error after the stream started (Anthropic sends it as an ``error`` event)."""
    return sse({"type": "error", "error": {"type": error_type, "message": message}}, "error")


def pieces(text: str, size: int = 16) -> Iterable[str]:
    """``text`` cut into deltas of ``size`` characters (the sim's tokens)."""
    return (text[i : i + size] for i in range(0, len(text), size))
