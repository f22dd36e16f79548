"""Every side effect of the workflows: registry reads and writes, provider calls, notices."""

from activities.alias_drift import ALL as ALIAS_DRIFT_ACTIVITIES
from activities.deprecation_scan import ALL as DEPRECATION_SCAN_ACTIVITIES
from activities.evals import EVAL_ACTIVITIES
from activities.health import registry_health
from activities.migration import ALL as MIGRATION_ACTIVITIES
from activities.notices import post_slack_notice, send_notice
from activities.retention import ALL as RETENTION_ACTIVITIES

ALL_ACTIVITIES: list = [
    registry_health,
    *EVAL_ACTIVITIES,
    *MIGRATION_ACTIVITIES,
    send_notice,
    post_slack_notice,
    *DEPRECATION_SCAN_ACTIVITIES,
    *ALIAS_DRIFT_ACTIVITIES,
    *RETENTION_ACTIVITIES,
]
