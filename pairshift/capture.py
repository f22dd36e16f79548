"""Golden cases from production traffic: ``pairshift datasets capture DEPLOYMENT --sample RATE --max N``.

:func:`start_capture` writes a ``captures`` row; every router of the deployment (the app's, the API's) sees it
at its next refresh and, while it is ``capturing``, samples ``RATE`` of the control pair's successful calls:
the request (the variables, or the app's own messages for a ``prompt: external`` deployment) with the
control's output as the reference. Each sample is redacted (:func:`redact`: the deployment's ``redact:``
regexes and the built-in :data:`DEFAULT_PATTERNS` for keys, bearer tokens and emails) *before* it is queued,
so nothing unredacted is ever stored; the router writes its queue on its refresh thread, off the hot path.
:func:`finish_capture` turns the first ``max`` samples into a new version of the dataset
``<deployment>-captured`` (or the name given): cases whose assertion is lexical similarity to the reference,
plus ``is-json`` when the reference is JSON. An eval of a candidate on it is the model-only eval against
what the control answered in production.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from pairshift.datasets.cases import build_case, dataset_hash
from pairshift.registry.datasets import move_head, store_version
from pairshift.registry.models import (
    Capture,
    CapturedCase,
    DatasetVersion,
    Deployment,
    utcnow,
)

REDACTED = "[REDACTED]"
# What must never be stored whatever the config says: provider and pairshift keys, bearer tokens, emails.
DEFAULT_PATTERNS: tuple[str, ...] = (
    r"\b(?:sk|pk|rk|ps)[-_][A-Za-z0-9_-]{16,}",
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}",
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
)
SIMILARITY = 0.6  # the captured cases' pass bar: lexical similarity to the control's output


class CaptureError(ValueError):
    """A capture that cannot start or finish; nothing was changed."""


def compile_patterns(patterns: Iterable[str]) -> list[re.Pattern[str]]:
    """The deployment's patterns and the defaults, compiled; a bad regex is a :class:`CaptureError`."""
    out = []
    for p in [*DEFAULT_PATTERNS, *patterns]:
        try:
            out.append(re.compile(p))
        except re.error as exc:
            raise CaptureError(f"redact pattern {p!r} is not a valid regex: {exc}") from None
    return out


def redact(value: Any, patterns: Sequence[re.Pattern[str]]) -> Any:
    """``value`` with every match of every pattern replaced by ``[REDACTED]``, in every string it holds."""
    if isinstance(value, str):
        for p in patterns:
            value = p.sub(REDACTED, value)
        return value
    if isinstance(value, Mapping):
        return {redact(k, patterns): redact(v, patterns) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, patterns) for v in value]
    return value


@dataclass(frozen=True)
class LiveCapture:
    """What a router needs to sample: the capture's id, its rate and its compiled patterns."""

    id: str
    rate: float
    patterns: tuple[re.Pattern[str], ...]

    def sample(self, rng: random.Random) -> bool:
        return rng.random() < self.rate

    def case(self, request: Mapping[str, Any], reference: str) -> dict[str, Any]:
        """A redacted sample: ``request`` holds ``vars`` or ``messages`` (and ``system``)."""
        return redact({**request, "reference": reference}, self.patterns)


def live_capture(s: Session, deployment: Deployment) -> LiveCapture | None:
    """The deployment's running capture, if any (the router loads it with the split)."""
    row = s.scalars(
        select(Capture).where(Capture.deployment == deployment.name, Capture.status == "capturing")
    ).first()
    if row is None:
        return None
    return LiveCapture(row.id, row.sample_rate, tuple(compile_patterns(row.redact or [])))


def start_capture(s: Session, deployment: str, *, rate: float, max_cases: int, by: str) -> Capture:
    """Start capturing ``deployment`` (one capture at a time); its routers see it at their next refresh."""
    dep = s.get(Deployment, deployment)
    if dep is None:
        raise CaptureError(f"unknown deployment {deployment!r} (see `pairshift get deployments`)")
    if not 0 < rate <= 1:
        raise CaptureError(f"--sample {rate}: a share of requests, in (0, 1]")
    if max_cases < 1:
        raise CaptureError(f"--max {max_cases}: at least one case")
    running = s.scalars(
        select(Capture).where(Capture.deployment == deployment, Capture.status == "capturing")
    )
    if running.first() is not None:
        raise CaptureError(f"deployment {deployment} is already being captured; finish that one first")
    compile_patterns(dep.redact or [])  # refused now rather than in every router
    row = Capture(
        id=f"capture-{deployment}-{uuid.uuid4().hex[:8]}",
        deployment=deployment,
        sample_rate=rate,
        max_cases=max_cases,
        redact=list(dep.redact or []),
        created_by=by,
    )
    s.add(row)
    return row


def captured(s: Session, capture_id: str) -> int:
    """Samples stored so far."""
    return int(s.scalar(select(func.count()).where(CapturedCase.capture == capture_id)) or 0)


def store_samples(s: Session, capture_id: str, samples: Sequence[Mapping[str, Any]]) -> None:
    """Store redacted samples (the router's refresh thread calls this)."""
    for sample in samples:
        s.add(CapturedCase(capture=capture_id, data=dict(sample)))


def finish_capture(s: Session, capture_id: str, dataset: str | None = None) -> DatasetVersion:
    """Stop the capture and write its first ``max`` samples as a new version of the dataset."""
    row = s.get(Capture, capture_id)
    if row is None:
        raise CaptureError(f"unknown capture {capture_id!r}")
    samples = list(
        s.scalars(
            select(CapturedCase)
            .where(CapturedCase.capture == capture_id)
            .order_by(CapturedCase.id)
            .limit(row.max_cases)
        )
    )
    row.status, row.finished_at = "done", utcnow()
    s.add(row)
    if not samples:
        row.status = "stopped"
        raise CaptureError(
            f"capture {capture_id} recorded no request: was there traffic on the control pair?"
        )
    name = dataset or f"{row.deployment}-captured"
    cases = [_case(i, sample.data) for i, sample in enumerate(samples)]
    digest = dataset_hash(cases)
    version_id = store_version(
        s,
        name=name,
        version=digest[:12],
        digest=digest,
        cases=cases,
        source=f"captured from {row.deployment} ({capture_id})",
    )
    move_head(s, name, version_id)
    row.dataset_version = version_id
    s.flush()
    result = s.get(DatasetVersion, version_id)
    assert result is not None
    return result


def _case(i: int, data: Mapping[str, Any]) -> Any:
    reference = str(data.get("reference", ""))
    variables = dict(data["vars"]) if "vars" in data else {"messages": data.get("messages", [])}
    for key in ("system", "params"):  # a gateway request's system text and call parameters
        if key in data:
            variables[key] = data[key]
    asserts: list[dict[str, Any]] = [{"type": "similar", "value": [reference], "threshold": SIMILARITY}]
    try:
        json.loads(reference)
    except ValueError:
        pass
    else:
        asserts.append({"type": "is-json"})
    raw = {"id": f"captured-{i + 1}", "vars": variables, "expected": reference, "assert": asserts}
    return build_case(raw, "captured traffic")
