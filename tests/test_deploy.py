"""The production stack (PRODUCT §12) cannot run here (no Docker engine), so these tests check what can drift:
docker-compose.yml is valid for `docker-compose config`, every pairshift service runs a real `pairshift`
sub-command with options that parse, sets only environment variables the code reads, and no secret is
written into the file (only `${VAR}` references, filled from .env, whose committed example holds names only).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from browser import in_ci

from pairshift.cli import app
from pairshift.settings import Settings
from pairshift.slack import ENV_NAMES as SLACK_ENV_NAMES

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
PACKAGE = REPO / "pairshift"
REFERENCE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")
# A secret's value may only be a reference: ${NAME}, ${NAME:-} / ${NAME-} (empty default) or ${NAME:?message}.
SECRET_REFERENCE = re.compile(r"\$\{[A-Z][A-Z0-9_]*(?::?-|:?\?[^}]*)?\}")
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PWD")
URL_PASSWORD = re.compile(r"://[^/:@\s]+:(?P<password>[^@\s]+)@")
CODE_ENV_NAME = re.compile(r"(PAIRSHIFT|SLACK|ANTHROPIC|OPENAI)_[A-Z0-9_]+")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def pairshift_services() -> dict[str, dict[str, Any]]:
    """Services built from this repository's Dockerfile (entrypoint `pairshift`)."""
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if "build" in svc or str(svc.get("image", "")).startswith("pairshift")
    }


def example_names() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def env_names_read_by_code() -> set[str]:
    """PAIRSHIFT_* settings fields, plus every env-like string constant in the package (provider keys and base
    URLs, Slack's names, PAIRSHIFT_USER/DEBUG): the names the code can read."""
    names = {f"{Settings.model_config['env_prefix']}{field.upper()}" for field in Settings.model_fields}
    names |= set(SLACK_ENV_NAMES.values())
    for file in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and CODE_ENV_NAME.fullmatch(node.value)
            ):
                names.add(node.value)
    return names


def subcommand_path(argv: list[str]) -> list[str]:
    """Resolve ``pairshift ARGV`` through the CLI's click tree, parse its options; fail on unknowns."""
    cmd = typer.main.get_command(app)
    path, rest = ["pairshift"], list(argv)
    while hasattr(cmd, "commands"):  # a group: the next word must name one of its sub-commands
        if not rest or rest[0] not in cmd.commands:
            pytest.fail(
                f"`{' '.join(path + rest[:1])}` is not a pairshift command; "
                f"{' '.join(path)} has: {', '.join(sorted(cmd.commands))}"
            )
        path.append(rest.pop(0))
        cmd = cmd.commands[path[-1]]
    try:
        cmd.make_context(" ".join(path), rest)  # parses and type-checks the options, runs nothing
    except Exception as exc:  # noqa: BLE001 - click's usage errors: report them as the test's failure
        pytest.fail(f"`{' '.join(path + rest)}`: {exc}")
    return path


def inlined_secrets(services: dict[str, dict[str, Any]]) -> list[str]:
    """Every environment value that carries a secret instead of a ${VAR} reference."""
    problems = []
    for name, svc in services.items():
        for var, value in environment(svc).items():
            if SECRET_NAME.search(var) and not SECRET_REFERENCE.fullmatch(value):
                problems.append(f"{name}.{var}")
            url = URL_PASSWORD.search(value)
            if url and not SECRET_REFERENCE.fullmatch(url["password"]):
                problems.append(f"{name}.{var} (password in URL)")
        env_files = svc.get("env_file") or []
        for f in [env_files] if isinstance(env_files, str) else env_files:
            if Path(str(f)).name != ".env":
                problems.append(f"{name}.env_file {f} (secrets belong in the uncommitted .env)")
    return problems


def test_the_worker_and_the_api_run_real_pairshift_subcommands():
    services = pairshift_services()
    paths = {
        name: subcommand_path([str(a) for a in svc.get("command") or []]) for name, svc in services.items()
    }
    assert paths["worker"] == ["pairshift", "worker"]
    assert paths["api"] == ["pairshift", "api"]
    assert services["api"]["command"][services["api"]["command"].index("--host") + 1] == "0.0.0.0", (
        "the API must listen beyond the container's loopback"
    )


def test_a_wrong_subcommand_or_option_is_caught():
    with pytest.raises(pytest.fail.Exception, match="not a pairshift command"):
        subcommand_path(["wrker"])
    with pytest.raises(pytest.fail.Exception, match="--hots"):
        subcommand_path(["api", "--hots", "0.0.0.0"])


