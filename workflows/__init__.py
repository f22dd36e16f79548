"""Deterministic orchestration only: no I/O, no clocks, no randomness outside the Temporal API."""

from workflows.health import HealthWorkflow

ALL_WORKFLOWS: list[type] = [HealthWorkflow]
