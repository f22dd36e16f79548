"""The typed errors of a model call, and how an HTTP error (status + the provider's error body) becomes one.

What a caller does with each (see :mod:`pairshift.evals.batches` and the preflight):

- retried by :func:`pairshift.providers.complete`: :class:`RateLimited` (429 rate limits),
  :class:`ProviderUnavailable` (5xx, 529, 408/409, connection errors) and :class:`ProviderTimeout`;
- fatal for an eval arm, never retried: :class:`ModelNotFound` (404/410), :class:`BadRequest` (400 and other
  4xx), :class:`AuthError` (401, a missing key), :class:`PermissionDenied` (403: the key is valid but may not
  use this model), :class:`QuotaExceeded` (429 ``insufficient_quota``: billing, not a burst);
- an error of the one case that caused it, the arm goes on: :class:`ContextLengthExceeded` (this case's
  input does not fit the model's context window).

A refused request names what was refused when the provider says it: ``error.param`` (OpenAI's ``param``, or
the parameter an Anthropic message names) and ``error.code`` (OpenAI's ``code``, Anthropic's ``type``).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any


class ProviderError(Exception):
    """A failed call. ``retryable`` says whether trying the same request again can help."""

    retryable: bool = False
    kind: str = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        model: str,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.status = status
        self.code = code
        self.param = param
        self.attempts = 1

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not pickle by default; Temporal and process pools pickle.
        return _rebuild_error, (type(self), self.message, self.model, self.status, self.__dict__)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, status={self.status!r}, message={self.message!r})"
        )


def _rebuild_error(
    cls: type[ProviderError], message: str, model: str, status: int | None, state: dict[str, Any]
) -> ProviderError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class RateLimited(ProviderError):
    """429: the provider's rate limit was hit; ``retry_after`` seconds is when to try again."""

    retryable = True
    kind = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        model: str,
        status: int | None = 429,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, model=model, status=status, code=code)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """5xx, 529 overloaded, 408/409 and connection errors: transient, retryable."""

    retryable = True
    kind = "unavailable"


class ProviderTimeout(ProviderUnavailable):
    """No answer within the model's ``timeout_s``. Retried, but sparingly: the provider may bill it."""

    kind = "timeout"


class ModelNotFound(ProviderError):
    """404/410: the model does not exist here or was retired. Never retried."""

    kind = "model_not_found"


class BadRequest(ProviderError):
    """400/413/422 and other 4xx: the request itself is wrong. Never retried."""

    kind = "bad_request"


class ContextLengthExceeded(ProviderError):
    """This case's input does not fit the model's context window: an error of that case, not of the arm."""

    kind = "context_length"


class AuthError(ProviderError):
    """401 or a missing API key: the credentials are wrong. Never retried."""

    kind = "auth"


class PermissionDenied(ProviderError):
    """403: the key is valid but may not use this model (organisation, region, tier). Never retried."""

    kind = "permission"


class QuotaExceeded(ProviderError):
    """429 ``insufficient_quota``: the account is out of credit; waiting does not help. Never retried."""

    kind = "insufficient_quota"


# Parameters a provider may name in a refusal whose body has no `param` (Anthropic's messages name them).
KNOWN_PARAMS = (
    "max_completion_tokens",
    "max_output_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stop",
    "seed",
    "response_format",
    "reasoning_effort",
    "thinking",
    "budget_tokens",
)
_PARAM_IN_MESSAGE = re.compile(r"[`'\"]?\b(" + "|".join(KNOWN_PARAMS) + r")\b[`'\"]?")
_CONTEXT_CODES = {"context_length_exceeded", "string_above_max_length"}
_CONTEXT_MESSAGE = re.compile(
    r"prompt is too long|maximum context length|context window|too many tokens", re.I
)
_CREDIT_MESSAGE = re.compile(r"credit balance is too low", re.I)


def refused_param(api_error: Mapping[str, Any]) -> str | None:
    """The parameter a refusal names: the body's ``param`` or, failing that, a known name in its message."""
    param = api_error.get("param")
    if isinstance(param, str) and param:
        return param
    found = _PARAM_IN_MESSAGE.search(str(api_error.get("message") or ""))
    return found.group(1) if found else None


def error_for_status(
    provider: str,
    model: str,
    status: int,
    headers: Mapping[str, str],
    api_error: Mapping[str, Any] | str | None,
) -> ProviderError:
    """Translate an HTTP error (status, headers, the body's error object) into the typed error.

    ``api_error`` is the body's ``error`` member (``{"message", "type", "code", "param"}``); a plain string is
    read as its message.
    """
    body: Mapping[str, Any] = {"message": api_error} if isinstance(api_error, str) else (api_error or {})
    message = body.get("message")
    code = body.get("code") or body.get("type")
    code = str(code) if code else None
    detail = f": {message}" if message else ""
    out_of_credit = status == 400 and _CREDIT_MESSAGE.search(str(message or ""))
    if out_of_credit or (
        status == 429 and "insufficient_quota" in (str(body.get("code")), str(body.get("type")))
    ):
        return QuotaExceeded(
            f"{provider} account is out of quota for model {model} "
            f"(HTTP {status} insufficient_quota){detail}; "
            "check the plan and billing - retrying does not help",
            model=model,
            status=status,
            code="insufficient_quota",
        )
    if status == 429:
        return RateLimited(
            f"{provider} rate limit hit for model {model}{detail}",
            model=model,
            retry_after=parse_retry_after(headers),
            code=code,
        )
    if status in (404, 410):
        return ModelNotFound(
            f"model {model} was not found at {provider} (HTTP {status}); it may be retired - "
            f"check its retirement date and replacement{detail}",
            model=model,
            status=status,
            code=code,
        )
    if status == 401:
        return AuthError(
            f"{provider} refused the credentials for model {model} (HTTP 401){detail}",
            model=model,
            status=status,
            code=code,
        )
    if status == 403:
        return PermissionDenied(
            f"{provider} denied permission to use model {model} (HTTP 403): the key is valid but may not "
            f"call this model{detail}",
            model=model,
            status=status,
            code=code,
        )
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(
            f"{provider} unavailable for model {model} (HTTP {status}){detail}",
            model=model,
            status=status,
            code=code,
        )
    if status in (400, 413) and (
        str(body.get("code")) in _CONTEXT_CODES or _CONTEXT_MESSAGE.search(str(message or ""))
    ):
        return ContextLengthExceeded(
            f"the input is longer than model {model}'s context window at {provider} (HTTP {status}){detail}",
            model=model,
            status=status,
            code=code,
        )
    return BadRequest(
        f"{provider} rejected the request for model {model} (HTTP {status}){detail}",
        model=model,
        status=status,
        code=code,
        param=refused_param(body),
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI, the sim) or ``retry-after`` (seconds or HTTP date)."""
    value_ms = headers.get("retry-after-ms")
    if value_ms:
        try:
            return max(0.0, float(value_ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # an unreadable header: fall back to exponential backoff
    return max(0.0, when.timestamp() - time.time())
