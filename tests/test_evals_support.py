"""Shared setup for the eval tests: a registry holding the example config with a small dataset.

Imported by tests/test_evals*.py, test_eval_workflow*.py and test_reports*.py (no tests of its own).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pairshift.apply import apply_path
from pairshift.ratelimit import reset_limiters
from pairshift.registry.store import Registry, forget_registry, open_registry
from pairshift.settings import get_settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def write_config(
    folder: Path,
    *,
    n_cases: int = 30,
    model_overrides: dict[str, dict[str, Any]] | None = None,
    extra_models: list[dict[str, Any]] | None = None,
) -> Path:
    """The example config with the first ``n_cases`` cases; ``model_overrides`` patch models by id."""
    folder.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((EXAMPLES / "pairshift.yaml").read_text())
    for model in config["models"]:
        model.update((model_overrides or {}).get(model["id"], {}))
    config["models"] += extra_models or []
    (folder / "datasets").mkdir(exist_ok=True)
    lines = (EXAMPLES / "datasets" / "support-triage.jsonl").read_text().splitlines()[:n_cases]
    (folder / "datasets" / "support-triage.jsonl").write_text("\n".join(lines) + "\n")
    path = folder / "pairshift.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def eval_registry(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """A SQLite registry with the 30-case example applied, set as the process registry (activities use it)."""
    url = sqlite_url  # at head already (conftest's template)
    monkeypatch.setenv("PAIRSHIFT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PAIRSHIFT_DATABASE_URL", url)
    get_settings.cache_clear()
    reset_limiters()
    registry = open_registry(url)
    apply_path(registry, write_config(tmp_path / "config"), by="test")
    yield registry
    forget_registry(url)
    get_settings.cache_clear()
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
