"""Model calls for pairshift: one async :func:`complete` over Anthropic, OpenAI(-compatible) and sim, and its
streaming twin :func:`stream` (:mod:`pairshift.providers.streaming`).

See :mod:`pairshift.providers.base` for where retries live, :mod:`pairshift.providers.errors` for how errors
are typed, :mod:`pairshift.providers.rules` for the request rules and :mod:`pairshift.providers.cost` for what
a call costs.
"""

from pairshift.providers.base import (
    CallParams,
    Completion,
    Message,
    ModelSpec,
    ProviderName,
    RetryPolicy,
    complete,
    reserved_param_problems,
)
from pairshift.providers.cost import cost_usd
from pairshift.providers.errors import (
    AuthError,
    BadRequest,
    ContextLengthExceeded,
    ModelNotFound,
    PermissionDenied,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)
from pairshift.providers.rules import RequestRules, outgoing, provider_problems
from pairshift.providers.streaming import StreamEvent, stream

__all__ = [
    "reserved_param_problems",
    "AuthError",
    "BadRequest",
    "CallParams",
    "Completion",
    "ContextLengthExceeded",
    "Message",
    "ModelNotFound",
    "ModelSpec",
    "PermissionDenied",
    "ProviderError",
    "ProviderName",
    "ProviderTimeout",
    "ProviderUnavailable",
    "QuotaExceeded",
    "RateLimited",
    "RequestRules",
    "RetryPolicy",
    "StreamEvent",
    "complete",
    "cost_usd",
    "outgoing",
    "provider_problems",
    "stream",
]
