"""Production telemetry: observations in, stored, and read back as aggregates (PRODUCT §2, §9).

- :mod:`~pairshift.observations.store`: :class:`ObservationIn` (the wire model of ``POST /v1/observations``),
  :func:`hash_unit` and :func:`store_batch`, which stores a whole batch or refuses it whole;
- :mod:`~pairshift.observations.writer`: :class:`ObservationWriter`, the bounded, batched, non-blocking path
  from the hot path to the store;
- :mod:`~pairshift.observations.aggregates`: :func:`stage_stats` (a canary stage's per-unit aggregates) for
  the canary gate, :func:`variant_stats` (the same from raw observations in a window) and
  :func:`window_aggregates` for charts.

Everything public is re-exported here: ``from pairshift.observations import X`` is the import to use.
"""

from pairshift.observations.aggregates import (
    VARIANTS,
    WindowAggregate,
    invalid_details,
    stage_stats,
    variant_stats,
    window_aggregates,
)
from pairshift.observations.store import (
    MAX_BATCH,
    MAX_ERRORS_REPORTED,
    BatchRejected,
    ItemError,
    ObservationBatch,
    ObservationIn,
    add_to_unit_aggregates,
    hash_unit,
    store_batch,
)
from pairshift.observations.writer import ObservationWriter

__all__ = [
    "MAX_BATCH",
    "MAX_ERRORS_REPORTED",
    "VARIANTS",
    "BatchRejected",
    "ItemError",
    "ObservationBatch",
    "ObservationIn",
    "ObservationWriter",
    "WindowAggregate",
    "add_to_unit_aggregates",
    "hash_unit",
    "invalid_details",
    "stage_stats",
    "store_batch",
    "variant_stats",
    "window_aggregates",
]
