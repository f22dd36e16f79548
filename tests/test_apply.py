"""`pairshift apply`: idempotent, one transaction, immutable versions, references checked (SQLite and
PostgreSQL)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLES, dump_registry

from pairshift.registry import open_registry


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    dst = tmp_path / "config"
    shutil.copytree(EXAMPLES, dst, ignore=shutil.ignore_patterns("*.py"))
    return dst


def test_apply_twice_changes_nothing_the_second_time(use_registry, cli, config_dir):
    first = cli("apply", "-f", str(config_dir), "--json")
    assert first.code == 0, first.err
    assert any(c.startswith("created deployment support-triage") for c in first.json()["changes"])
    before = dump_registry(open_registry())
    second = cli("apply", "-f", str(config_dir), "--json")
    assert second.code == 0 and second.json()["changes"] == []
    assert dump_registry(open_registry()) == before


def test_get_and_ledger_json_keys(use_registry, cli, config_dir):
    assert cli("apply", "-f", str(config_dir)).code == 0
    deps = cli("get", "deployments", "--json").json()
    assert set(deps[0]) >= {"name", "active_pair", "candidate_pair", "canary_percent", "dataset", "policy"}
    assert deps[0]["active_pair"] == "support-triage@1+sim-classic-2024-06"
    ds = cli("get", "datasets", "support-triage-golden", "--json").json()
    assert ds[0]["cases"] == 300 and len(ds[0]["hash"]) == 64
    prompts = cli("get", "prompts", "support-triage", "--json").json()
    assert [p["id"] for p in prompts] == ["support-triage@1", "support-triage@2"]
    led = cli("ledger", "support-triage", "--json").json()
    assert len(led) == 1
    assert set(led[0]) >= {"pair", "shipped_at", "replaced_at", "migration", "evidence", "by", "reason"}
    assert cli("get", "models", "--json").json()[0]["id"].startswith("sim-")
    missing = cli("get", "deployments", "nope")
    assert missing.code == 2 and "no deployment named nope" in missing.err


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


BAD_EDITS = [
    # (what, old, new, words the one-line error must contain)
    (
        "changed prompt text",
        "Reply with JSON only, with the keys",
        "Reply in JSON, keys",
        ["pairshift.yaml", "prompt 'support-triage@1'", "system", "immutable"],
    ),
    (
        "dangling reference",
        "prompt: support-triage@1\n",
        "prompt: support-triage@9\n",
        ["deployment 'support-triage'", "prompt", "unknown prompt version support-triage@9"],
    ),
    (
        "undeclared template variable",
        'template: "Tier: {{ customer_tier }}',
        'template: "Tier: {{ custmer_tier }}',
        ["prompt 'support-triage@1'", "template", "custmer_tier"],
    ),
    ("malformed YAML", "models:\n", "models: [\n", ["pairshift.yaml", "malformed YAML"]),
    (
        "unknown key",
        "    provider: sim\n",
        "    provider: sim\n    flavour: mint\n",
        ["models.0.flavour", "Extra inputs"],
    ),
    ("wrong type", "price: {input_per_mtok: 3.0,", "price: {input_per_mtok: lots,", ["input_per_mtok"]),
    ("unknown policy", "    policy: demo\n", "    policy: dmeo\n", ["policy", "unknown policy dmeo"]),
    (
        "unknown eval mode",
        "eval: {epochs: 2,",
        "eval: {mode: bulk, epochs: 2,",
        ["eval.mode", "'online', 'batch' or 'auto'"],
    ),
]


@pytest.mark.parametrize("what, old, new, words", BAD_EDITS, ids=[b[0] for b in BAD_EDITS])
def test_bad_config_exits_2_names_the_place_and_writes_nothing(
    use_registry, cli, config_dir, what, old, new, words
):
    assert cli("apply", "-f", str(config_dir)).code == 0
    # a second, unrelated change in the same apply must not be written either
    _edit(config_dir / "pairshift.yaml", "output_per_mtok: 4.0", "output_per_mtok: 5.0")
    before = dump_registry(open_registry())
    _edit(config_dir / "pairshift.yaml", old, new)
    result = cli("apply", "-f", str(config_dir))
    assert result.code == 2, (result.out, result.err)
    line = result.err.strip()
    assert "\n" not in line and "Traceback" not in line
    for w in words:
        assert w in line, (w, line)
    assert dump_registry(open_registry()) == before


def test_changed_labelled_dataset_version_is_refused(use_registry, cli, config_dir):
    _edit(
        config_dir / "pairshift.yaml",
        "path: datasets/support-triage.jsonl",
        'path: datasets/support-triage.jsonl\n    version: "2026-11"',
    )
    assert cli("apply", "-f", str(config_dir)).code == 0
    data = config_dir / "datasets" / "support-triage.jsonl"
    data.write_text(data.read_text().replace('"free"', '"basic"', 1))
    before = dump_registry(open_registry())
    result = cli("apply", "-f", str(config_dir))
    assert result.code == 2 and "support-triage-golden@2026-11" in result.err and "immutable" in result.err
    assert dump_registry(open_registry()) == before


def test_unlabelled_dataset_change_adds_a_version(use_registry, cli, config_dir):
    assert cli("apply", "-f", str(config_dir)).code == 0
    data = config_dir / "datasets" / "support-triage.jsonl"
    data.write_text(data.read_text().replace('"free"', '"basic"', 1))
    result = cli("apply", "-f", str(config_dir), "--json")
    assert result.code == 0
    assert [c for c in result.json()["changes"] if c.startswith("updated dataset support-triage-golden")]


def test_existing_deployment_pair_is_not_moved_by_apply(use_registry, cli, config_dir):
    assert cli("apply", "-f", str(config_dir)).code == 0
    _edit(config_dir / "pairshift.yaml", "prompt: support-triage@1\n", "prompt: support-triage@2\n")
    result = cli("apply", "-f", str(config_dir), "--json")
    assert result.code == 0 and result.json()["changes"] == []
    assert any("pairshift migrate" in w for w in result.json()["warnings"])
    assert cli("get", "deployments", "--json").json()[0]["active_pair"].startswith("support-triage@1+")


def test_missing_path_is_bad_input(use_registry, cli, tmp_path):
    result = cli("apply", "-f", str(tmp_path / "nope.yaml"))
    assert result.code == 2 and "no such file" in result.err
