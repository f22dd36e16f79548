"""``pairshift apply``: write validated config into the registry in one transaction, idempotently.

Rules (PRODUCT §4): applying the same files twice changes nothing; a changed immutable object (a prompt
version's text, a labelled dataset version's cases) is refused naming file, object and field; every
reference must resolve; nothing of a refused apply is written.

A deployment's active pair is owned by migrations once the deployment exists: a config that names another
pair for an existing deployment is reported as drift and left alone (moving traffic is what
``pairshift migrate`` is for, with evidence), so re-applying an old file never undoes a promotion.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlmodel import Session, select

from pairshift import judges, ledger
from pairshift.config import (
    ConfigError,
    DatasetConfig,
    DeploymentConfig,
    Located,
    ModelConfig,
    PromptConfig,
    load_config,
)
from pairshift.config_files import UnsafeFile, confined
from pairshift.people import IDENTITY_FIELDS, Person
from pairshift.policy import Policy, format_validation_error
from pairshift.prompts import TemplateProblem, check_template, content_hash
from pairshift.providers import CallParams, ModelSpec, provider_problems, reserved_param_problems
from pairshift.registry.datasets import move_head, store_version
from pairshift.registry.models import (
    Dataset,
    DatasetCase,
    DatasetVersion,
    Deployment,
    Model,
    PersonRow,
    PolicyRow,
    PromptVersion,
    utcnow,
)
from pairshift.registry.store import Registry
from pairshift.resolver import resolve_model


@dataclass
class ApplyResult:
    """What an apply did: the changes written, how many objects were already so, and the warnings."""

    changes: list[str] = field(default_factory=list)  # "created prompt support-triage@37", ...
    unchanged: int = 0
    warnings: list[str] = field(default_factory=list)


def apply_path(registry: Registry, path: Path, *, by: str) -> ApplyResult:
    """Validate everything under ``path`` and write it in one transaction."""
    items = load_config(path)
    with registry.session() as s:
        return _apply(s, items, by=by)


def _apply(s: Session, items: list[Located], *, by: str) -> ApplyResult:
    result = ApplyResult()
    by_kind: dict[str, list[Located]] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item)
    for item in by_kind.get("people", []):
        _apply_person(s, item, result)
    s.flush()
    for item in by_kind.get("models", []):
        _apply_model(s, item, result)
    for item in by_kind.get("policies", []):
        _apply_policy(s, item, item.obj, result)
    for item in by_kind.get("prompts", []):
        _apply_prompt(s, item, result)
    for item in by_kind.get("datasets", []):
        _apply_dataset(s, item, result)
    s.flush()
    for item in by_kind.get("deployments", []):
        _apply_deployment(s, item, result, by=by)
    return result


def _record(result: ApplyResult, changed: bool, what: str) -> None:
    if changed:
        result.changes.append(what)
    else:
        result.unchanged += 1


def _apply_model(s: Session, item: Located, result: ApplyResult) -> None:
    cfg: ModelConfig = item.obj
    values = dict(
        provider=cfg.provider,
        aliases=list(cfg.aliases),
        input_per_mtok=cfg.price.input_per_mtok,
        output_per_mtok=cfg.price.output_per_mtok,
        cached_input_per_mtok=cfg.price.cached_input_per_mtok,
        batch_input_per_mtok=cfg.price.batch_input_per_mtok,
        batch_output_per_mtok=cfg.price.batch_output_per_mtok,
        request_rules=cfg.request_rules(),
        deprecated_on=cfg.deprecated_on,
        retires_on=cfg.retires_on,
        replacement=cfg.replacement,
        base_url=cfg.base_url,
        api_key_env=cfg.api_key_env,
        limits=cfg.limits.model_dump(exclude_none=True),
        source="config",
    )
    row = s.get(Model, cfg.id)
    if row is None:
        s.add(Model(id=cfg.id, **values))
        return _record(result, True, f"created model {cfg.id}")
    changed = {k for k, v in values.items() if getattr(row, k) != v}
    for k in changed:
        setattr(row, k, values[k])
    if changed:
        row.updated_at = utcnow()
        s.add(row)
    _record(result, bool(changed), f"updated model {cfg.id} ({', '.join(sorted(changed))})")


def _apply_person(s: Session, item: Located, result: ApplyResult) -> None:
    person: Person = item.obj
    values = {k: getattr(person, k) for k in IDENTITY_FIELDS}
    for k, v in values.items():  # an identity is one person's: refused here rather than as a DB error
        other = s.scalars(select(PersonRow).where(getattr(PersonRow, k) == v)).first() if v else None
        if other is not None and other.name != person.name:
            raise ConfigError(f"{item.where(k)}: {v} is already {other.name}'s {k} identity")
    row = s.get(PersonRow, person.name)
    if row is None:
        s.add(PersonRow(name=person.name, **values))
        return _record(result, True, f"created person {person.name}")
    changed = sorted(k for k, v in values.items() if getattr(row, k) != v)
    for k in changed:
        setattr(row, k, values[k])
    if changed:
        row.updated_at = utcnow()
        s.add(row)
    _record(result, bool(changed), f"updated person {person.name} ({', '.join(changed)})")


def _check_approvers(s: Session, item: Located, policy: Policy) -> None:
    unknown = [name for name in policy.approvals.named if s.get(PersonRow, name) is None]
    if unknown:
        raise ConfigError(
            f"{item.where('approvals.approvers')}: {', '.join(unknown)} not in `people:` (approvers name "
            "people; add them there, or write `approvers: anyone`)"
        )


def _policy_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _check_judge(s: Session, item: Located, policy: Policy) -> None:
    """A policy's judges (eval, canary) must be known models that outlive any migration under the policy."""
    named = [(judges.JUDGE_KEY, policy.eval.judge)]
    named.append(("canary.judge.model", policy.canary.judge.model if policy.canary.judge else None))
    for key, judge in named:
        if judge is None:
            continue
        resolved = resolve_model(s, judge)
        row = resolved.row if resolved else None
        problem = judges.judge_problem(row, judge, date.today(), judges.policy_horizon(policy))
        if problem is not None:
            raise ConfigError(f"{item.where(key)}: {problem}")


