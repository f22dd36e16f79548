"""The SDK error translation both backends share (pairshift.providers._sdk), on each official SDK's own
errors."""

from __future__ import annotations

from types import ModuleType

import anthropic
import httpx
import openai
import pytest

from pairshift.providers import ModelNotFound, ModelSpec, ProviderUnavailable, RateLimited
from pairshift.providers._sdk import attempt, translate_error

SPEC = ModelSpec(id="m-1", provider="sim", timeout_s=7.0)
REQUEST = httpx.Request("POST", "http://127.0.0.1:9/v1/x")
# What each SDK hands over as ``body``: Anthropic the whole body, OpenAI the "error" member.
BODIES = {
    anthropic: {"type": "error", "error": {"type": "not_found_error", "message": "no such model m-1"}},
    openai: {"type": "invalid_request_error", "code": "model_not_found", "message": "no such model m-1"},
}


def status_error(
    sdk: ModuleType, status: int, body: object, headers: dict[str, str] | None = None
) -> Exception:
    response = httpx.Response(status, headers=headers or {}, request=REQUEST)
    return sdk.APIStatusError("HTTP error", response=response, body=body)


@pytest.mark.parametrize("sdk", [anthropic, openai], ids=lambda m: m.__name__)
def test_status_errors_are_typed_with_the_api_message(sdk: ModuleType) -> None:
    error = translate_error(sdk, SPEC, status_error(sdk, 404, BODIES[sdk]))
    assert isinstance(error, ModelNotFound) and error.status == 404
    assert str(error).startswith(f"model m-1 was not found at {sdk.__name__}") and "no such model m-1" in str(
        error
    )
    limited = translate_error(sdk, SPEC, status_error(sdk, 429, "not json", {"retry-after": "3"}))
    assert isinstance(limited, RateLimited) and limited.retry_after == 3.0


@pytest.mark.parametrize("sdk", [anthropic, openai], ids=lambda m: m.__name__)
def test_timeouts_and_connection_failures_are_unavailable(sdk: ModuleType) -> None:
    timeout = translate_error(sdk, SPEC, sdk.APITimeoutError(request=REQUEST))
    assert isinstance(timeout, ProviderUnavailable)
    assert str(timeout) == f"{sdk.__name__} timed out after 7.0s for model m-1"
    failed = translate_error(sdk, SPEC, sdk.APIConnectionError(request=REQUEST))
    assert str(failed) == f"{sdk.__name__} connection failed for model m-1: APIConnectionError"


@pytest.mark.parametrize("sdk", [anthropic, openai], ids=lambda m: m.__name__)
async def test_attempt_raises_the_typed_error_without_the_sdk_error_attached(sdk: ModuleType) -> None:
    async def failing() -> None:
        raise status_error(sdk, 404, BODIES[sdk])

    with pytest.raises(ModelNotFound) as info:
        await attempt(sdk, SPEC, failing())
    # The SDK error's request carries the API key in its headers: it must not travel as context or cause.
    assert info.value.__context__ is None and info.value.__cause__ is None


async def test_attempt_returns_the_response_and_its_latency() -> None:
    async def answer() -> str:
        return "ok"

    response, latency_ms = await attempt(openai, SPEC, answer())
    assert response == "ok" and latency_ms >= 0.0
