"""Config as hostile input: YAML alias bombs and oversized files, `file://` and dataset paths confined to the
config's folder, `api_key_env` rules, bounded template rendering, and `people:` with approvers naming them.

Every refusal exits 2 with one line and leaves the registry exactly as it was."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import EXAMPLES, dump_registry

from pairshift.people import People, Person
from pairshift.prompts import TemplateProblem, render
from pairshift.registry import open_registry

BOMB = "\n".join(
    [f"    l0: &l0 [{', '.join(['lol'] * 9)}]"]
    + [f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    dst = tmp_path / "config"
    shutil.copytree(EXAMPLES, dst, ignore=shutil.ignore_patterns("*.py"))
    return dst


@pytest.fixture
def applied(use_registry, cli, config_dir):
    assert cli("apply", "-f", str(config_dir)).code == 0
    return dump_registry(open_registry())


def refused(cli, path: Path, before: str, *words: str) -> str:
    r = cli("apply", "-f", str(path))
    assert r.code == 2, (r.out, r.err)
    line = r.err.strip()
    assert "\n" not in line and "Traceback" not in line, line
    for w in words:
        assert w in line, line
    assert dump_registry(open_registry()) == before
    return line


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def test_a_yaml_alias_bomb_in_prompt_params_is_refused_at_once(applied, cli, tmp_path):
    bad = write(
        tmp_path / "bomb",
        "p.yaml",
        "prompts:\n  - name: p\n    version: '1'\n    template: hi\n    params:\n" + BOMB + "\n",
    )
    assert len(bad.read_bytes()) < 600
    started = time.monotonic()
    refused(cli, bad, applied, "alias bomb")
    assert time.monotonic() - started < 5  # the review's run took 51 s and 2.5 GB (a loose bound)


def test_an_oversized_config_file_is_refused(applied, cli, tmp_path, monkeypatch):
    big = write(tmp_path / "big", "m.yaml", "models: []\n" + "# padding\n" * 2_000)
    monkeypatch.setenv("PAIRSHIFT_MAX_CONFIG_BYTES", "10000")
    refused(cli, big, applied, "larger than 10,000 bytes", "PAIRSHIFT_MAX_CONFIG_BYTES")


MODEL = "models:\n  - {{id: m1, provider: openai-compatible, base_url: 'http://127.0.0.1:9/v1', {key}}}\n"


@pytest.mark.parametrize(
    "key, words",
    [
        ("api_key_env: SLACK_BOT_TOKEN", ["SLACK_BOT_TOKEN", "never a model's key"]),
        ("api_key_env: PAIRSHIFT_UNIT_HASH_KEY", ["never a model's key"]),
        ("api_key_env: PAIRSHIFT_DATABASE_URL", ["never a model's key"]),
        ("api_key_env: DATABASE_URL", ["never a model's key"]),
        ("api_key_env: PGPASSWORD", ["never a model's key"]),
        ("api_key_env: HOME", ["neither a *_API_KEY variable nor listed under `secrets:`"]),
        ("api_key_env: 'sk-live-123'", ["NAME of an environment variable"]),
    ],
)
def test_api_key_env_may_not_name_foreign_secrets(applied, cli, tmp_path, key, words):
    refused(cli, write(tmp_path / "keys", "m.yaml", MODEL.format(key=key)), applied, "api_key_env", *words)


def test_api_key_env_allowlist(applied, cli, tmp_path):
    listed = write(
        tmp_path / "ok", "m.yaml", "secrets: [VLLM_TOKEN]\n" + MODEL.format(key="api_key_env: VLLM_TOKEN")
    )
    assert cli("apply", "-f", str(listed)).code == 0
    assert (
        cli(
            "apply", "-f", str(write(tmp_path / "ok2", "m.yaml", MODEL.format(key="api_key_env: X_API_KEY")))
        ).code
        == 0
    )
    forbidden = write(tmp_path / "bad", "m.yaml", "secrets: [SLACK_BOT_TOKEN]\n")
    refused(cli, forbidden, dump_registry(open_registry()), "secrets", "never a model's key")


def _promptfoo(folder: Path, asserts: str, tests: str | None = None) -> Path:
    write(folder, "promptfooconfig.yaml", tests or f"tests:\n  - vars: {{a: x}}\n    assert:\n{asserts}\n")
    return write(folder, "d.yaml", "datasets:\n  - {name: pf, promptfoo: promptfooconfig.yaml}\n")


@pytest.mark.parametrize(
    "value",
    ["file:///proc/self/environ", "file://../outside.txt", "file://sub/../../outside.txt", "file://~/x.txt"],
)
def test_promptfoo_assertion_values_stay_inside_the_config_folder(applied, cli, tmp_path, value):
    (tmp_path / "outside.txt").write_text("SECRET=1")
    os.environ.setdefault("PAIRSHIFT_TEST_CANARY", "x")
    folder = tmp_path / "pf"
    line = refused(cli, _promptfoo(folder, f"      - {{type: contains, value: '{value}'}}"), applied)
    assert "outside" in line or "only paths relative" in line
    with open_registry().session() as s:
        from sqlalchemy import text

        assert "SECRET" not in str(s.execute(text("SELECT data FROM dataset_cases")).all())


def test_promptfoo_test_files_and_symlinks_stay_inside(applied, cli, tmp_path):
    (tmp_path / "outside.yaml").write_text("- vars: {a: x}\n")
    folder = tmp_path / "pf2"
    refused(
        cli, _promptfoo(folder, "", tests="tests: ['file:///etc/hostname']\n"), applied, "only paths relative"
    )
    folder = tmp_path / "pf3"
    folder.mkdir()
    (folder / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    refused(cli, _promptfoo(folder, "", tests="tests: ['file://link.yaml']\n"), applied, "outside")
    inside = tmp_path / "pf4"
    write(inside, "value.txt", "ok")
    assert (
        cli(
            "apply", "-f", str(_promptfoo(inside, "      - {type: contains, value: 'file://value.txt'}"))
        ).code
        == 0
    )


@pytest.mark.parametrize("path", ["/etc/hostname", "../../outside.jsonl"])
def test_dataset_paths_stay_inside_the_config_folder(applied, cli, tmp_path, path):
    folder = tmp_path / "ds"
    bad = write(folder, "d.yaml", f"datasets:\n  - {{name: d, path: '{path}'}}\n")
    refused(cli, bad, applied, "dataset 'd': path")


@pytest.mark.parametrize(
    "template, words",
    [
        ("{% for i in range(10**9) %}x{% endfor %}", "iterations"),
        ("{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}", "iterations"),
        ("{% for i in range(99999) %}{{ 'y' * 99 }}{% endfor %}", "characters"),
        ("{{ 'x' * 10**9 }}", "repetition"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ ().__class__.__base__ }}", "unsafe"),
    ],
)
def test_template_rendering_is_bounded_and_every_failure_is_a_template_problem(template, words):
    with pytest.raises(TemplateProblem, match=words.replace("*", r"\*")):
        render(None, template, {})


def test_people_join_identities_and_approvers_name_them(applied, cli, tmp_path):
    folder = tmp_path / "people"
    write(
        folder,
        "p.yaml",
        "people:\n"
        "  - {name: bob, slack: UBOB, email: Bob@Example.com, temporal: bob@corp}\n"
        "  - {name: carmen, email: carmen@example.com}\n"
        "policies:\n  - name: strict\n    approvals: {approvers: [carmen, bob], channels: [slack, cli]}\n"
        "  - name: open\n    approvals: {approvers: anyone}\n",
    )
    r = cli("apply", "-f", str(folder), "--json")
    assert r.code == 0, r.err
    assert {"created person bob", "created person carmen", "created policy strict"} <= set(
        r.json()["changes"]
    )
    from pairshift.people import load_people

    with open_registry().session() as s:
        people = load_people(s)
    assert people.find("UBOB").name == "bob" and people.find("bob@example.com").name == "bob"
    assert people.same("bob", "UBOB") and not people.same("carmen", "UBOB")
    before = dump_registry(open_registry())
    unknown = write(
        tmp_path / "p2", "p.yaml", "policies:\n  - name: x\n    approvals: {approvers: [mallory]}\n"
    )
    refused(cli, unknown, before, "mallory not in `people:`")
    shared = write(tmp_path / "p3", "p.yaml", "people:\n  - {name: eve, slack: UBOB}\n")
    refused(cli, shared, before, "UBOB is already bob's slack identity")
    bad_channel = write(
        tmp_path / "p4", "p.yaml", "policies:\n  - name: y\n    approvals: {channels: [email]}\n"
    )
    refused(cli, bad_channel, before, "channels")


def test_people_refuse_one_identity_for_two_persons():
    with pytest.raises(ValueError, match="belongs to both"):
        People(people=(Person(name="a", email="x@y.z"), Person(name="b", temporal="X@Y.Z")))
