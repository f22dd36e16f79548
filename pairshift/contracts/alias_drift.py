"""AliasDriftWorkflow's boundary: its request and result, what a probe finds, and its activities."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from temporalio import activity


class AliasDriftRequest(BaseModel):
    """AliasDriftWorkflow's input (the Schedule sends ``{}``)."""

    deployment: str | None = Field(
        None, description="Only this deployment; None = every deployment on an alias."
    )


class DriftOutcome(BaseModel):
    """One alias move and what its eval found."""

    deployment: str
    alias: str
    from_snapshot: str | None
    to_snapshot: str
    note: str
    report_id: str | None = None
    gate: str | None = None
    eval_error: str | None = None


class AliasDriftResult(BaseModel):
    """What one run probed and found."""

    checked: list[str] = Field(default_factory=list, description="Deployments on an alias that were probed.")
    drifted: list[DriftOutcome] = Field(default_factory=list)
    probe_errors: dict[str, str] = Field(default_factory=dict)


class AliasTarget(BaseModel):
    """A deployment configured with an alias, and what the registry believes the alias resolves to."""

    deployment: str
    prompt: str
    alias: str
    known_snapshot: str | None = Field(
        description="Last seen resolution (alias row), else the config's view."
    )
    spec_from: str = Field(description="The model row whose provider settings a probe call uses.")
    channel: str | None = Field(
        None, description="Slack channel of the deployment's policy (filled on load)."
    )
    observed_snapshot: str | None = Field(
        None,
        description="The snapshot the latest production call on the alias was answered by (observations).",
    )


# ---------------------------------------------------------------- activities


class AliasQuery(BaseModel):
    """``find_alias_targets``'s input: one deployment, or every one on an alias."""

    deployment: str | None = None


class ProbeResult(BaseModel):
    """What a probe call's response said the alias resolves to (or why it failed)."""

    deployment: str
    alias: str
    resolved: str | None = None
    error: str | None = None


class Drift(BaseModel):
    """An alias seen answering as another snapshot than the registry last recorded."""

    deployment: str
    prompt: str
    alias: str
    from_snapshot: str | None
    to_snapshot: str
    spec_from: str
    channel: str | None = None
    seen_via: str = "probe"
    detected_at: datetime

    @property
    def note(self) -> str:
        """One line for people: which alias moved from what to what, and when."""
        return (
            f"alias {self.alias} moved from {self.from_snapshot or 'an unrecorded snapshot'} to "
            f"{self.to_snapshot} on {self.detected_at.date().isoformat()}"
        )

    @property
    def key(self) -> str:
        """Identifies this move, so the ledger records it once."""
        return f"{self.alias}:{self.from_snapshot}->{self.to_snapshot}"


class DriftRecord(BaseModel):
    """``record_alias_drift``'s input: the drift and the eval of the new snapshot."""

    drift: Drift
    report_id: str | None = None
    gate: str | None = None
    eval_error: str | None = None


@activity.defn
def find_alias_targets(q: AliasQuery) -> list[AliasTarget]:
    """The deployments configured with an alias and the snapshot each was last known to resolve to."""
    raise NotImplementedError


@activity.defn
async def probe_alias(t: AliasTarget) -> ProbeResult:
    """One cheap call (max_tokens=1) to the alias: the response's ``model`` is what it resolves to now."""
    raise NotImplementedError


@activity.defn
def ensure_snapshot_row(d: Drift) -> bool:
    """The new snapshot as a model row (provider settings of the alias's row) so it can be evaluated."""
    raise NotImplementedError


@activity.defn
def record_alias_drift(rec: DriftRecord) -> bool:
    """In one transaction: the alias row's resolved snapshot, and the ledger row with the eval's evidence."""
    raise NotImplementedError
