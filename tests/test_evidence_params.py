"""Issue 24, item 2: reserved prompt params are refused up front, and no bad input hangs an eval.

Old code: a prompt whose params held ``seed`` passed apply and planning, then every batch raised TypeError
(``CallParams(**params, seed=epoch)``) and the eval's activities retried without an attempt limit.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.worker import Replayer, Worker
from test_evals_support import eval_registry, write_config  # noqa: F401 - fixture

from activities.evals import EVAL_ACTIVITIES
from pairshift import evals
from pairshift.apply import apply_path
from pairshift.config import ConfigError
from pairshift.contracts.evals import BatchResult, BatchSpec, EvalRequest
from pairshift.registry.models import EvalRun, PromptVersion
from pairshift.registry.store import Registry
from workflows.evals import BOUNDED_RETRY_PATCH, EVAL_WORKFLOWS, EvalWorkflow


def _request(**kw) -> EvalRequest:
    return EvalRequest(deployment="support-triage", requested_by="test", **kw)


@pytest.mark.parametrize("key", ["seed", "model", "messages", "stream"])
def test_apply_refuses_a_reserved_param_naming_the_field(
    eval_registry: Registry,  # noqa: F811
    tmp_path: Path,
    key: str,
) -> None:
    path = write_config(tmp_path / "c")
    config = yaml.safe_load(path.read_text())
    config["prompts"].append({**config["prompts"][0], "version": "9", "params": {"max_tokens": 50, key: 1}})
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError, match=rf"prompt 'support-triage@9': params\.{key}: reserved"):
        apply_path(eval_registry, path, by="test")
    with eval_registry.session() as s:
        assert s.get(PromptVersion, "support-triage@9") is None


def _seeded_prompt(registry: Registry) -> None:
    """A prompt version with `seed` in its params, as a registry written before this check may hold one."""
    with registry.session() as s:
        base = s.get(PromptVersion, "support-triage@2")
        assert base is not None
        data = base.model_dump()
        data.update(id="support-triage@7", version="7", params={**base.params, "seed": 42})
        s.add(PromptVersion(**data))


def test_planning_refuses_a_stored_prompt_with_seed(eval_registry: Registry) -> None:  # noqa: F811
    _seeded_prompt(eval_registry)
    with pytest.raises(evals.EvalInputError, match=r"support-triage@7: params\.seed is reserved"):
        evals.plan_eval(
            eval_registry, _request(to_model="sim-classic-2024-06", to_prompt="support-triage@7"), "seeded"
        )


async def test_a_batch_of_a_seeded_prompt_sends_the_epoch_seed(eval_registry: Registry) -> None:  # noqa: F811
    """A run planned before the check: the batch no longer raises TypeError; the epoch is the seed."""
    _seeded_prompt(eval_registry)
    plan = evals.plan_eval(
        eval_registry, _request(to_model="sim-classic-2024-06", to_prompt="support-triage@2"), "before"
    )
    with eval_registry.session() as s:
        run = s.get(EvalRun, plan.arms[1].run_id)
        run.prompt, run.pair = "support-triage@7", "support-triage@7+sim-classic-2024-06"
        s.add(run)
    result = await evals.run_batch(eval_registry, BatchSpec(run_id=plan.arms[1].run_id, start=0, stop=2))
    assert result.calls == 4 and result.errors == 0


# ---------------------------------------------------------------- the workflow's retry policy

ATTEMPTS: list[int] = []


@activity.defn(name="run_eval_batch")
async def batch_raising_type_error(batch: BatchSpec) -> BatchResult:
    ATTEMPTS.append(activity.info().attempt)
    raise TypeError("CallParams() got multiple values for keyword argument 'seed'")


@activity.defn(name="run_eval_batch")
async def batch_always_failing(batch: BatchSpec) -> BatchResult:
    ATTEMPTS.append(activity.info().attempt)
    raise RuntimeError("the registry is down")


async def _run(env, activity_fn) -> tuple[BaseException, object]:
    ATTEMPTS.clear()
    queue = f"evidence-{uuid.uuid4().hex[:8]}"
    others = [a for a in EVAL_ACTIVITIES if a.__name__ != "run_eval_batch"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=EVAL_WORKFLOWS,
            activities=[*others, activity_fn],
            activity_executor=pool,
        ):
            handle = await env.client.start_workflow(
                EvalWorkflow.run,
                _request(to_model="sim-fresh-2025-09"),
                id=f"eval-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
                execution_timeout=timedelta(hours=6),  # old code retried forever: it ends in a timeout
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()
            history = await handle.fetch_history()
    return failed.value, history


async def test_a_batch_that_fails_with_a_bug_fails_the_eval_at_once(
    time_skipping_env,
    eval_registry: Registry,  # noqa: F811
) -> None:
    failure, history = await _run(time_skipping_env, batch_raising_type_error)
    assert failure.cause.type == "TypeError" and "seed" in failure.cause.message
    assert set(ATTEMPTS) == {1}  # one attempt per batch: never retried
    markers = [e for e in history.events if e.marker_recorded_event_attributes.marker_name == "core_patch"]
    assert markers, "the bounded retry policy is versioned by a patch marker"
    replayer = Replayer(workflows=EVAL_WORKFLOWS, data_converter=time_skipping_env.client.data_converter)
    await replayer.replay_workflow(history)  # the patched branch replays its own history


async def test_a_batch_that_always_fails_is_retried_a_bounded_number_of_times(
    time_skipping_env,
    eval_registry: Registry,  # noqa: F811
) -> None:
    failure, _ = await _run(time_skipping_env, batch_always_failing)
    assert "the registry is down" in failure.cause.message
    assert max(ATTEMPTS) == 30


def test_the_patch_id_is_stable() -> None:
    assert BOUNDED_RETRY_PATCH == "eval-bounded-retries"
