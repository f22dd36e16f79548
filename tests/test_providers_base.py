"""The provider layer's pure parts: error typing, retry-after parsing, the retry loop, cost."""

from __future__ import annotations

import email.utils
import pickle
import random
import time

import pytest
from pydantic import ValidationError

from pairshift.providers import (
    AuthError,
    BadRequest,
    CallParams,
    Completion,
    Message,
    ModelNotFound,
    ModelSpec,
    PermissionDenied,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    RetryPolicy,
    base,
    complete,
    cost_usd,
    errors,
)

SPEC = ModelSpec(id="m-1", provider="sim", input_per_mtok=3.0, output_per_mtok=15.0)
HI = [Message(role="user", content="hi")]


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (429, RateLimited, True),
        (500, ProviderUnavailable, True),
        (529, ProviderUnavailable, True),
        (503, ProviderUnavailable, True),
        (408, ProviderUnavailable, True),
        (404, ModelNotFound, False),
        (410, ModelNotFound, False),
        (400, BadRequest, False),
        (422, BadRequest, False),
        (401, AuthError, False),
        (403, PermissionDenied, False),
    ],
)
def test_statuses_map_to_typed_errors(status: int, kind: type[ProviderError], retryable: bool) -> None:
    error = errors.error_for_status("openai", "gpt-x", status, {"retry-after": "3"}, "boom")
    assert type(error) is kind and error.retryable is retryable and error.status == status
    assert "gpt-x" in str(error) and "boom" in str(error)


def test_not_found_says_the_model_may_be_retired() -> None:
    error = errors.error_for_status("anthropic", "claude-3-7-sonnet-20250219", 404, {}, None)
    assert "claude-3-7-sonnet-20250219" in str(error) and "retired" in str(error)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    assert errors.parse_retry_after(headers) == expected


def test_retry_after_as_http_date() -> None:
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (errors.parse_retry_after({"retry-after": later}) or 0) <= 31


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=5.0)
    rng, err = random.Random(1), ProviderUnavailable("x", model="m")
    delays = [policy.delay_s(attempt, err, rng) for attempt in (1, 2, 3, 4, 5)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert all(2.5 <= d <= 5.0 for d in delays[3:])
    assert 2.0 <= policy.delay_s(1, RateLimited("x", model="m", retry_after=2.0), rng) <= 2.2


class FakeBackend:
    """Fails with the given errors in order, then succeeds; counts calls."""

    def __init__(self, *errors: ProviderError) -> None:
        self.errors, self.calls = list(errors), 0

    async def __call__(
        self, spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
    ) -> Completion:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return Completion(
            text="ok",
            resolved_model=spec.id,
            input_tokens=1,
            output_tokens=1,
            latency_ms=1.0,
            cost_usd=0.0,
            finish_reason="stop",
        )


class Slept(list[float]):
    """The retry loop's sleeps, recorded instead of slept: pass ``sleep=slept.sleep`` to ``complete``.

    Handed to the call, never patched over ``asyncio.sleep``: that is global, and the sim server's uvicorn
    loop (another thread, ticking every 0.1 s) would spin through the fake and fill the list.
    """

    async def sleep(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def slept() -> Slept:
    return Slept()


def use(monkeypatch: pytest.MonkeyPatch, backend: FakeBackend) -> FakeBackend:
    monkeypatch.setattr(base, "_backend", lambda provider: backend)
    return backend


async def test_retry_loop_honours_retry_after(monkeypatch: pytest.MonkeyPatch, slept: Slept) -> None:
    backend = use(monkeypatch, FakeBackend(RateLimited("429", model="m", retry_after=7.0)))
    result = await complete(SPEC, None, HI, CallParams(), sleep=slept.sleep)
    assert (result.attempts, backend.calls) == (2, 2) and 7.0 <= slept[0] <= 7.7


async def test_retry_loop_is_bounded(monkeypatch: pytest.MonkeyPatch, slept: Slept) -> None:
    backend = use(monkeypatch, FakeBackend(*[ProviderUnavailable("503", model="m") for _ in range(9)]))
    with pytest.raises(ProviderUnavailable) as info:
        await complete(SPEC, None, HI, CallParams(), retry=RetryPolicy(max_attempts=4), sleep=slept.sleep)
    assert backend.calls == 4 and info.value.attempts == 4 and len(slept) == 3


@pytest.mark.parametrize(
    "error",
    [
        ModelNotFound("gone", model="m"),
        BadRequest("bad", model="m"),
        AuthError("no", model="m"),
        RateLimited("quota", model="m", retry_after=3600.0),
    ],
)
async def test_non_retryable_and_quota_errors_fail_at_once(
    monkeypatch: pytest.MonkeyPatch, slept: Slept, error: ProviderError
) -> None:
    backend = use(monkeypatch, FakeBackend(error))
    with pytest.raises(type(error)):
        await complete(SPEC, None, HI, CallParams(), sleep=slept.sleep)
    assert backend.calls == 1 and slept == []


def test_cost_from_price_per_million_tokens() -> None:
    assert cost_usd(SPEC, 1_000_000, 0) == 3.0
    assert cost_usd(SPEC, 1200, 300) == pytest.approx(0.0036 + 0.0045)


def test_errors_survive_pickling() -> None:
    error = RateLimited("slow down", model="m", retry_after=1.5)
    error.attempts = 3
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.model, copy.retry_after, copy.attempts) == (
        RateLimited,
        "slow down",
        "m",
        1.5,
        3,
    )


def test_model_spec_has_no_place_for_a_key() -> None:
    with pytest.raises(ValidationError):
        ModelSpec(id="m", provider="openai", api_key="sk-secret")  # type: ignore[call-arg]


def test_dummy_key_only_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = ModelSpec(id="m", provider="openai")
    assert base.resolve_api_key(spec, "OPENAI_API_KEY", "http://127.0.0.1:8787/v1") == "sk-local-dummy"
    with pytest.raises(AuthError, match="OPENAI_API_KEY"):
        base.resolve_api_key(spec, "OPENAI_API_KEY", None)
