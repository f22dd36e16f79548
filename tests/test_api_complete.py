"""POST /v1/deployments/{name}/complete: the answer's shape, sticky routing, provider failures answered
502/503/504 naming the pair, and an observation recorded whatever happened (as Router.complete)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import api_token, bearer
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_router_support import ACTIVE_PAIR, CANDIDATE_PAIR, DEPLOYMENT, apply_example, set_split

from pairshift.api import create_app
from pairshift.observations import hash_unit
from pairshift.registry.models import Deployment, Model, Observation
from pairshift.router import bucket

VARIABLES = {"customer_tier": "gold", "ticket_body": "I was charged twice, refund please"}
PATH = f"/v1/deployments/{DEPLOYMENT}/complete"


@pytest.fixture
def registry(sqlite_registry):
    return apply_example(sqlite_registry)


def _client(registry, scope: str = "complete") -> TestClient:
    token = api_token(registry, scope)
    return TestClient(create_app(registry), raise_server_exceptions=False, headers=bearer(token))


def observations(registry) -> list[Observation]:
    with registry.session() as s:
        return list(s.scalars(select(Observation).order_by(Observation.id)))


def serve_from_http_sim(registry, sim, model: str = "gpt-4o-2024-08-06", **rules: Any) -> str:
    """Point the deployment's active pair at ``model`` on the HTTP sim server (OpenAI wire)."""
    with registry.session() as s:
        s.add(Model(id=model, provider="openai", base_url=sim.openai_base_url, request_rules=rules or {}))
        dep = s.get(Deployment, DEPLOYMENT)
        dep.active_model = model
        s.add(dep)
    return f"support-triage@1+{model}"


def test_complete_answers_the_wire_shape_and_records_the_call(registry):
    set_split(registry, 50)
    with _client(registry) as c:
        answers = {
            u: c.post(PATH, json={"unit": u, "variables": VARIABLES}) for u in ("u1", "u2", "u3", "u4")
        }
    assert all(r.status_code == 200 for r in answers.values()), {u: r.text for u, r in answers.items()}
    for unit, r in answers.items():
        body = r.json()
        candidate = bucket("migration-support-triage", unit) < 5_000
        assert body["pair"] == (CANDIDATE_PAIR if candidate else ACTIVE_PAIR)
        assert body["variant"] == ("candidate" if candidate else "control")
        assert set(body) == {
            "output", "deployment", "pair", "variant", "model", "resolved_model", "usage", "cost_usd",
            "latency_ms", "fallback_from",
        }  # fmt: skip
        assert set(body["usage"]) == {"input_tokens", "output_tokens", "cached_input_tokens"}
        assert body["fallback_from"] is None and body["deployment"] == DEPLOYMENT
        assert '"team"' in body["output"] and body["usage"]["output_tokens"] > 0
    rows = observations(registry)
    assert sorted(r.unit for r in rows) == sorted(hash_unit(u) for u in answers)
    assert {r.outcome for r in rows} == {"ok"}
    by_unit = {r.unit: r for r in rows}
    for unit, r in answers.items():
        row = by_unit[hash_unit(unit)]
        assert (row.pair, row.resolved_model) == (r.json()["pair"], r.json()["resolved_model"])


def test_complete_needs_the_complete_scope(registry):
    with _client(registry, scope="resolve") as c:
        r = c.post(PATH, json={"unit": "u1", "variables": VARIABLES})
    assert r.status_code == 403 and "complete" in r.json()["error"]
    assert observations(registry) == []


@pytest.mark.parametrize(
    ("body", "status", "said"),
    [
        ({"variables": VARIABLES}, 422, "unit"),
        ({"unit": "", "variables": VARIABLES}, 422, "unit"),
        ({"unit": "u1", "variables": [1]}, 422, "variables"),
        ({"unit": "u1", "variables": VARIABLES, "extra": 1}, 422, "extra"),
    ],
)
def test_bad_bodies_answer_4xx_and_record_nothing(registry, body, status, said):
    with _client(registry) as c:
        r = c.post(PATH, json=body)
    assert r.status_code == status and said in r.json()["error"]
    assert observations(registry) == []


def test_unknown_deployment_is_404(registry):
    with _client(registry) as c:
        r = c.post("/v1/deployments/nope/complete", json={"unit": "u1", "variables": VARIABLES})
    assert r.status_code == 404 and "nope" in r.json()["error"]


def test_a_missing_variable_is_422_naming_the_pair_and_recorded_as_an_error(registry):
    with _client(registry) as c:
        r = c.post(PATH, json={"unit": "u1", "variables": {"customer_tier": "gold"}})
    assert r.status_code == 422
    assert ACTIVE_PAIR in r.json()["error"] and "ticket_body" in r.json()["error"]
    assert [o.outcome for o in observations(registry)] == ["error"]


@pytest.mark.parametrize(
    ("fault", "status", "kind"),
    [("retired", 502, "model_not_found"), ("500", 503, "unavailable"), ("timeout", 504, "timeout")],
)
def test_provider_failures_answer_502_503_504_naming_the_pair(registry, sim_server, fault, status, kind):
    pair = serve_from_http_sim(registry, sim_server, max_attempts=1, timeout_s=0.3)
    if fault == "retired":
        sim_server.retire("gpt-4o-2024-08-06")
    else:
        sim_server.settings(faults={"*": {"timeout_s": 2.0}})
        sim_server.script_faults("*", fault)
    with _client(registry) as c:
        r = c.post(PATH, json={"unit": "u1", "variables": VARIABLES})
    assert r.status_code == status, r.text
    body = r.json()
    assert pair in body["error"]
    assert body["detail"][0]["pair"] == pair and body["detail"][0]["kind"] == kind
    rows = observations(registry)
    assert [(o.pair, o.outcome) for o in rows] == [(pair, "error")]


def test_router_complete_and_the_route_give_the_same_answer(registry):
    """One implementation: the same unit gets the same pair and output both ways."""
    import asyncio

    from pairshift.router import Router

    set_split(registry, 50)
    with Router(DEPLOYMENT, registry, refresh_s=0) as router:
        direct = asyncio.run(router.complete("unit-7", VARIABLES))
    with _client(registry) as c:
        over_http = c.post(PATH, json={"unit": "unit-7", "variables": VARIABLES}).json()
    assert (direct.assignment.pair, direct.output) == (over_http["pair"], over_http["output"])


def test_complete_runs_the_deployments_online_checks(registry):
    with registry.session() as s:
        dep = s.get(Deployment, DEPLOYMENT)
        dep.online_checks = [
            {"type": "is-json"},
            {"type": "not-icontains", "value": "team", "metric": "no-team"},
        ]
        s.add(dep)
    with _client(registry) as c:
        r = c.post(PATH, json={"unit": "u1", "variables": VARIABLES})
    assert r.status_code == 200 and '"team"' in r.json()["output"]  # the user is answered all the same
    (row,) = observations(registry)
    assert row.outcome == "invalid" and row.detail.startswith("online check no-team: ")
