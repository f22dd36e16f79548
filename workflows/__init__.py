"""Deterministic orchestration only: no I/O, no clocks, no randomness outside the Temporal API."""

from workflows.deprecation import AliasDriftWorkflow, DeprecationScanWorkflow
from workflows.eval import EvalWorkflow
from workflows.health import HealthWorkflow
from workflows.migration import MigrationWorkflow

ALL_WORKFLOWS: list[type] = [
    HealthWorkflow,
    EvalWorkflow,
    MigrationWorkflow,
    DeprecationScanWorkflow,
    AliasDriftWorkflow,
]
