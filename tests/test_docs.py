"""docs/configuration.md is generated from the code (pairshift.docs): the committed copy must be current, and
the generator must cover every settings variable and policy field with the defaults that really apply."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from pydantic import BaseModel
from test_deploy import env_names_read_by_code

from pairshift import docs
from pairshift.policy import Policy
from pairshift.settings import Settings

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
REGENERATE = "python -m pairshift.docs > docs/configuration.md   (or: make docs)"


def test_the_committed_reference_is_current():
    committed = REFERENCE.read_text() if REFERENCE.exists() else ""
    fresh = docs.render()
    if committed != fresh:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(True), fresh.splitlines(True), "committed", "generated"
                )
            )[:40]
        )
        raise AssertionError(f"docs/configuration.md is stale; regenerate it with:\n    {REGENERATE}\n{diff}")


def row(text: str, name: str) -> list[str]:
    line = next((ln for ln in text.splitlines() if ln.startswith(f"| `{name}` |")), None)
    assert line is not None, f"no row for {name}"
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def policy_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        nested = docs.nested_model(field.annotation)
        items = docs.list_model(field.annotation)
        if nested or items:
            out += policy_paths(nested or items, f"{prefix}{name}{'[]' if items else ''}.")
    return out


def test_every_setting_and_policy_field_has_a_row():
    text = docs.render()
    for field in Settings.model_fields:
        row(text, f"PAIRSHIFT_{field.upper()}")
    paths = policy_paths(Policy)
    assert "canary.stages[].min_hours" in paths and "approvals.separation_of_duties" in paths
    for path in paths:
        if path in Policy.model_fields and docs.nested_model(Policy.model_fields[path].annotation):
            assert f"### `{path}`" in text, f"no section for {path}"  # top-level sections get a heading
        else:
            row(text, path)


def test_rows_show_type_default_bounds_and_description():
    text = docs.render()
    assert row(text, "eval.epochs") == [
        "`eval.epochs`",
        "integer",
        "`3`",
        ">= 1, <= 20",
        "Repeats of every case per arm; > 1 measures nondeterminism.",
    ]
    assert row(text, "canary.min_samples")[1:3] == ['integer or "auto"', '`"auto"`']
    assert row(text, "PAIRSHIFT_TEMPORAL_ADDRESS")[2] == '`"localhost:7233"`'
    assert row(text, "id")[2] == "*required*"


def test_a_nested_default_is_the_one_its_section_applies():
    # RatioGate.max_ratio has no default of its own; left out, the canary gates latency at 1.3x, cost at 1.5x.
    text = docs.render()
    assert row(text, "canary.metrics.latency_p95.max_ratio")[2] == "`1.3`"
    assert row(text, "canary.metrics.cost_per_call.max_ratio")[2] == "`1.5`"


def test_every_environment_variable_documented_is_read_by_the_code():
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", docs.render(), flags=re.M))
    assert set(docs.PROVIDER_ENV) <= documented
    assert documented - env_names_read_by_code() == set()
