"""Activities of AliasDriftWorkflow: find the deployments on an alias, probe it, record a move.

Thin and idempotent: the decisions are :mod:`pairshift.deprecation_plan`'s (pure). A retried activity never
records a ledger row twice.
"""

from __future__ import annotations

from sqlmodel import Session, select

from pairshift import ledger
from pairshift.contracts import alias_drift as contract
from pairshift.contracts import implements
from pairshift.contracts.alias_drift import AliasQuery, AliasTarget, Drift, DriftRecord, ProbeResult
from pairshift.deprecation_plan import alias_targets
from pairshift.providers import CallParams, Message, ModelSpec, ProviderError, RetryPolicy, complete
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, LedgerEntry, Model, Observation, utcnow
from pairshift.resolver import deployment_policy

PROBE_RETRY = RetryPolicy(max_attempts=3, max_retry_after_s=30.0)


@implements(contract.find_alias_targets)
def find_alias_targets(q: AliasQuery) -> list[AliasTarget]:
    """The deployments configured with an alias and the snapshot each was last known to resolve to."""
    with open_registry().session() as s:
        targets = alias_targets(
            s.exec(select(Deployment)).all(), s.exec(select(Model)).all(), only=q.deployment
        )
        for t in targets:
            dep = s.get(Deployment, t.deployment)
            t.channel = deployment_policy(s, dep).notice.slack_channel if dep else None
            t.observed_snapshot = s.exec(
                select(Observation.resolved_model)
                .where(
                    Observation.deployment == t.deployment,
                    Observation.resolved_model.is_not(None),
                    Observation.pair.endswith(f"+{t.alias}"),
                )
                .order_by(Observation.at.desc())
                .limit(1)
            ).first()
        return targets


@implements(contract.probe_alias)
async def probe_alias(t: AliasTarget) -> ProbeResult:
    """One cheap call (max_tokens=1) to the alias: the response's ``model`` is what it resolves to now."""
    with open_registry().session() as s:
        row = s.get(Model, t.spec_from)
        if row is None:
            return ProbeResult(
                deployment=t.deployment, alias=t.alias, error=f"model {t.spec_from} left the registry"
            )
        spec = ModelSpec.from_model(row, id=t.alias, timeout_s=30.0)
    try:
        done = await complete(
            spec, None, [Message(role="user", content="ping")], CallParams(max_tokens=1), retry=PROBE_RETRY
        )
    except ProviderError as exc:  # a failed probe is reported, not retried by Temporal on top of complete()
        return ProbeResult(
            deployment=t.deployment, alias=t.alias, error=f"probe of {t.alias} failed: {exc.message}"
        )
    return ProbeResult(deployment=t.deployment, alias=t.alias, resolved=done.resolved_model)


@implements(contract.ensure_snapshot_row)
def ensure_snapshot_row(d: Drift) -> bool:
    """The new snapshot as a model row (provider settings of the alias's row) so it can be evaluated."""
    with open_registry().session() as s:
        if s.get(Model, d.to_snapshot) is not None:
            return False
        base = s.get(Model, d.spec_from)
        assert base is not None
        s.add(
            Model(
                id=d.to_snapshot,
                provider=base.provider,
                base_url=base.base_url,
                api_key_env=base.api_key_env,
                input_per_mtok=base.input_per_mtok,
                output_per_mtok=base.output_per_mtok,
                limits=dict(base.limits or {}),
                source="observed",
            )
        )
        return True


@implements(contract.record_alias_drift)
def record_alias_drift(rec: DriftRecord) -> bool:
    """In one transaction: the alias row's resolved snapshot, and the ledger row with the eval's evidence."""
    d = rec.drift
    with open_registry().session() as s:
        _point_alias(s, d)
        dup = s.exec(
            select(LedgerEntry).where(
                LedgerEntry.deployment == d.deployment, LedgerEntry.reason == "alias-drift"
            )
        ).all()
        if any(e.evidence.get("_key") == d.key for e in dup):
            return False
        dep = s.get(Deployment, d.deployment)
        ledger.append(
            s,
            deployment=d.deployment,
            prompt=dep.active_prompt if dep else d.prompt,
            model=d.alias,
            by="pairshift-alias-drift",
            reason="alias-drift",
            migration=None,
            at=d.detected_at,
            evidence={
                "note": d.note,
                "alias": d.alias,
                "from": d.from_snapshot,
                "to": d.to_snapshot,
                "seen_via": d.seen_via,
                "eval_report": rec.report_id,
                "eval_gate": rec.gate,
                "eval_error": rec.eval_error,
                "_key": d.key,
            },
        )
        return True


def _point_alias(s: Session, d: Drift) -> None:
    row = s.get(Model, d.alias)
    if row is None:  # the alias was only known from a snapshot's aliases list: it gets its own row now
        base = s.get(Model, d.spec_from)
        assert base is not None
        row = Model(
            id=d.alias,
            provider=base.provider,
            base_url=base.base_url,
            api_key_env=base.api_key_env,
            input_per_mtok=base.input_per_mtok,
            output_per_mtok=base.output_per_mtok,
            limits=dict(base.limits or {}),
            is_alias=True,
            source="observed",
        )
    row.resolved_snapshot, row.updated_at = d.to_snapshot, utcnow()
    s.add(row)


ALL = [
    find_alias_targets,
    probe_alias,
    ensure_snapshot_row,
    record_alias_drift,
]
