"""The registry's tables (SQLModel). Schema changes go through Alembic (``pairshift/registry/schema``).

Immutable things (prompt versions, dataset versions, eval results, ledger rows, audit events, observations)
are only ever inserted. Mutable things (models, policies, deployments, migrations) carry ``updated_at``.
JSON columns hold structured values the registry does not query by (aliases, params, evidence).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from pairshift.contracts.migration import pair_id


def utcnow() -> datetime:
    """Now, timezone-aware UTC (every stored time is UTC)."""
    return datetime.now(UTC)


def _json(**kw: Any) -> Any:
    return Field(sa_column=Column(JSON, nullable=kw.pop("nullable", False)), **kw)


class Model(SQLModel, table=True):
    """A model snapshot, or an alias a provider may repoint (flagged unpinned)."""

    __tablename__ = "models"
    id: str = Field(primary_key=True)
    provider: str
    aliases: list[str] = _json(default_factory=list)
    is_alias: bool = False
    resolved_snapshot: str | None = None  # last snapshot an alias was seen to resolve to
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float | None = None  # None: 0.1x input (Anthropic) or the input price
    batch_input_per_mtok: float | None = None  # None: half the input price
    batch_output_per_mtok: float | None = None  # None: half the output price
    deprecated_on: date | None = None
    retires_on: date | None = None
    replacement: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None  # the secret's NAME, never the secret
    limits: dict[str, Any] = _json(default_factory=dict)
    # What config said of the model's request rules (pairshift.providers.rules.RequestRules, unset fields left
    # out); the calendar's family rules fill the rest when a call is made.
    request_rules: dict[str, Any] | None = _json(default_factory=dict, nullable=True)
    source: str = "config"  # config | calendar
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class PromptVersion(SQLModel, table=True):
    """An immutable ``name@version``; a changed text under an existing version is refused."""

    __tablename__ = "prompt_versions"
    id: str = Field(primary_key=True)  # name@version
    name: str = Field(index=True)
    version: str
    system: str | None = None
    template: str
    variables: list[str] = _json(default_factory=list)
    params: dict[str, Any] = _json(default_factory=dict)
    content_hash: str
    created_at: datetime = Field(default_factory=utcnow)


class Dataset(SQLModel, table=True):
    """A named golden dataset; ``current_version`` is the version new evals use."""

    __tablename__ = "datasets"
    name: str = Field(primary_key=True)
    current_version: str  # DatasetVersion.id
    updated_at: datetime = Field(default_factory=utcnow)


class DatasetVersion(SQLModel, table=True):
    """One immutable version of a golden dataset: its content hash and size."""

    __tablename__ = "dataset_versions"
    id: str = Field(primary_key=True)  # name@version (version defaults to the hash prefix)
    name: str = Field(index=True)
    version: str
    content_hash: str
    n_cases: int
    source: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class DatasetCase(SQLModel, table=True):
    """One case of a dataset version, in order (``idx``), as :class:`pairshift.datasets.Case` dumps it."""

    __tablename__ = "dataset_cases"
    dataset_version: str = Field(primary_key=True, foreign_key="dataset_versions.id")
    idx: int = Field(primary_key=True)
    case_id: str
    data: dict[str, Any] = _json()  # the case as pairshift.datasets.Case dumps it


class PolicyRow(SQLModel, table=True):
    """A named migration policy as applied (its spec validates as :class:`pairshift.policy.Policy`)."""

    __tablename__ = "policies"
    name: str = Field(primary_key=True)
    spec: dict[str, Any] = _json()  # pairshift.policy.Policy, dumped
    content_hash: str
    updated_at: datetime = Field(default_factory=utcnow)


class Deployment(SQLModel, table=True):
    """A logical LLM feature: its active pair and, during a canary, the candidate pair and its share."""

    __tablename__ = "deployments"
    name: str = Field(primary_key=True)
    active_prompt: str
    active_model: str
    candidate_prompt: str | None = None
    candidate_model: str | None = None
    canary_percent: float = 0.0
    # A shadow stage: the share of units whose control requests are mirrored to the candidate (never served).
    shadow_percent: float = 0.0
    migration: str | None = None  # workflow id of the migration that owns the split, if any
    # The split before the last change and when that change happened: observations routed just before a
    # change still reach the store afterwards, and are checked against the split they were routed by.
    previous_split: dict[str, Any] | None = _json(default=None, nullable=True)
    split_changed_at: datetime | None = None
    dataset: str | None = None
    policy: str = "default"
    # Pairs (prompt@version+model) or model ids tried in order when the assigned pair's call fails.
    fallback: list[str] | None = _json(default=None, nullable=True)
    prompt_external: bool = False  # `prompt: external`: the app sends its own messages (the gateway)
    redact: list[str] | None = _json(
        default=None, nullable=True
    )  # regexes applied before a capture is stored
    online_checks: list[dict[str, Any]] | None = _json(
        default=None, nullable=True
    )  # reference-free assertions run on every served output (pairshift.online_checks)
    # When a process last sent this deployment's fallback-rate notice: the fleet's claim (one an hour).
    fallback_notice_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def active_pair(self) -> str:
        return pair_id(self.active_prompt, self.active_model)

    @property
    def candidate_pair(self) -> str | None:
        if self.candidate_prompt and self.candidate_model:
            return pair_id(self.candidate_prompt, self.candidate_model)
        return None


class LedgerEntry(SQLModel, table=True):
    """Append-only: which pair served a deployment from when, and the evidence that shipped it.

    ``replaced_at`` is not stored: it is the next row's ``shipped_at`` (see ``registry.store.ledger``), so no
    row is ever updated.
    """

    __tablename__ = "ledger"
    __table_args__ = (Index("ix_ledger_deployment_shipped", "deployment", "shipped_at"),)
    id: int | None = Field(default=None, primary_key=True)
    deployment: str
    pair: str
    prompt: str
    model: str
    shipped_at: datetime = Field(default_factory=utcnow)
    migration: str | None = None
    evidence: dict[str, Any] = _json(default_factory=dict)
    by: str
    reason: str


class EvalRun(SQLModel, table=True):
    """One arm: one pair on one dataset version for some epochs."""

    __tablename__ = "eval_runs"
    id: str = Field(primary_key=True)
    deployment: str | None = Field(default=None, index=True)
    migration: str | None = None
    arm: str
    pair: str
    prompt: str
    model: str
    dataset_version: str
    dataset_hash: str
    epochs: int
    # What determines the run's answers (pairshift.evals.planning.evidence_key): the resolved snapshot and how
    # it is called, the prompt, the judge and its grading prompts, the cases and epochs. None: never reused.
    evidence_key: str | None = Field(default=None, index=True)
    status: str = "running"  # running | done | failed
    summary: dict[str, Any] | None = _json(default=None, nullable=True)
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class EvalResult(SQLModel, table=True):
    """One call of an arm, keyed by (run, case, epoch): a retried activity resumes without double counting."""

    __tablename__ = "eval_results"
    run_id: str = Field(primary_key=True, foreign_key="eval_runs.id")
    case_id: str = Field(primary_key=True)
    epoch: int = Field(primary_key=True)
    messages: list[dict[str, Any]] = _json(default_factory=list)
    params: dict[str, Any] = _json(default_factory=dict)
    resolved_model: str | None = None
    output: str | None = None
    finish_reason: str | None = None
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    error_kind: str | None = None  # truncated | context_length | unavailable | rate_limited | ...
    cached_input_tokens: int = 0  # input tokens the provider read from its prompt cache
    dropped_params: list[str] | None = _json(default=None, nullable=True)  # set by the prompt, not sent
    cached: bool = False
    via_batch: bool = False  # answered through the provider's batch API (billed at batch prices)
    online_cost_usd: float | None = None  # what the call would have cost online; None = cost_usd
    passed: bool = False
    score: float = 0.0
    assertions: list[dict[str, Any]] = _json(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)


class ProviderBatch(SQLModel, table=True):
    """One provider batch (Anthropic Message Batch / OpenAI Batch) of an eval arm (issue 18).

    ``key`` is the workflow's name for the submission (run, round, chunk): the row is written before the
    provider is asked (``submitting``) and gets ``provider_batch_id`` in the same breath as the answer, so a
    retried or resumed submit finds it and polls the same batch instead of sending another. ``counts`` are the
    results' outcomes once collected (succeeded / errored / expired / canceled / cached).
    """

    __tablename__ = "provider_batches"
    key: str = Field(primary_key=True)
    run_id: str = Field(index=True, foreign_key="eval_runs.id")
    arm: str
    round: int = 0
    provider: str
    model: str
    provider_batch_id: str | None = None
    status: str = "submitting"  # submitting | submitted | ended | collected | empty
    requests: dict[str, Any] = _json(default_factory=dict)  # custom_id -> [case_id, epoch]
    counts: dict[str, Any] = _json(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    submitted_at: datetime | None = None
    collected_at: datetime | None = None


class CachedResponse(SQLModel, table=True):
    """Response cache: hash(how the model is called, its snapshot, messages, params, epoch) -> completion.

    Entries older than the baseline reuse limit are not served (pairshift.evals.batches).
    """

    __tablename__ = "response_cache"
    key: str = Field(primary_key=True)
    provider: str
    model: str
    completion: dict[str, Any] = _json()
    created_at: datetime = Field(default_factory=utcnow)


class MigrationRow(SQLModel, table=True):
    """One run of MigrationWorkflow (``workflow_id`` repeats across migrations; ``run_id`` does not)."""

    __tablename__ = "migrations"
    run_id: str = Field(primary_key=True)
    workflow_id: str = Field(index=True)
    deployment: str = Field(index=True)
    from_pair: str
    to_pair: str
    reason: str
    requested_by: str
    phase: str
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    summary: dict[str, Any] = _json(default_factory=dict)
    updated_at: datetime = Field(default_factory=utcnow)


class AuditEvent(SQLModel, table=True):
    """Append-only audit log of a migration: every decision, refusal and traffic change, with who and why."""

    __tablename__ = "audit_events"
    id: int | None = Field(default=None, primary_key=True)
    migration: str = Field(index=True)  # workflow id
    run_id: str | None = None
    at: datetime = Field(default_factory=utcnow)
    event: str
    actor: str | None = None
    channel: str | None = None
    stage: int | None = None
    accepted: bool = True
    detail: dict[str, Any] = _json(default_factory=dict)


class Observation(SQLModel, table=True):
    """One production call's telemetry (PRODUCT §2, §9)."""

    __tablename__ = "observations"
    __table_args__ = (
        Index("ix_obs_deployment_migration_at", "deployment", "migration", "at"),
        Index("ix_obs_at", "at"),  # retention rolls up by day across deployments
    )
    id: int | None = Field(default=None, primary_key=True)
    deployment: str
    migration: str | None = None
    pair: str
    variant: str  # control | candidate
    unit: str  # a hash of the unit key, never the key itself
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    outcome: str = "ok"  # ok | error | invalid | fallback (the pair failed, a pair of the chain served)
    score: float | None = None
    resolved_model: str | None = None  # the response's `model`: what an alias resolved to
    served_pair: str | None = None  # outcome fallback: the pair of the chain that served
    prompt_version: str | None = None  # the gateway: the app's prompt version (X-Pairshift-Prompt)
    ttft_ms: float | None = None  # streamed calls: time to the first token
    detail: str | None = None  # why an output is invalid or a call errored (failing check, exception type)
    at: datetime = Field(default_factory=utcnow)


