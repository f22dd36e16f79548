"""In-process ``sim`` backend: answers from :mod:`pairshift.sim.snapshots`, no network at all.

It reports the snapshot's simulated latency rather than sleeping it, so evals on the sim run at
CPU speed while latency gates still see snapshot-specific, deterministic numbers. Aliases are the
sim catalogue's (``sim-latest``); the fake HTTP server keeps its own, repointable ones.

It is as strict as the fake server: a snapshot's request rules (:mod:`pairshift.sim.rules`) are checked on
what the call sends after the model's ``drop_params`` (the token limit goes in the model's
``max_tokens_param``, ``max_tokens`` by default), and a refusal is the typed error the OpenAI wire's
refusal would give, with the same message, code and ``param``.
"""

from __future__ import annotations

from pairshift.providers.base import CallParams, Completion, Message, ModelSpec
from pairshift.providers.cost import cost_usd
from pairshift.providers.errors import ModelNotFound, error_for_status
from pairshift.providers.rules import outgoing
from pairshift.sim.refusals import refusal_failure
from pairshift.sim.rules import Sent, check_request
from pairshift.sim.snapshots import UnknownSnapshot, count_input_tokens, resolve, simulate
from pairshift.sim.wire import error_body


def _sent(spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams) -> Sent:
    sampling: dict[str, float | bool] = {
        k: v for k, v in (("temperature", params.temperature), ("top_p", params.top_p)) if v is not None
    }
    if params.stop:
        sampling["stop"] = True
    return Sent(
        params=sampling,
        token_field=spec.max_tokens_param or "max_tokens",
        input_tokens=count_input_tokens(system, messages),
    )


async def call(
    spec: ModelSpec, system: str | None, messages: list[Message], params: CallParams
) -> Completion:
    """The sim snapshot's answer as a :class:`Completion`; unknown ids raise :class:`ModelNotFound`."""
    try:
        snapshot = resolve(spec.id)
    except UnknownSnapshot as exc:
        raise ModelNotFound(
            f"model {spec.id} was not found at sim; it may be retired - {exc}", model=spec.id, status=404
        ) from None
    sent, dropped = outgoing(spec, params)
    refusal = check_request(snapshot, _sent(spec, system, messages, sent))
    if refusal is not None:
        failure = refusal_failure("openai", refusal)
        status, body = error_body("openai", failure.kind, failure.message, failure.body)
        raise error_for_status("sim", spec.id, status, {}, body["error"])
    out = simulate(snapshot, system, messages, sent)
    finish = out.finish_reason if out.finish_reason in ("refusal", "length") else "stop"
    return Completion(
        text=out.text,
        resolved_model=snapshot,
        input_tokens=out.input_tokens,
        output_tokens=out.output_tokens,
        latency_ms=out.latency_ms,
        cost_usd=cost_usd(spec, out.input_tokens, out.output_tokens),
        finish_reason=finish,  # type: ignore[arg-type]
        reasoning_tokens=out.reasoning_tokens,
        dropped_params=dropped,
    )
