"""How each provider words a refusal: a snapshot's broken rule, an account out of quota, a forbidden model.

The wordings, statuses, types and codes are the providers' own, as their APIs answer (and as users report
them verbatim): OpenAI chat completions ``Unsupported value: 'temperature' does not support 0 with this model.
Only the default (1) value is supported.`` (``unsupported_value``), ``Unsupported parameter: 'stop' is not
supported with this model.`` (``unsupported_parameter``), ``... Use 'max_completion_tokens' instead.``,
``This model's maximum context length is N tokens. However, your messages resulted in M tokens. ...``
(``context_length_exceeded``) and 429 ``insufficient_quota``; Anthropic 400 ``invalid_request_error``
"`temperature` is deprecated for this model.", "prompt is too long: N tokens > M maximum", the credit-balance
refusal, and 403 ``permission_error``.
"""

from __future__ import annotations

from typing import Any

from pairshift.sim.rules import Refusal
from pairshift.sim.wire import Failure, WireName


def _number(value: float | None) -> str:
    return f"{value:g}" if value is not None else "null"


def refusal_failure(wire: WireName, refusal: Refusal) -> Failure:
    """A snapshot's refusal worded the way the wire's provider words it (status, type, code, param)."""
    param = refusal.param or ""
    if refusal.kind == "context_length":
        if wire == "anthropic":
            text = f"prompt is too long: {refusal.tokens} tokens > {refusal.limit} maximum"
            return Failure("invalid_request", text)
        if wire == "responses":
            text = (
                "Your input exceeds the context window of this model. Please adjust your input and try again."
            )
            code, where = "context_length_exceeded", "input"
        else:
            text = (
                f"This model's maximum context length is {refusal.limit} tokens. However, your messages "
                f"resulted in {refusal.tokens} tokens. Please reduce the length of the messages."
            )
            code, where = "context_length_exceeded", "messages"
        return Failure("invalid_request", text, body=_openai_error(text, code, where))
    if wire == "anthropic":
        return Failure("invalid_request", f"`{param}` is deprecated for this model.")
    if refusal.kind == "fixed_value" and wire == "openai":
        text = (
            f"Unsupported value: '{param}' does not support {_number(refusal.value)} with this model. "
            "Only the default (1) value is supported."
        )
        return Failure("invalid_request", text, body=_openai_error(text, "unsupported_value", param))
    text = f"Unsupported parameter: '{param}' is not supported with this model."
    if param == "max_tokens":
        text += " Use 'max_completion_tokens' instead."
    return Failure("invalid_request", text, body=_openai_error(text, "unsupported_parameter", param))


def _openai_error(
    message: str, code: str | None, param: str | None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"message": message, "type": type_, "param": param, "code": code}


def quota_failure(wire: WireName) -> Failure:
    """An account out of credit: OpenAI's 429 insufficient_quota, Anthropic's 400 credit-balance refusal."""
    if wire == "anthropic":
        return Failure(
            "invalid_request",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to "
            "upgrade or purchase credits.",
        )
    text = (
        "You exceeded your current quota, please check your plan and billing details. For more information "
        "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
    )
    return Failure(
        "rate_limit",
        text,
        body=_openai_error(text, "insufficient_quota", None, type_="insufficient_quota"),
    )


def permission_failure(wire: WireName, model: str) -> Failure:
    """A key that may not use this model: 403 (Anthropic ``permission_error``)."""
    if wire == "anthropic":
        return Failure("permission", "Your API key does not have permission to use the specified resource.")
    text = f"Project `proj_sim` does not have access to model `{model}`"
    return Failure("permission", text, body=_openai_error(text, "model_not_found", None))