class UnitAggregate(SQLModel, table=True):
    """One unit's observations in one canary stage of one migration, kept up to date at ingest.

    A stage is (migration, percent): percents strictly increase within a migration, and the unit's variant is
    fixed for the stage. The stage gate sums these rows (and their squares) in SQL instead of reading calls
    (pairshift.unit_stats says why units, not calls). ``first_latency_ms`` is the latency of the unit's first
    recorded call in the stage that did not error: the latency gate's one draw per unit.
    """

    __tablename__ = "unit_aggregates"
    __table_args__ = (Index("ix_unit_agg_latency", "migration", "percent", "variant", "first_latency_ms"),)
    migration: str = Field(primary_key=True)
    percent: float = Field(primary_key=True)
    variant: str = Field(primary_key=True)
    unit: str = Field(primary_key=True)
    calls: int = 0
    errors: int = 0
    invalid: int = 0
    score_n: int = 0
    score_sum: float = 0.0
    score_sumsq: float = 0.0
    cost_sum: float = 0.0
    cost_sumsq: float = 0.0
    first_latency_ms: float | None = None


class ObservationRollup(SQLModel, table=True):
    """One day of one pair's observations in one variant, kept after retention deleted the calls.

    ``pairshift observations prune`` (and the daily ``pairshift-retention`` Schedule) folds observations older
    than ``retention_days`` into these sums and deletes them, so the table of calls does not grow without
    bound while the history (calls, errors, tokens, cost, latency, scores per day) stays. ``migration`` is ''
    for calls outside a migration (a primary key column cannot be NULL).
    """

    __tablename__ = "observation_rollups"
    deployment: str = Field(primary_key=True)
    migration: str = Field(primary_key=True)
    pair: str = Field(primary_key=True)
    variant: str = Field(primary_key=True)
    day: date = Field(primary_key=True)
    calls: int = Field(0, sa_type=BigInteger)
    errors: int = Field(0, sa_type=BigInteger)  # outcome error or fallback: the assigned pair failed
    invalid: int = Field(0, sa_type=BigInteger)
    input_tokens: int = Field(0, sa_type=BigInteger)  # a busy deployment's day passes 2**31 tokens
    output_tokens: int = Field(0, sa_type=BigInteger)
    cost_usd: float = 0.0
    latency_ms_sum: float = 0.0
    latency_ms_max: float = 0.0
    score_n: int = Field(0, sa_type=BigInteger)
    score_sum: float = 0.0


