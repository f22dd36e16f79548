"""The preflight of an eval: one call per distinct (prompt, model) of the plan before any batch is spent.

A model a migration moves to may refuse the calls the old pair made (a reasoning model refuses
``temperature: 0``, ``stop`` and ``max_tokens``; a newer Claude refuses ``temperature``), and a refused
request would fail its arm after a batch of calls. The preflight sends each fresh arm's (prompt, model)
request once, with the dataset's first case, exactly as the batches will send it (same rendering,
parameters and request rules), and the judge's request when the plan has a judge. A refusal (400, 401, 403,
404, an account out of quota) fails the eval at once with one line naming the model, the parameter or reason
from the provider's error body, and the config key that fixes it; the plan's fresh runs are marked failed
with that line. Transient failures are raised as they are: the activity is retried. A first case longer than
the model's context window is that case's error, not a refusal: the next case is tried.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pairshift.contracts.evals import EvalPlan, PreflightResult
from pairshift.evals.batches import call_limited, mark_failed
from pairshift.evals.planning import load_cases, model_spec
from pairshift.external import prompt_row, request_for
from pairshift.providers import (
    AuthError,
    CallParams,
    Completion,
    ContextLengthExceeded,
    Message,
    ModelNotFound,
    ModelSpec,
    PermissionDenied,
    ProviderError,
    QuotaExceeded,
)
from pairshift.registry.models import Model
from pairshift.registry.store import Registry
from pairshift.resolver import resolve_model
from pairshift.scorers.model_graded import rubric_prompt

CASES_TRIED = 3  # first cases tried when the earlier ones are longer than the model's context window
# Epochs are seeded 1, 2, ...: seed 0 keeps the preflight's request from being one an epoch will send, so the
# provider never sees an eval call twice (the batch's own call is the one that is stored).
JUDGE_PARAMS = CallParams(temperature=0, max_tokens=512)  # what the eval's judge sends (evals.batches)
_DROPPABLE = {"temperature", "top_p", "stop", "stop_sequences", "seed", "response_format", "reasoning_effort"}


class PreflightRefused(RuntimeError):
    """The provider refused a request the eval would send: the eval fails before any batch."""


@dataclass
class _Target:
    what: str  # "prompt support-triage@1" or "the judge"
    model: str
    spec: ModelSpec
    row: Model
    requests: list[tuple[str | None, str | list[Message], CallParams]]  # (system, user or turns, params)


def fix_for(err: ProviderError, model: str, prompt: str | None) -> str:
    """The config key that fixes a refusal, as an instruction."""
    param = err.param or ""
    where = f"the model's config (models: - id: {model})"
    if isinstance(err, QuotaExceeded):
        return "the provider account's billing (nothing in pairshift's config can fix it)"
    if isinstance(err, AuthError):
        return f"api_key_env in {where}: it must name an environment variable holding a valid key"
    if isinstance(err, PermissionDenied):
        return f"the key's access to {model} (api_key_env in {where} names the key), or another model"
    if isinstance(err, ModelNotFound):
        return f"the model id: {model} is unknown or retired at the provider (see its replacement)"
    if param == "max_tokens":
        return f"max_tokens_param: max_completion_tokens in {where}"
    if param in _DROPPABLE:
        name = "stop" if param == "stop_sequences" else param
        return f"drop_params: [{name}] in {where}" + (
            f", or remove {name} from {prompt}'s params" if prompt else ""
        )
    if param in ("thinking", "budget_tokens"):
        return f"thinking_budget in {prompt}'s params (this model does not take a budget)"
    return f"{prompt}'s params or {where}" if prompt else where


def refusal_line(err: ProviderError, target: _Target, prompt: str | None) -> str:
    """One line: which model refused what, the provider's words, and the key that fixes it."""
    status = f"HTTP {err.status}" if err.status else "before sending"
    code = f" {err.code}" if err.code else ""
    param = f" parameter `{err.param}`;" if err.param else ""
    return (
        f"preflight: model {target.model} refused {target.what}'s request ({status}{code}):{param} "
        f"{err.message} -> fix: {fix_for(err, target.model, prompt)}"
    )


def _targets(registry: Registry, plan: EvalPlan) -> list[_Target]:
    """Every distinct (prompt, model) of the fresh arms, then the judge, with their first cases' requests."""
    targets: list[_Target] = []
    with registry.session() as s:
        cases = load_cases(s, plan.dataset_version, 0, CASES_TRIED)
        seen: set[tuple[str, str]] = set()
        for arm in plan.arms:
            if arm.reused or (arm.prompt, arm.model) in seen:
                continue
            seen.add((arm.prompt, arm.model))
            prompt, resolved = prompt_row(s, arm.prompt), resolve_model(s, arm.model)
            row = resolved.row if resolved else None
            if prompt is None or row is None:
                raise PreflightRefused(f"preflight: {arm.prompt} or {arm.model} left the registry")
            requests = []
            for case in cases:  # as the batches build them (rendered, or an external case's own request)
                system, turns, params = request_for(prompt, case.vars)
                requests.append((system, turns, CallParams(**{**params, "seed": 0})))
            targets.append(
                _Target(f"prompt {prompt.id}", arm.model, model_spec(row, arm.model), row, requests)
            )
        judge_model = resolve_model(s, plan.judge) if plan.judge else None
        judge_row = judge_model.row if judge_model else None
        if plan.judge and judge_row is not None:
            request = (None, rubric_prompt("The output is a greeting.", "Hello!"), JUDGE_PARAMS)
            targets.append(
                _Target("the judge", plan.judge, model_spec(judge_row, plan.judge), judge_row, [request])
            )
    return targets


async def _first_answer(target: _Target) -> Completion | None:
    """The answer to the first request the model's context window admits (None: no case fits)."""
    for system, user, params in target.requests:
        try:
            return await call_limited(
                target.spec, target.row.limits, system, user, params, bucket=target.row.id
            )
        except ContextLengthExceeded:
            continue
    return None


async def preflight(registry: Registry, plan: EvalPlan) -> PreflightResult:
    """Send each target's request once; raise :class:`PreflightRefused` on the first refusal."""
    targets = await asyncio.to_thread(_targets, registry, plan)
    warnings: list[str] = []
    for target in targets:
        prompt = target.what.removeprefix("prompt ") if target.what.startswith("prompt ") else None
        try:
            done = await _first_answer(target)
        except ProviderError as err:
            if err.retryable and not isinstance(err, QuotaExceeded):
                raise  # transient: Temporal retries the preflight activity
            line = refusal_line(err, target, prompt)
            for arm in plan.arms:
                if not arm.reused:
                    await asyncio.to_thread(mark_failed, registry, arm.run_id, line)
            raise PreflightRefused(line) from None
        if done is None:
            warnings.append(f"preflight: none of the first cases fits model {target.model}'s context window")
        elif done.truncated:
            warnings.append(
                f"preflight: model {target.model} spent the whole max_tokens of {target.what} before writing "
                "any text; expect truncated cases (raise max_tokens or lower reasoning_effort)"
            )
        elif done.dropped_params:
            dropped = ", ".join(done.dropped_params)
            warnings.append(f"preflight: {target.what} on {target.model}: not sent (drop_params): {dropped}")
    return PreflightResult(
        calls=len(targets), checked=[f"{t.what} on {t.model}" for t in targets], warnings=warnings
    )