def test_pairshift_services_set_only_variables_the_code_reads():
    known = env_names_read_by_code()
    assert {
        "PAIRSHIFT_DATABASE_URL",
        "PAIRSHIFT_TEMPORAL_ADDRESS",
        "SLACK_BOT_TOKEN",
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
    } <= known, "the scan of the code found too little to judge by"
    for name, svc in pairshift_services().items():
        unknown = sorted(set(environment(svc)) - known)
        assert not unknown, f"service {name} sets {unknown}, which no pairshift code reads"
        assert "PAIRSHIFT_DATABASE_URL" in environment(svc), (
            f"service {name} would use a container-local SQLite"
        )


def test_no_secret_is_inlined_in_the_compose_file():
    assert inlined_secrets(compose()["services"]) == []


def test_the_secret_check_catches_inlined_values():
    bad = {
        "svc": {
            "environment": {
                "SLACK_BOT_TOKEN": "xoxb-123",
                "OPENAI_API_KEY": "${OPENAI_API_KEY:-sk-1}",
                "PAIRSHIFT_DATABASE_URL": "postgresql://u:hunter2@db/x",
            },
            "env_file": ["secrets.env"],
        }
    }
    assert len(inlined_secrets(bad)) == 4


def test_env_example_names_every_variable_and_holds_no_value():
    names = example_names()
    referenced = set(REFERENCE.findall(COMPOSE.read_text()))
    assert referenced - set(names) == set(), "add these to .env.example"
    assert {k: v for k, v in names.items() if v} == {}, ".env.example holds names only"


def test_the_image_runs_pairshift_as_a_non_root_user():
    lines = [
        ln.strip()
        for ln in (REPO / "Dockerfile").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the last USER must not be root"
    assert 'ENTRYPOINT ["pairshift"]' in lines


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found:
        return found
    if in_ci():
        pytest.fail("docker-compose is missing under CI: .ci/run must `apt-get install -y docker-compose`")
    pytest.skip(
        "docker-compose is missing (apt-get install -y docker-compose); set CI=true to make this a failure"
    )


def run_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    # The operator's own environment must not fill in what the env file leaves out.
    env = {k: v for k, v in os.environ.items() if k not in example_names()}
    return subprocess.run(
        [docker_compose(), "-f", str(COMPOSE), "--env-file", str(env_file), "config", "-q"],
        cwd=env_file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_compose_config_accepts_the_file(tmp_path: Path):
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", COMPOSE.read_text()))
    env_file = tmp_path / "ci.env"
    env_file.write_text(
        "".join(f"{n}={'ci-placeholder' if n in required else ''}\n" for n in example_names())
    )
    done = run_config(env_file)
    assert done.returncode == 0, done.stderr


def test_docker_compose_config_refuses_to_run_without_the_database_password(tmp_path: Path):
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    done = run_config(env_file)
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr, done.stderr


def test_the_api_holds_no_provider_key_and_the_workers_do():
    services = pairshift_services()
    keys = {"ANTHROPIC_API_KEY", "OPENAI_API_KEY"}
    assert not [v for v in environment(services["api"]) if v.endswith("_API_KEY")], (
        "the API calls no provider"
    )
    assert keys <= set(environment(services["worker"]))
    for name, svc in services.items():
        if name != "worker":
            assert not keys & set(environment(svc)), f"{name} gets provider keys"


def test_the_registry_and_temporal_have_postgres_roles_of_their_own():
    services = compose()["services"]
    pg, temporal = environment(services["postgres"]), environment(services["temporal"])
    url = environment(pairshift_services()["api"])["PAIRSHIFT_DATABASE_URL"]
    registry_user = re.match(r"postgresql://([^:]+):", url).group(1)
    superuser = pg["POSTGRES_USER"]
    assert len({registry_user, temporal["POSTGRES_USER"], superuser}) == 3, (
        registry_user,
        temporal,
        superuser,
    )
    secrets = [
        REFERENCE.search(url.split("@")[0]).group(1),
        REFERENCE.search(temporal["POSTGRES_PWD"]).group(1),
        REFERENCE.search(pg["POSTGRES_PASSWORD"]).group(1),
    ]
    assert len(set(secrets)) == 3, f"one password shared between roles: {secrets}"
    assert temporal.get("SKIP_DB_CREATE") == "true", "the Temporal role may not create databases"
    init = "./deploy/postgres-init.sh:/docker-entrypoint-initdb.d/10-roles.sh:ro"
    assert init in services["postgres"]["volumes"]
    script = (REPO / "deploy" / "postgres-init.sh").read_text()
    for role in (registry_user, temporal["POSTGRES_USER"]):
        assert re.search(rf"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'", script)
    assert "REVOKE ALL ON DATABASE pairshift FROM PUBLIC" in script
    assert {"REGISTRY_DB_PASSWORD", "TEMPORAL_DB_PASSWORD"} <= set(environment(services["postgres"]))
