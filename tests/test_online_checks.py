"""Online checks (issue 17 item 1): `online_checks:` on a deployment, reference-free assertions run on every
output Router.complete serves (the gateway's are in test_gateway.py); a failing output is recorded as outcome
`invalid` naming the failing check; checks that cannot run online are refused at apply, naming the check."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES
from sqlalchemy import select
from test_router_support import DEPLOYMENT

from pairshift.apply import apply_path
from pairshift.config import ConfigError
from pairshift.online_checks import OnlineCheckError, build, failure
from pairshift.registry.models import Deployment, Observation
from pairshift.router import Router

VARIABLES = {"customer_tier": "gold", "ticket_body": "I was charged twice, refund please"}


def config(tmp_path: Path, checks: list[dict]) -> Path:
    dst = tmp_path / "config"
    shutil.copytree(EXAMPLES, dst, ignore=shutil.ignore_patterns("*.py"), dirs_exist_ok=True)
    cfg = yaml.safe_load((dst / "pairshift.yaml").read_text())
    cfg["deployments"][0]["online_checks"] = checks
    (dst / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


def served(registry, n: int = 4) -> list[Observation]:
    async def send(router: Router) -> None:
        for i in range(n):
            await router.complete(f"user-{i}", VARIABLES)

    with Router(DEPLOYMENT, registry, refresh_s=0) as router:
        asyncio.run(send(router))
    with registry.session() as s:
        return list(s.scalars(select(Observation)))


def test_outputs_failing_a_check_are_invalid_naming_the_check(sqlite_registry, tmp_path):
    checks = [
        {"type": "is-json"},
        {"type": "contains-json", "value": {"type": "object", "required": ["severity", "team"]}},
        {
            "type": "not-icontains",
            "value": "billing",
            "metric": "no-billing",
        },  # sim-classic routes to billing
    ]
    apply_path(sqlite_registry, config(tmp_path, checks), by="test")
    with sqlite_registry.session() as s:
        assert s.get(Deployment, DEPLOYMENT).online_checks == checks
    rows = served(sqlite_registry)
    assert rows and {r.outcome for r in rows} == {"invalid"}
    assert all(r.detail.startswith("online check no-billing: ") for r in rows), rows[0].detail


def test_outputs_passing_every_check_are_ok(sqlite_registry, tmp_path):
    checks = [
        {"type": "is-json"},
        {"type": "regex", "value": "severity"},
        {"type": "not-contains", "value": "```"},
    ]
    apply_path(sqlite_registry, config(tmp_path, checks), by="test")
    rows = served(sqlite_registry)
    assert rows and {(r.outcome, r.detail) for r in rows} == {("ok", None)}


@pytest.mark.parametrize(
    "check, why",
    [
        ({"type": "llm-rubric", "value": "polite"}, "model-graded"),
        ({"type": "python", "value": "output == 'x'"}, "no code runs on the serving path"),
        ({"type": "latency", "threshold": 100}, "gates latency_p95 already"),
        ({"type": "no-such-check"}, "no-such-check"),
    ],
)
def test_checks_that_cannot_run_online_are_refused_at_apply(sqlite_registry, tmp_path, check, why):
    with pytest.raises((ConfigError, OnlineCheckError), match=why):
        apply_path(sqlite_registry, config(tmp_path, [{"type": "is-json"}, check]), by="test")
    with sqlite_registry.session() as s:
        assert s.get(Deployment, DEPLOYMENT) is None  # nothing of that apply was written


def test_the_first_failing_check_is_named():
    case = build([{"type": "starts-with", "value": "{"}, {"type": "is-json", "metric": "json"}])
    assert failure(case, '{"a": 1}') is None
    assert failure(case, "Sure! {").startswith("online check starts-with: ")
    assert failure(case, "{ not json").startswith("online check json: ")
    assert build([]) is None
