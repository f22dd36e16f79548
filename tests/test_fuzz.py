"""Fuzzing as tests (issue 15, Build 9), on small budgets so the suite stays quick; `make bench` runs the same
fuzzers on larger ones and writes the counts to bench/results/security.md (bench/security_bench.py).

- schemathesis over `pairshift api`'s OpenAPI schema, every route, without a token, with a token of the wrong
  scope and with an admin token: no 5xx, no exception out of the app;
- hypothesis over `pairshift apply`: every mutated config is applied (exit 0) or refused with one line (exit
  2), never a traceback, and a refusal leaves the registry's dump unchanged;
- `/slack/interactions`, signed and unsigned: no 5xx, every unsigned request 401 and never an audit row."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import api_token, bearer, dump_registry
from fastapi.testclient import TestClient
from fuzz_support import fuzz_api, fuzz_config_apply, fuzz_slack
from migration_harness import small_examples
from pydantic import SecretStr
from sqlalchemy import func, select
from test_router_support import apply_example

from pairshift.api import create_app
from pairshift.registry import open_registry
from pairshift.registry.models import AuditEvent
from pairshift.slack import SlackSettings
from pairshift.slack.interactions import InteractionService, interactions_router

SECRET = "fuzz-signing-secret"


def api_app(registry):
    """`pairshift api` as served: every route, the Slack route mounted, no Temporal behind it."""

    async def no_temporal():
        raise RuntimeError("no Temporal in the fuzz")

    service = InteractionService(
        registry=registry,
        temporal_client_factory=no_temporal,
        settings_factory=lambda: SlackSettings(
            signing_secret=SecretStr(SECRET), api_url="http://127.0.0.1:1/"
        ),
    )
    return create_app(registry, extra_routers=[interactions_router(service)], observe_rows_per_minute=0)


def audit_rows(registry) -> int:
    with registry.session() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


@pytest.fixture
def served(sqlite_registry):
    apply_example(sqlite_registry)
    app = api_app(sqlite_registry)
    with TestClient(app, raise_server_exceptions=True):
        yield app, sqlite_registry


def test_schemathesis_over_every_route_with_and_without_tokens_finds_no_server_error(served):
    app, registry = served
    callers = {
        "no token": {},
        "wrong scope": bearer(api_token(registry, "resolve")),
        "admin": bearer(api_token(registry, "admin")),
    }
    tallies = fuzz_api(app, callers, examples=12)
    for tally in tallies.values():
        assert tally.findings == [], tally.summary() + "\n" + "\n".join(tally.findings[:5])
    assert tallies["no token"].statuses[401] > 0 and tallies["wrong scope"].statuses[403] > 0
    assert (
        sum(tallies["admin"].statuses.values()) == tallies["admin"].sent >= 7 * 5
    )  # every route, many cases


def test_hypothesis_over_config_apply_finds_no_traceback_and_no_half_apply(
    pairshift_env, cli, tmp_path: Path
):
    folder = small_examples(tmp_path / "config", cases=5)
    assert cli("apply", "-f", str(folder)).code == 0
    tally = fuzz_config_apply(
        folder,
        apply=lambda f: cli("apply", "-f", str(f)).code,
        dump=lambda: dump_registry(open_registry()),
        examples=25,
    )
    assert tally.findings == [], tally.summary() + "\n" + "\n".join(tally.findings[:5])
    assert tally.statuses["refused"] > 0


def test_slack_interactions_fuzz_signed_and_unsigned(served):
    app, registry = served
    client = TestClient(app, raise_server_exceptions=True)
    tallies = fuzz_slack(
        lambda body, headers: client.post("/slack/interactions", content=body, headers=headers),
        SECRET,
        audit_rows=lambda: audit_rows(registry),
        examples=80,
    )
    for tally in tallies.values():
        assert tally.findings == [], tally.summary() + "\n" + "\n".join(tally.findings[:5])
    assert tallies["signed"].sent > 10 and tallies["unsigned"].sent > 10