def _check_dataset_judge(s: Session, item: Located, dataset: str | None, policy_name: str) -> None:
    """A dataset with model-graded assertions needs a policy that names its judge."""
    head = s.get(Dataset, dataset) if dataset else None
    if head is None:
        return
    rows = s.exec(select(DatasetCase.data).where(DatasetCase.dataset_version == head.current_version)).all()
    graded = judges.first_model_graded_in(rows)
    policy_row = s.get(PolicyRow, policy_name)
    policy = Policy.model_validate(policy_row.spec) if policy_row else Policy()
    if graded is not None and policy.eval.judge is None:
        where = f"{item.where('policy')}: dataset {dataset}"
        raise ConfigError(judges.missing_judge_message(where, graded) + f" of policy {policy_name}")


def _apply_policy(s: Session, item: Located, policy: Policy, result: ApplyResult) -> None:
    _check_approvers(s, item, policy)
    _check_judge(s, item, policy)
    spec = policy.model_dump(mode="json")
    digest = _policy_hash(spec)
    row = s.get(PolicyRow, policy.name)
    if row is None:
        s.add(PolicyRow(name=policy.name, spec=spec, content_hash=digest))
        return _record(result, True, f"created policy {policy.name}")
    if row.content_hash != digest:
        row.spec, row.content_hash, row.updated_at = spec, digest, utcnow()
        s.add(row)
        return _record(result, True, f"updated policy {policy.name}")
    _record(result, False, "")


def _apply_prompt(s: Session, item: Located, result: ApplyResult) -> None:
    cfg: PromptConfig = item.obj
    try:
        check_template(cfg.system, cfg.template, cfg.variables)
    except TemplateProblem as exc:
        raise ConfigError(f"{item.where('template')}: {exc}") from None
    for key, why in reserved_param_problems(cfg.params):
        raise ConfigError(f"{item.where(f'params.{key}')}: reserved, a prompt cannot set it ({why})")
    try:
        CallParams.model_validate(cfg.params)
    except ValueError as exc:
        raise ConfigError(format_validation_error(exc, item.where("params"))) from None
    digest = content_hash(cfg.system, cfg.template, cfg.variables, cfg.params)
    row = s.get(PromptVersion, cfg.id)
    if row is None:
        s.add(
            PromptVersion(
                id=cfg.id,
                name=cfg.name,
                version=cfg.version,
                system=cfg.system,
                template=cfg.template,
                variables=list(cfg.variables),
                params=dict(cfg.params),
                content_hash=digest,
            )
        )
        return _record(result, True, f"created prompt {cfg.id}")
    if row.content_hash != digest:
        stored = {
            "system": row.system,
            "template": row.template,
            "variables": row.variables,
            "params": row.params,
        }
        new = {
            "system": cfg.system,
            "template": cfg.template,
            "variables": cfg.variables,
            "params": cfg.params,
        }
        fields = [k for k in stored if stored[k] != new[k]] or ["content"]
        raise ConfigError(
            f"{item.where(fields[0])}: prompt versions are immutable and {cfg.id} already exists with a "
            f"different {fields[0]}; publish it under a new version"
        )
    _record(result, False, "")


