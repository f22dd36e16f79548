"""The eval engine's domain side (no Temporal): plan the arms, run batches of calls, summarise, report.

An eval compares a deployment's active pair (baseline) with a target pair on the deployment's golden
dataset, as the 2x2 factorial of PRODUCT §1/§6. The activities in ``activities/evals.py`` are thin wrappers
around the functions here, in three modules:

- :mod:`~pairshift.evals.planning`: :func:`plan_eval` validates the request, picks the arms (only those that
  differ from baseline), reuses a recent identical baseline run, takes the policy's judge and creates the
  ``EvalRun`` rows;
- :mod:`~pairshift.evals.batches`: :func:`run_batch` runs the (case, epoch) calls of a case index range that
  are not stored yet (render, response cache, rate-limited provider call, score, insert-if-absent), and says
  where retries live;
- :mod:`~pairshift.evals.results`: :func:`summarize_run` and :func:`build_report` turn stored results into
  statistics and the report.

Everything public is re-exported here, so ``from pairshift.evals import X`` is the import to use. Patch a
module constant (``CALL_RETRY``) on its own module, :mod:`pairshift.evals.batches`: it is not re-exported,
so a patch on the package fails instead of silently changing nothing.
"""

from pairshift.contracts.evals import (
    ArmPlan,
    BatchResult,
    BatchSpec,
    EvalPlan,
    EvalRequest,
    EvalTuning,
    RunSummary,
)
from pairshift.evals.batches import (
    FATAL_ERRORS,
    RATE_LIMIT_RETRIES,
    JudgeFailed,
    JudgeRefused,
    ProviderOutage,
    cache_key,
    call_limited,
    mark_failed,
    run_batch,
)
from pairshift.evals.planning import (
    BASELINE_MAX_AGE,
    ArmFailed,
    EvalInputError,
    load_cases,
    model_family,
    model_spec,
    plan_eval,
    reusable_baseline,
    run_id_for,
    validate_request,
)
from pairshift.evals.results import (
    REPORT_KEY,
    build_report,
    flipped_outputs,
    load_arm,
    load_outcomes,
    load_report,
    summarize_run,
)

# Callers (tests, benchmarks) build an eval's retry policy through this namespace.
from pairshift.providers import RetryPolicy
from pairshift.ratelimit import batch_ranges

__all__ = [
    "JudgeFailed",
    "JudgeRefused",
    "ProviderOutage",
    "BASELINE_MAX_AGE",
    "FATAL_ERRORS",
    "RATE_LIMIT_RETRIES",
    "REPORT_KEY",
    "ArmFailed",
    "ArmPlan",
    "BatchResult",
    "BatchSpec",
    "EvalInputError",
    "EvalPlan",
    "EvalRequest",
    "EvalTuning",
    "RetryPolicy",
    "RunSummary",
    "batch_ranges",
    "build_report",
    "cache_key",
    "call_limited",
    "flipped_outputs",
    "load_arm",
    "load_cases",
    "load_outcomes",
    "load_report",
    "mark_failed",
    "model_family",
    "model_spec",
    "plan_eval",
    "reusable_baseline",
    "run_batch",
    "run_id_for",
    "summarize_run",
    "validate_request",
]
