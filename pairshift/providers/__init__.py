"""Model calls for pairshift: one async :func:`complete` over Anthropic, OpenAI(-compatible) and sim.

See :mod:`pairshift.providers.base` for where retries live and how errors are typed.
"""

from pairshift.providers.base import (
    AuthError,
    BadRequest,
    CallParams,
    Completion,
    Message,
    ModelNotFound,
    ModelSpec,
    ProviderError,
    ProviderName,
    ProviderUnavailable,
    RateLimited,
    RetryPolicy,
    complete,
    cost_usd,
)

__all__ = [
    "AuthError",
    "BadRequest",
    "CallParams",
    "Completion",
    "Message",
    "ModelNotFound",
    "ModelSpec",
    "ProviderError",
    "ProviderName",
    "ProviderUnavailable",
    "RateLimited",
    "RetryPolicy",
    "complete",
    "cost_usd",
]
