"""The shadow stage's store side: its pairs' statistics for the gate, the pairwise judge round, retention.

A shadow stage (``{shadow: P}``) serves nobody from the candidate: routers mirror P% of units' control
requests to it (:mod:`pairshift.mirror`) and store each answered mirror as a ``shadow_pairs`` row. This module
reads those rows back: :func:`stage_pairs` gives the gate control's and the candidate's statistics over the
same mirrored inputs (``VariantStats`` of each arm, clustered by unit) and the pair scores' ``RatioSums``;
:func:`judge_pairs` has the canary's judge compare the two outputs of each unjudged pair in both orders
(position bias cancels: :mod:`pairshift.pairwise`), within the judge's daily cap.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from pairshift.registry.models import ShadowPair


def delete_older_than(session: Session, cutoff: datetime) -> int:
    """Delete shadow pairs stored before ``cutoff`` (retention); returns how many."""
    result = session.execute(delete(ShadowPair).where(ShadowPair.at < cutoff))  # type: ignore[arg-type]
    session.commit()
    return int(result.rowcount or 0)