class ObservationLoss(SQLModel, table=True):
    """Observations of one canary stage's variant that a writer lost before they reached the store.

    A writer drops its oldest queued items when its queue is full (the store slow or unreachable); it counts
    them per (deployment, migration, variant) and reports the counts here at its next successful flush. The
    stage gate reads them: a stage does not pass on evidence it lost (pairshift.gates).
    """

    __tablename__ = "observation_losses"
    migration: str = Field(primary_key=True)
    percent: float = Field(primary_key=True)
    variant: str = Field(primary_key=True)
    lost: int = 0


class Capture(SQLModel, table=True):
    """A `pairshift datasets capture` of a deployment: while ``capturing``, its routers sample requests."""

    __tablename__ = "captures"
    id: str = Field(primary_key=True)
    deployment: str = Field(index=True)
    sample_rate: float
    max_cases: int
    status: str = "capturing"  # capturing | done | stopped
    redact: list[str] | None = _json(default=None, nullable=True)  # the patterns, fixed at the start
    created_by: str
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    dataset_version: str | None = None


class CapturedCase(SQLModel, table=True):
    """One sampled request of a capture, already redacted: a golden case in the making."""

    __tablename__ = "captured_cases"
    id: int | None = Field(default=None, primary_key=True)
    capture: str = Field(index=True)
    data: dict[str, Any] = _json()
    at: datetime = Field(default_factory=utcnow)


