"""Registry verbs: apply, get, ledger."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer
from sqlmodel import select

from pairshift import ledger as ledger_mod
from pairshift.apply import apply_path
from pairshift.cli.common import CLIError, console, emit_json, os_user, table
from pairshift.registry import open_registry
from pairshift.registry.models import Dataset, DatasetVersion, Deployment, MigrationRow, Model, PromptVersion


def apply(
    file: Path = typer.Option(..., "-f", "--file", help="A YAML file or a folder of YAML files."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Apply registry config (models, prompts, datasets, deployments, policies): idempotent, atomic."""
    result = apply_path(open_registry(), file, by=os_user())
    if json_out:
        return emit_json(
            {"changes": result.changes, "unchanged": result.unchanged, "warnings": result.warnings}
        )
    for w in result.warnings:
        console.print(f"[yellow]warning[/]: {w}")
    for c in result.changes:
        console.print(f"  {c}")
    console.print(f"{len(result.changes)} changed, {result.unchanged} unchanged")


class Kind(StrEnum):
    """What ``pairshift get`` lists."""

    models = "models"
    prompts = "prompts"
    deployments = "deployments"
    datasets = "datasets"
    migrations = "migrations"


def deployment_json(d: Deployment) -> dict:
    """A deployment as ``get deployments --json`` prints it (PRODUCT §11)."""
    return {
        "name": d.name,
        "active_pair": d.active_pair,
        "candidate_pair": d.candidate_pair,
        "canary_percent": d.canary_percent,
        "dataset": d.dataset,
        "policy": d.policy,
        "migration": d.migration,
    }


def migration_json(m: MigrationRow) -> dict:
    """A migration as ``get migrations --json`` prints it (PRODUCT §11)."""
    return {
        "id": m.workflow_id,
        "run_id": m.run_id,
        "deployment": m.deployment,
        "phase": m.phase,
        "reason": m.reason,
        "from_pair": m.from_pair,
        "to_pair": m.to_pair,
        "requested_by": m.requested_by,
        "started_at": m.started_at,
        "finished_at": m.finished_at,
    }


def _rows(kind: Kind, name: str | None) -> list[dict]:
    with open_registry().session() as s:
        if kind is Kind.models:
            items = s.exec(select(Model).order_by(Model.id)).all()
            out = [
                {
                    "id": m.id,
                    "provider": m.provider,
                    "aliases": m.aliases,
                    "price": {"input_per_mtok": m.input_per_mtok, "output_per_mtok": m.output_per_mtok},
                    "deprecated_on": m.deprecated_on,
                    "retires_on": m.retires_on,
                    "replacement": m.replacement,
                    "base_url": m.base_url,
                    "source": m.source,
                }
                for m in items
            ]
        elif kind is Kind.prompts:
            items = s.exec(select(PromptVersion).order_by(PromptVersion.name, PromptVersion.created_at)).all()
            out = [
                {
                    "id": p.id,
                    "name": p.name,
                    "version": p.version,
                    "variables": p.variables,
                    "params": p.params,
                    "content_hash": p.content_hash,
                    "system": p.system,
                    "template": p.template,
                }
                for p in items
            ]
        elif kind is Kind.deployments:
            out = [deployment_json(d) for d in s.exec(select(Deployment).order_by(Deployment.name)).all()]
        elif kind is Kind.datasets:
            out = []
            for d in s.exec(select(Dataset).order_by(Dataset.name)).all():
                v = s.get(DatasetVersion, d.current_version)
                out.append(
                    {
                        "name": d.name,
                        "version": v.version,
                        "hash": v.content_hash,
                        "cases": v.n_cases,
                        "source": v.source,
                    }
                )
        else:
            rows = s.exec(select(MigrationRow).order_by(MigrationRow.started_at.desc())).all()
            out = [migration_json(m) for m in rows]
    key = "id" if kind in (Kind.models, Kind.prompts, Kind.migrations) else "name"
    if name is not None:
        out = [o for o in out if o.get(key) == name or (kind is Kind.prompts and o["name"] == name)]
        if not out:
            raise CLIError(f"no {kind.value[:-1]} named {name}")
    return out


_COLUMNS = {
    Kind.models: ["id", "provider", "aliases", "retires_on", "replacement", "source"],
    Kind.prompts: ["id", "variables", "content_hash"],
    Kind.deployments: ["name", "active_pair", "candidate_pair", "canary_percent", "dataset", "policy"],
    Kind.datasets: ["name", "version", "cases", "hash"],
    Kind.migrations: [
        "id",
        "deployment",
        "phase",
        "reason",
        "from_pair",
        "to_pair",
        "requested_by",
        "started_at",
    ],
}


def get(
    kind: Kind = typer.Argument(..., help="What to list."),
    name: str | None = typer.Argument(None, help="Only this one."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List registry objects: models, prompts, deployments, datasets, migrations."""
    rows = _rows(kind, name)
    if json_out:
        return emit_json(rows)
    cols = _COLUMNS[kind]
    table(
        kind.value,
        cols,
        [[(r[c][:12] if c == "content_hash" or c == "hash" else r[c]) for c in cols] for r in rows],
    )


def ledger(
    deployment: str = typer.Argument(..., help="Deployment name."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Which pair served DEPLOYMENT when, and the evidence that shipped it."""
    with open_registry().session() as s:
        if s.get(Deployment, deployment) is None:
            raise CLIError(f"unknown deployment {deployment}")
        rows = ledger_mod.history(s, deployment)
    if json_out:
        return emit_json([r.model_dump(mode="json") for r in rows])
    table(
        f"ledger of {deployment}",
        ["pair", "shipped_at", "replaced_at", "migration", "by", "reason"],
        [[r.pair, r.shipped_at, r.replaced_at, r.migration, r.by, r.reason] for r in rows],
    )