def _relative_to_root(item: Located, ref: str | None) -> str:
    """A path written relative to the YAML file, re-expressed relative to the apply root (for confined)."""
    ref = ref or ""
    if not ref or ref.startswith(("/", "~")) or item.root is None:
        return ref
    try:
        return os.path.relpath(item.file.parent.resolve() / ref, item.root.resolve())
    except ValueError:
        return ref


def _apply_dataset(s: Session, item: Located, result: ApplyResult) -> None:
    from pairshift.datasets import DatasetError, dataset_hash, load_dataset, load_promptfoo

    cfg: DatasetConfig = item.obj
    if bool(cfg.path) == bool(cfg.promptfoo):
        raise ConfigError(f"{item.where('path')}: give exactly one of path or promptfoo")
    field_name = "path" if cfg.path else "promptfoo"
    try:
        source = confined(
            item.root or item.file.parent, str(_relative_to_root(item, cfg.path or cfg.promptfoo))
        )
    except UnsafeFile as exc:
        raise ConfigError(f"{item.where(field_name)}: {exc}") from None
    if not source.exists():
        raise ConfigError(f"{item.where('path')}: {source} does not exist")
    try:
        cases = load_promptfoo(source) if cfg.promptfoo else load_dataset(source)
    except DatasetError as exc:
        raise ConfigError(f"{item.where()}: {exc}") from None
    if not cases:
        raise ConfigError(f"{item.where('path')}: {source} holds no cases")
    digest = dataset_hash(cases)
    version = cfg.version or digest[:12]
    version_id = f"{cfg.name}@{version}"
    existing = s.get(DatasetVersion, version_id)
    if existing is not None and existing.content_hash != digest:
        raise ConfigError(
            f"{item.where('version')}: dataset versions are immutable and {version_id} already holds other "
            "cases; give the changed cases a new version"
        )
    store_version(s, name=cfg.name, version=version, digest=digest, cases=cases, source=str(source))
    moved = move_head(s, cfg.name, version_id)
    if moved == "created":
        return _record(result, True, f"created dataset {version_id} ({len(cases)} cases)")
    if moved == "updated":
        return _record(result, True, f"updated dataset {cfg.name} -> {version_id} ({len(cases)} cases)")
    _record(result, False, "")


def _check_fallback(s: Session, item: Located, cfg: DeploymentConfig) -> None:
    """A fallback chain may not repeat the primary model or a model, nor name an unknown or retired model."""
    seen: set[str] = {cfg.model}
    today = date.today()
    for i, entry in enumerate(cfg.fallback):
        where = item.where(f"fallback[{i}]")
        prompt_id, _, model_id = entry.rpartition("+") if "+" in entry else ("", "", entry)
        if model_id in seen:
            what = "the primary model" if model_id == cfg.model else "a model named earlier in the chain"
            raise ConfigError(
                f"{where}: {entry} repeats {what} ({model_id}): a fallback must be another model"
            )
        seen.add(model_id)
        resolved = resolve_model(s, model_id)
        if resolved is None:
            raise ConfigError(f"{where}: unknown model {model_id}")
        model = resolved.row
        if model.retires_on is not None and model.retires_on <= today:
            raise ConfigError(
                f"{where}: model {model_id} retired on {model.retires_on}: it cannot serve a fallback"
            )
        if prompt_id:
            if cfg.external:
                raise ConfigError(
                    f"{where}: a `prompt: external` deployment's fallback names models, not pairs"
                )
            prompt = s.get(PromptVersion, prompt_id)
            if prompt is None:
                raise ConfigError(f"{where}: unknown prompt version {prompt_id}")
            _check_pair_params(item, prompt, model, model_id)


