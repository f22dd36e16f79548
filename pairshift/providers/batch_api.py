"""The providers' batch APIs through the official SDKs: submit many calls at once, look, read the results.

Anthropic Message Batches (``messages.batches``) and OpenAI's Files + Batch API (a JSONL upload with
``purpose=batch``, then ``batches.create`` on ``/v1/chat/completions``) both bill half the online price and
answer within 24 hours. Each request is keyed by a ``custom_id`` the caller chooses; results come back in any
order, by that id. A request is built exactly as the online call would be (:func:`request_kwargs` of each
backend, after the model's request rules), so the same model answers the same request the same way.

Every SDK failure is translated into the typed errors of :mod:`pairshift.providers.errors` (no retries here:
the callers are Temporal activities, retried by their policy). OpenAI batches carry ``metadata.pairshift_key``
so a submit that died between the provider's answer and the registry write can find its batch again;
Anthropic batches have no metadata (see the eval module that calls this).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pairshift.providers import anthropic_provider, openai_provider
from pairshift.providers._sdk import attempt
from pairshift.providers.base import CallParams, Completion, Message, ModelSpec
from pairshift.providers.rules import outgoing

# The SDKs are imported where they are used: at import time they cost ~3 s of CPU to every process (the CLI,
# the API, each worker) that never submits a batch.
if TYPE_CHECKING:
    import anthropic

ENDPOINT = "/v1/chat/completions"
Outcome = Literal["succeeded", "errored", "expired", "canceled"]
_OPENAI_OVER = {"completed", "expired", "cancelled", "failed"}


def offers_batch(spec: ModelSpec) -> bool:
    """Whether the model's provider has a batch API pairshift speaks (chat completions for OpenAI)."""
    return spec.provider == "anthropic" or (spec.provider == "openai" and spec.api == "chat")


@dataclass
class BatchCall:
    """One request of a batch."""

    custom_id: str
    system: str | None
    messages: list[Message]
    params: CallParams


@dataclass
class LineResult:
    """One request's outcome: a completion (at batch prices), or why there is none."""

    outcome: Outcome
    completion: Completion | None = None
    error: str | None = None


@dataclass
class BatchState:
    ended: bool
    status: str
    errors: list[str] = field(default_factory=list)  # OpenAI: validation errors of a failed batch


def _anthropic(spec: ModelSpec) -> anthropic.AsyncAnthropic:
    return anthropic_provider._client(spec)


def _anthropic_params(spec: ModelSpec, call: BatchCall) -> dict[str, Any]:
    sent, _ = outgoing(spec, call.params)
    kwargs = anthropic_provider.request_kwargs(spec, call.system, call.messages, sent)
    return {**{k: v for k, v in kwargs.items() if k != "extra_body"}, **kwargs.get("extra_body", {})}


def _openai_line(spec: ModelSpec, call: BatchCall) -> dict[str, Any]:
    sent, _ = outgoing(spec, call.params)
    body = openai_provider.request_kwargs(spec, call.system, call.messages, sent)
    return {"custom_id": call.custom_id, "method": "POST", "url": ENDPOINT, "body": body}


async def create(spec: ModelSpec, calls: list[BatchCall], key: str) -> str:
    """Submit ``calls`` as one batch; the provider's batch id."""
    import anthropic
    import openai

    if spec.provider == "anthropic":
        requests = [{"custom_id": c.custom_id, "params": _anthropic_params(spec, c)} for c in calls]
        batch, _ = await attempt(anthropic, spec, _anthropic(spec).messages.batches.create(requests=requests))  # type: ignore[arg-type]
        return str(batch.id)
    client = openai_provider.client_for(spec)
    content = "".join(json.dumps(_openai_line(spec, c)) + "\n" for c in calls).encode()
    upload, _ = await attempt(
        openai, spec, client.files.create(file=(f"{key}.jsonl", content), purpose="batch")
    )
    created, _ = await attempt(
        openai,
        spec,
        client.batches.create(
            input_file_id=upload.id,
            endpoint=ENDPOINT,
            completion_window="24h",
            metadata={"pairshift_key": key},
        ),
    )
    return str(created.id)


