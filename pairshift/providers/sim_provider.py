"""In-process ``sim`` backend: answers from :mod:`pairshift.sim.snapshots`, no network at all.

It reports the snapshot's simulated latency rather than sleeping it, so evals on the sim run at
CPU speed while latency gates still see snapshot-specific, deterministic numbers. Aliases are the
sim catalogue's (``sim-latest``); the fake HTTP server keeps its own, repointable ones.
"""

from __future__ import annotations

from pairshift.providers.base import CallParams, Completion, Message, ModelNotFound, ModelSpec, cost_usd
from pairshift.sim.snapshots import UnknownSnapshot, resolve, simulate


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
    out = simulate(snapshot, system, messages, params)
    return Completion(
        text=out.text,
        resolved_model=snapshot,
        input_tokens=out.input_tokens,
        output_tokens=out.output_tokens,
        latency_ms=out.latency_ms,
        cost_usd=cost_usd(spec, out.input_tokens, out.output_tokens),
        finish_reason="refusal"
        if out.finish_reason == "refusal"
        else "length"
        if out.finish_reason == "length"
        else "stop",
    )
