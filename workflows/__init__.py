"""Deterministic orchestration only: no I/O, no clocks, no randomness outside the Temporal API."""

from workflows.alias_drift import AliasDriftWorkflow
from workflows.deprecation_scan import DeprecationScanWorkflow
from workflows.evals import EvalWorkflow, ProviderBatchWorkflow
from workflows.health import HealthWorkflow
from workflows.migration import MigrationWorkflow
from workflows.notice_delivery import NoticeDeliveryWorkflow
from workflows.retention import RetentionWorkflow
from workflows.stage_watch import StageWatchWorkflow

ALL_WORKFLOWS: list[type] = [
    HealthWorkflow,
    EvalWorkflow,
    ProviderBatchWorkflow,
    MigrationWorkflow,
    DeprecationScanWorkflow,
    AliasDriftWorkflow,
    RetentionWorkflow,
    StageWatchWorkflow,
    NoticeDeliveryWorkflow,
]