async def find(spec: ModelSpec, key: str) -> str | None:
    """The batch submitted under ``key`` before (OpenAI, by metadata); None when none or not findable."""
    import openai

    if spec.provider != "openai":
        return None
    client = openai_provider.client_for(spec)
    page, _ = await attempt(openai, spec, client.batches.list(limit=100))
    for batch in page.data:
        if (batch.metadata or {}).get("pairshift_key") == key:
            return str(batch.id)
    return None


async def look(spec: ModelSpec, batch_id: str) -> BatchState:
    """The batch's state now (one request, never waits)."""
    import anthropic
    import openai

    if spec.provider == "anthropic":
        batch, _ = await attempt(anthropic, spec, _anthropic(spec).messages.batches.retrieve(batch_id))
        return BatchState(batch.processing_status == "ended", batch.processing_status)
    client = openai_provider.client_for(spec)
    got, _ = await attempt(openai, spec, client.batches.retrieve(batch_id))
    errors = [f"line {e.line}: {e.message}" for e in (got.errors.data or [])] if got.errors else []
    return BatchState(got.status in _OPENAI_OVER, got.status, errors)


async def cancel(spec: ModelSpec, batch_id: str) -> None:
    """Ask the provider to cancel (what was answered stays in the results)."""
    import anthropic
    import openai

    if spec.provider == "anthropic":
        await attempt(anthropic, spec, _anthropic(spec).messages.batches.cancel(batch_id))
    else:
        await attempt(openai, spec, openai_provider.client_for(spec).batches.cancel(batch_id))


async def results(spec: ModelSpec, batch_id: str, dropped: list[str]) -> dict[str, LineResult]:
    """Every line of an ended batch by custom_id; completions priced at batch prices."""
    if spec.provider == "anthropic":
        return await _anthropic_results(spec, batch_id, dropped)
    return await _openai_results(spec, batch_id, dropped)


async def _anthropic_results(spec: ModelSpec, batch_id: str, dropped: list[str]) -> dict[str, LineResult]:
    import anthropic
    from anthropic.types import Message as AnthropicMessage

    decoder, _ = await attempt(anthropic, spec, _anthropic(spec).messages.batches.results(batch_id))
    found: dict[str, LineResult] = {}
    async for line in decoder:
        result = line.result
        if result.type == "succeeded":
            message = AnthropicMessage.model_validate(result.message.model_dump())
            done = anthropic_provider.completion_from(spec, message, 0.0, dropped, batch=True)
            found[line.custom_id] = LineResult("succeeded", done)
        elif result.type == "errored":
            found[line.custom_id] = LineResult("errored", error=result.error.error.message)
        else:
            found[line.custom_id] = LineResult(result.type, error=f"the request was {result.type}")
    return found


async def _file_lines(spec: ModelSpec, file_id: str | None) -> list[dict[str, Any]]:
    import openai

    if not file_id:
        return []
    content, _ = await attempt(openai, spec, openai_provider.client_for(spec).files.content(file_id))
    return [json.loads(raw) for raw in content.text.splitlines() if raw.strip()]


async def _openai_results(spec: ModelSpec, batch_id: str, dropped: list[str]) -> dict[str, LineResult]:
    import openai
    from openai.types.chat import ChatCompletion

    got, _ = await attempt(openai, spec, openai_provider.client_for(spec).batches.retrieve(batch_id))
    found: dict[str, LineResult] = {}
    for row in await _file_lines(spec, got.output_file_id):
        body = ChatCompletion.model_validate(row["response"]["body"])
        done = openai_provider.completion_from(spec, body, 0.0, dropped, batch=True)
        found[row["custom_id"]] = LineResult("succeeded", done)
    for row in await _file_lines(spec, got.error_file_id):
        error = row.get("error") or {}
        code = error.get("code")
        if code in ("batch_expired", "batch_cancelled"):
            found[row["custom_id"]] = LineResult(
                "expired" if code == "batch_expired" else "canceled", error=code
            )
            continue
        response = row.get("response") or {}
        detail = (response.get("body") or {}).get("error") or {}
        status = response.get("status_code")
        found[row["custom_id"]] = LineResult("errored", error=f"{status}: {detail.get('message', error)}")
    return found