class OutputSample(SQLModel, table=True):
    """One served output kept as an example, redacted by the deployment's rules before it was queued.

    ``kind`` says why it was kept: ``invalid`` (it failed an online check, named in ``detail``; a few per
    check and process, for the migration report) or ``judge`` (sampled for the canary's judge, which scores it
    at the next gate check: pairshift.online_judge). Input and output are bounded in length. Deleted after
    ``retention_days`` like the observations they illustrate.
    """

    __tablename__ = "output_samples"
    __table_args__ = (Index("ix_output_samples_migration", "deployment", "migration", "kind", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    deployment: str
    migration: str | None = None
    pair: str
    variant: str  # control | candidate
    kind: str  # invalid | judge
    detail: str | None = None  # the failing check (kind invalid)
    unit: str | None = None  # kind judge: the unit's hash, and the stage (percent) its score is added to
    percent: float | None = None
    score: float | None = None  # kind judge: the judge's 0..1 score once judged (None: unreadable reply)
    cost_usd: float | None = None  # kind judge: what judging it cost
    judged_at: datetime | None = None
    input: str  # the request's variables (or the app's last message) as JSON text, redacted, bounded
    output: str  # the output, redacted, bounded
    at: datetime = Field(default_factory=utcnow, index=True)


class ShadowPair(SQLModel, table=True):
    """One request of a shadow stage answered by both pairs: control served the user, the candidate's answer
    to the same input was mirrored in the background and never served (pairshift.mirror, pairshift.shadow).

    Input and outputs are redacted by the deployment's rules and bounded before they are queued; the numbers
    are the shadow observations of both arms (they never enter ``observations``: no live gate, no SRM check,
    no served-candidate count sees them). The judge's pairwise verdict (both orders) lands in ``score`` (the
    candidate's pair score: 1 win, 0.5 tie, 0 loss, averaged over the two orders). Deleted by retention.
    """

    __tablename__ = "shadow_pairs"
    __table_args__ = (Index("ix_shadow_pairs_stage", "migration", "shadow", "unit"),)
    id: int | None = Field(default=None, primary_key=True)
    deployment: str
    migration: str
    shadow: float  # the stage's mirror share (the stage's key with the migration)
    unit: str  # the unit's hash
    control_pair: str
    candidate_pair: str
    input: str
    control_output: str
    candidate_output: str | None = None  # None: the candidate's call failed
    control_outcome: str  # ok | invalid | error | fallback (no output to judge: control_output is empty)
    control_latency_ms: float
    control_cost_usd: float
    candidate_outcome: str  # ok | invalid | error
    candidate_latency_ms: float | None = None  # None when it errored
    candidate_cost_usd: float = 0.0
    candidate_detail: str | None = None  # why the candidate's output was invalid, or its error
    score: float | None = None  # the candidate's pair score once judged (None: unjudged or unreadable)
    verdict: str | None = None  # the judge's two preferences, e.g. "candidate first: B; control first: A"
    judge_cost_usd: float | None = None
    judged_at: datetime | None = None
    at: datetime = Field(default_factory=utcnow, index=True)


class Reminder(SQLModel, table=True):
    """A deprecation reminder already sent (so each is sent once, whatever the number of scans)."""

    __tablename__ = "reminders"
    __table_args__ = (UniqueConstraint("deployment", "model", "days_before"),)
    id: int | None = Field(default=None, primary_key=True)
    deployment: str
    model: str
    days_before: int
    sent_at: datetime = Field(default_factory=utcnow)


class SlackThread(SQLModel, table=True):
    """The Slack thread of one migration in one channel: its first message starts it, later notices reply.

    ``channel`` is the policy's spelling (``#llm-migrations``); ``channel_id`` is what Slack answered
    (``C0…``), which ``chat.update`` needs.
    """

    __tablename__ = "slack_threads"
    migration: str = Field(primary_key=True)  # workflow id
    channel: str = Field(primary_key=True)
    channel_id: str
    ts: str
    created_at: datetime = Field(default_factory=utcnow)


class SlackMessage(SQLModel, table=True):
    """A posted message that asks for a decision, so its buttons can be replaced by the outcome later."""

    __tablename__ = "slack_messages"
    __table_args__ = (Index("ix_slack_messages_migration_stage", "migration", "stage"),)
    channel_id: str = Field(primary_key=True)
    ts: str = Field(primary_key=True)
    migration: str
    stage: int | None = None
    kind: str
    blocks: list[dict[str, Any]] = _json(default_factory=list)
    resolved: bool = False  # the buttons were already replaced by an outcome
    created_at: datetime = Field(default_factory=utcnow)


class SlackSeenRequest(SQLModel, table=True):
    """Signatures (HTTP) and envelope ids (Socket Mode) of accepted Slack requests: a replay is refused.

    A database table rather than process memory, so a replay sent to another API replica is refused too.
    Rows older than the verifier's window are pruned: such a request is refused as stale anyway.
    """

    __tablename__ = "slack_seen_requests"
    key: str = Field(primary_key=True)
    seen_at: datetime = Field(default_factory=utcnow, index=True)


class PersonRow(SQLModel, table=True):
    """A person of the ``people:`` config section (:class:`pairshift.people.Person`)."""

    __tablename__ = "people"
    name: str = Field(primary_key=True)
    slack: str | None = Field(default=None, unique=True)
    email: str | None = Field(default=None, unique=True)
    temporal: str | None = Field(default=None, unique=True)
    updated_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """A bearer token of ``pairshift api``: only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_tokens"
    name: str = Field(primary_key=True)
    token_hash: str = Field(unique=True)
    scopes: list[str] = _json(default_factory=list)
    created_by: str
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