def _check_pair_params(item: Located, prompt: PromptVersion, model: Model, name: str) -> None:
    """The prompt's params against what the model's provider accepts (Anthropic's temperature is 0..1)."""
    try:
        params = CallParams.model_validate(prompt.params)
    except ValueError as exc:
        raise ConfigError(
            format_validation_error(exc, f"{item.where('prompt')}: {prompt.id} params")
        ) from None
    spec = ModelSpec.from_model(model, id=name)
    for field_name, problem in provider_problems(spec.provider, params, spec.api):
        raise ConfigError(
            f"{item.where('prompt')}: {prompt.id} params.{field_name} {problem} "
            f"(model {name} is {spec.provider})"
        )


def _apply_deployment(s: Session, item: Located, result: ApplyResult, *, by: str) -> None:
    cfg: DeploymentConfig = item.obj
    policy_name = cfg.policy if isinstance(cfg.policy, str) else f"{cfg.name}-inline"
    if isinstance(cfg.policy, Policy):
        _apply_policy(s, item, cfg.policy.model_copy(update={"name": policy_name}), result)
        s.flush()
    prompt = None if cfg.external else s.get(PromptVersion, cfg.prompt)
    if prompt is None and not cfg.external:
        raise ConfigError(f"{item.where('prompt')}: unknown prompt version {cfg.prompt}")
    resolved = resolve_model(s, cfg.model)  # the one resolution the eval and the router use too
    if resolved is None:
        raise ConfigError(f"{item.where('model')}: unknown model {cfg.model}")
    model = resolved.row
    if prompt is not None:
        _check_pair_params(item, prompt, model, cfg.model)
    _check_fallback(s, item, cfg)
    if cfg.dataset and s.get(Dataset, cfg.dataset) is None:
        raise ConfigError(f"{item.where('dataset')}: unknown dataset {cfg.dataset}")
    if s.get(PolicyRow, policy_name) is None and policy_name != "default":
        raise ConfigError(f"{item.where('policy')}: unknown policy {policy_name}")
    if policy_name == "default" and s.get(PolicyRow, "default") is None:
        s.add(
            PolicyRow(
                name="default",
                spec=Policy().model_dump(mode="json"),
                content_hash=_policy_hash(Policy().model_dump(mode="json")),
            )
        )
    _check_dataset_judge(s, item, cfg.dataset, policy_name)
    if resolved.name != resolved.row.id:
        result.warnings.append(
            f"{item.where('model')}: {cfg.model} is an alias (unpinned): the provider may repoint it"
        )
    row = s.get(Deployment, cfg.name)
    if row is None:
        row = Deployment(
            name=cfg.name,
            active_prompt=cfg.prompt,
            active_model=cfg.model,
            dataset=cfg.dataset,
            policy=policy_name,
            fallback=list(cfg.fallback) or None,
            prompt_external=cfg.external,
            redact=list(cfg.redact) or None,
            online_checks=list(cfg.online_checks) or None,
        )
        s.add(row)
        s.flush()
        ledger.append(
            s,
            deployment=cfg.name,
            prompt=cfg.prompt,
            model=cfg.model,
            by=by,
            reason="initial apply",
            migration=None,
            evidence={},
        )
        return _record(result, True, f"created deployment {cfg.name} ({row.active_pair})")
    if (row.active_prompt, row.active_model) != (cfg.prompt, cfg.model):
        result.warnings.append(
            f"{item.where()}: config names {cfg.prompt}+{cfg.model} but the active pair is "
            f"{row.active_pair}; left as is (pairs move through `pairshift migrate`)"
        )
    wanted = {
        "dataset": cfg.dataset,
        "policy": policy_name,
        "fallback": list(cfg.fallback) or None,
        "redact": list(cfg.redact) or None,
        "online_checks": list(cfg.online_checks) or None,
    }
    changed = [k for k, v in wanted.items() if getattr(row, k) != v]
    for k in changed:
        setattr(row, k, wanted[k])
    if changed:
        row.updated_at = utcnow()
        s.add(row)
    _record(result, bool(changed), f"updated deployment {cfg.name} ({', '.join(changed)})")
