"""Where retries live, per model: the model's ``max_attempts`` is the retry budget, a timed-out call is sent
at most twice (the provider may bill it), and refusals that waiting cannot fix are never retried."""

from __future__ import annotations

import pytest

from pairshift.providers import (
    CallParams,
    Completion,
    ContextLengthExceeded,
    Message,
    ModelSpec,
    PermissionDenied,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RetryPolicy,
    base,
    complete,
)

HI = [Message(role="user", content="hi")]
NO_WAIT = RetryPolicy(max_attempts=4, initial_backoff_s=0.0, max_backoff_s=0.0)


class Failing:
    """A backend failing with ``error`` every time, counting its calls."""

    def __init__(self, error: ProviderError) -> None:
        self.error, self.calls = error, 0

    async def __call__(self, spec, system, messages, params) -> Completion:  # noqa: ANN001
        self.calls += 1
        raise self.error


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch):
    def use(error: ProviderError) -> Failing:
        failing = Failing(error)
        monkeypatch.setattr(base, "_backend", lambda provider: failing)
        return failing

    return use


async def test_the_model_s_max_attempts_is_its_retry_budget(backend) -> None:
    failing = backend(ProviderUnavailable("503", model="m"))
    with pytest.raises(ProviderUnavailable) as info:
        await complete(
            ModelSpec(id="m", provider="sim", max_attempts=2), None, HI, CallParams(), retry=NO_WAIT
        )
    assert failing.calls == info.value.attempts == 2
    failing = backend(ProviderUnavailable("503", model="m"))
    with pytest.raises(ProviderUnavailable):
        await complete(ModelSpec(id="m", provider="sim"), None, HI, CallParams(), retry=NO_WAIT)
    assert failing.calls == 4  # no budget on the model: the caller's policy


async def test_a_timed_out_call_is_sent_at_most_twice(backend) -> None:
    failing = backend(ProviderTimeout("timed out after 60s", model="m"))
    with pytest.raises(ProviderTimeout):
        await complete(
            ModelSpec(id="m", provider="sim", max_attempts=5), None, HI, CallParams(), retry=NO_WAIT
        )
    assert failing.calls == 2


@pytest.mark.parametrize(
    "error",
    [
        QuotaExceeded("out of credit", model="m", status=429),
        PermissionDenied("403", model="m", status=403),
        ContextLengthExceeded("too long", model="m", status=400),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_refusals_waiting_cannot_fix_are_sent_once(backend, error: ProviderError) -> None:
    failing = backend(error)
    with pytest.raises(type(error)):
        await complete(ModelSpec(id="m", provider="sim"), None, HI, CallParams(), retry=NO_WAIT)
    assert failing.calls == 1
