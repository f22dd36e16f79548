"""What each sim snapshot refuses, as strictly as the real services do, and what pairshift knows to send it.

A request is checked before the snapshot answers (:func:`check_request`, pure): parameters the snapshot
refuses, values it does not accept, and its context window. The refusal is wire-neutral; ``wire.py`` words it
the way each provider does (status, error type, code, ``param``):

- ``sim-reason-2026-03`` is an OpenAI reasoning model: ``temperature`` and ``top_p`` other than 1 are refused
  (400 ``unsupported_value``), so are ``stop`` and, on chat completions, ``max_tokens`` (400
  ``unsupported_parameter``, "Use 'max_completion_tokens' instead").
- ``sim-strict-2026-05`` is a Claude Opus 4.7-style model: ``temperature``, ``top_p`` and ``top_k`` are
  refused in any value (400 ``invalid_request_error``, "`temperature` is deprecated for this model.").
- every snapshot has a context window; a longer input is 400 ``context_length_exceeded`` (OpenAI) or
  "prompt is too long: N tokens > M maximum" (Anthropic).

:data:`CLIENT_RULES` is the sim's side of the provider calendar: the request rules that make a snapshot's
requests acceptable, used when a sim snapshot is named without rules in config.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from pairshift.providers.rules import RequestRules
from pairshift.sim.snapshots import ALIASES, SNAPSHOTS

DEFAULT_CONTEXT_WINDOW = 32_000


class SnapshotRules(BaseModel):
    """The request rules one snapshot enforces."""

    fixed_params: dict[str, float] = Field(
        default_factory=dict, description="parameter -> the only value accepted (OpenAI reasoning: 1)"
    )
    refused_params: list[str] = Field(
        default_factory=list,
        description="parameters refused in any value (wire names: stop, max_tokens, ...)",
    )
    context_window: int = DEFAULT_CONTEXT_WINDOW


RULES: dict[str, SnapshotRules] = {
    "sim-reason-2026-03": SnapshotRules(
        fixed_params={"temperature": 1.0, "top_p": 1.0}, refused_params=["stop", "max_tokens"]
    ),
    "sim-strict-2026-05": SnapshotRules(refused_params=["temperature", "top_p", "top_k"]),
}

CLIENT_RULES: dict[str, RequestRules] = {
    "sim-reason-2026-03": RequestRules(
        drop_params=["temperature", "top_p", "stop"], max_tokens_param="max_completion_tokens"
    ),
    "sim-strict-2026-05": RequestRules(drop_params=["temperature", "top_p"]),
}


class Sent(BaseModel):
    """What one request carried, in wire-neutral terms."""

    params: dict[str, float | bool] = Field(
        default_factory=dict, description="sampling parameter -> value (stop: True when present)"
    )
    token_field: str | None = Field(None, description="the chat-completions token limit field sent")
    input_tokens: int = 0


class Refusal(BaseModel):
    """Why a snapshot refuses a request."""

    kind: str = Field(description="fixed_value | unsupported | context_length")
    param: str | None = None
    value: float | None = None
    limit: int | None = None
    tokens: int | None = None


def rules_for(snapshot: str) -> SnapshotRules:
    """The rules ``snapshot`` (a resolved sim snapshot id) enforces."""
    return RULES.get(snapshot, SnapshotRules())


def check_request(snapshot: str, sent: Sent, context_window: int | None = None) -> Refusal | None:
    """The first rule the request breaks, or None (parameters first, then the context window)."""
    rules = rules_for(snapshot)
    window = context_window or rules.context_window
    for name, value in sent.params.items():
        if name in rules.refused_params:
            return Refusal(kind="unsupported", param=name)
        fixed = rules.fixed_params.get(name)
        if fixed is not None and value != fixed:
            return Refusal(kind="fixed_value", param=name, value=float(value))
    if sent.token_field is not None and sent.token_field in rules.refused_params:
        return Refusal(kind="unsupported", param=sent.token_field)
    if sent.input_tokens > window:
        return Refusal(kind="context_length", limit=window, tokens=sent.input_tokens)
    return None


def client_rules(model_id: str) -> RequestRules | None:
    """What pairshift sends a sim snapshot (or sim alias); None for ids that are not the sim's."""
    snapshot = ALIASES.get(model_id, model_id)
    if snapshot not in SNAPSHOTS:
        return None
    return CLIENT_RULES.get(snapshot, RequestRules())
