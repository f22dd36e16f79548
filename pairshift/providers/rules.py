"""Request rules: what a model accepts, so that the requests a migration sends are ones it does not refuse.

A model's rules come from two places, the first that says wins, field by field:

1. its config entry (``drop_params``, ``max_tokens_param``, ``api``, ``timeout_s``, ``max_attempts``), stored
   on the model row as ``request_rules`` (an explicit ``drop_params: []`` means "send everything");
2. the rules the provider calendar carries for the model's family (``families:`` in
   ``pairshift/data/provider_calendar.yaml``: OpenAI's reasoning models, Claude Opus 4.7 and later) or, for a
   sim snapshot, the rules its catalogue declares.

:func:`outgoing` applies them to one call (the dropped parameters are reported on the completion), and
:func:`provider_problems` checks a prompt's parameters against a provider's ranges (Anthropic's temperature is
0..1, reasoning parameters belong to one provider each), which ``pairshift apply`` and eval planning refuse.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pairshift.providers.base import ApiName, CallParams, DroppableParam, MaxTokensParam, ModelSpec


class RequestRules(BaseModel):
    """A model's request rules; ``None`` = not said here (the next source decides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop_params: list[DroppableParam] | None = Field(
        None, description="Parameters the model refuses: never sent (the report and the ledger say which)."
    )
    max_tokens_param: MaxTokensParam | None = Field(
        None,
        description="Which field carries the token limit (openai-compatible: gateways serving reasoning "
        "models want max_completion_tokens).",
    )
    api: ApiName | None = Field(None, description="openai only: `responses` calls the Responses API.")
    timeout_s: float | None = Field(None, gt=0, description="Seconds one attempt may take; default 60.")
    max_attempts: int | None = Field(
        None, ge=1, description="Attempts per call, the first included (the retry budget); default 4."
    )

    def over(self, fallback: RequestRules) -> RequestRules:
        """These rules, with every field left unset taken from ``fallback``."""
        mine = self.model_dump(exclude_none=True)
        return fallback.model_copy(update=mine)

    def spec_fields(self) -> dict[str, Any]:
        """The ModelSpec fields these rules set."""
        fields = self.model_dump(exclude_none=True)
        if "drop_params" in fields:
            fields["drop_params"] = tuple(dict.fromkeys(fields["drop_params"]))
        return fields


def known_rules(model_id: str, provider: str) -> RequestRules:
    """The rules pairshift knows for a model without config: the sim catalogue's, or the calendar family's."""
    from pairshift.sim.rules import client_rules

    sim = client_rules(model_id)
    if sim is not None:
        return sim
    from pairshift.provider_calendar import family_rules

    return family_rules(model_id, provider)


def effective_rules(model_id: str, provider: str, stored: dict[str, Any]) -> RequestRules:
    """Config's rules (as stored on the row) over the known ones."""
    return RequestRules.model_validate(stored).over(known_rules(model_id, provider))


def outgoing(spec: ModelSpec, params: CallParams) -> tuple[CallParams, list[str]]:
    """The parameters a call sends to ``spec``'s model, and the names of those its rules dropped."""
    dropped = [name for name in spec.drop_params if getattr(params, name) is not None]
    if not dropped:
        return params, []
    return params.model_copy(update=dict.fromkeys(dropped)), dropped


_OPENAI_ONLY = ("reasoning_effort",)
_ANTHROPIC_ONLY = ("thinking_budget", "effort", "cache_system")


def provider_problems(provider: str, params: CallParams, api: str = "chat") -> list[tuple[str, str]]:
    """(field, problem) for every parameter ``provider`` would refuse whatever the model; empty = fine."""
    problems: list[tuple[str, str]] = []
    set_fields = {k for k, v in params.model_dump().items() if v not in (None, False)}
    if provider == "anthropic":
        if params.temperature is not None and params.temperature > 1:
            problems.append(("temperature", f"Anthropic accepts 0..1, not {params.temperature:g}"))
        problems += [
            (f, "is an OpenAI parameter; Anthropic models take thinking_budget or effort")
            for f in _OPENAI_ONLY
            if f in set_fields
        ]
        if params.thinking_budget is not None and params.thinking_budget >= params.max_tokens:
            problems.append(
                (
                    "thinking_budget",
                    f"must be below max_tokens ({params.max_tokens}): thinking counts toward it",
                )
            )
    elif provider in ("openai", "openai-compatible"):
        problems += [
            (f, "is an Anthropic parameter; OpenAI reasoning models take reasoning_effort")
            for f in _ANTHROPIC_ONLY
            if f in set_fields
        ]
        if api == "responses" and params.stop:
            problems.append(
                ("stop", "the Responses API has no stop sequences; add stop to the model's drop_params")
            )
    return problems
