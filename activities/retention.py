"""Retention: the activity folding old observations into daily rollups (pairshift.observations.retention)."""

from __future__ import annotations

from pairshift.contracts import implements
from pairshift.contracts import retention as contract
from pairshift.contracts.retention import RollUpOrder, RollupResult
from pairshift.observations.retention import cutoff_for, roll_up
from pairshift.registry import open_registry
from pairshift.settings import get_settings


@implements(contract.roll_up_observations)
def roll_up_observations(order: RollUpOrder) -> RollupResult:
    days = order.retention_days or get_settings().retention_days
    return roll_up(open_registry(), cutoff_for(order.now, days))


ALL = [roll_up_observations]
