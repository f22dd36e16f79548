"""The HTTP API: resolve, observations (garbage of many shapes answers 4xx JSON, never 500, stores nothing),
migrations with and without live status, health, OpenAPI, and the Slack extension point."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import api_token, bearer
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from test_router_support import (
    ACTIVE_PAIR,
    CANDIDATE_PAIR,
    DEPLOYMENT,
    MIGRATION,
    apply_example,
    obs,
    set_split,
)

from pairshift.api import create_app
from pairshift.registry.models import MigrationRow, Observation
from pairshift.router import bucket


def routed(unit: str = "u1", **kw: Any) -> dict[str, Any]:
    """An observation of ``unit`` on the variant and pair the live 50% split gives it, stamped now."""
    variant = "candidate" if bucket(MIGRATION, unit) < 5_000 else "control"
    pair = CANDIDATE_PAIR if variant == "candidate" else ACTIVE_PAIR
    return obs(unit=unit, variant=variant, pair=pair, at=datetime.now(UTC).isoformat()) | kw


@pytest.fixture
def client(sqlite_registry):
    apply_example(sqlite_registry)
    set_split(sqlite_registry, 50)
    token = api_token(sqlite_registry, "admin")
    # 10,001 observations are about 3 MB: over the default 1 MB body limit, which a test below checks.
    app = create_app(sqlite_registry, max_body_bytes=8_000_000)
    with TestClient(app, raise_server_exceptions=False, headers=bearer(token)) as c:
        yield c


def stored(client: TestClient) -> int:
    reg = client.app.state.pairshift.registry
    with reg.session() as s:
        return s.scalar(select(func.count()).select_from(Observation))


def test_resolve_answers_the_wire_shape_and_is_sticky(client):
    answers = [
        client.get(f"/v1/deployments/{DEPLOYMENT}/resolve", params={"unit": f"user-{i}"}) for i in range(40)
    ]
    assert all(r.status_code == 200 for r in answers)
    body = answers[0].json()
    # PRODUCT's shape, and the percent of the split that answered (an observation may carry it back)
    assert set(body) == {"deployment", "pair", "prompt", "model", "variant", "migration", "percent"}
    assert body["migration"] == MIGRATION and body["percent"] == 50.0
    assert {r.json()["variant"] for r in answers} == {"control", "candidate"}
    again = client.get(f"/v1/deployments/{DEPLOYMENT}/resolve", params={"unit": "user-0"}).json()
    assert again == body


def test_resolve_errors_name_the_problem(client):
    r = client.get("/v1/deployments/nope/resolve", params={"unit": "u"})
    assert r.status_code == 404 and "unknown deployment 'nope'" in r.json()["error"]
    r = client.get(f"/v1/deployments/{DEPLOYMENT}/resolve")
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "query.unit"


def test_a_good_batch_is_accepted(client):
    units = [f"u{i}" for i in range(20)]
    both = [next(u for u in units if routed(u)["variant"] == v) for v in ("control", "candidate")]
    batch = {"observations": [routed(both[0]), routed(both[1], score=1.0)]}
    r = client.post("/v1/observations", json=batch)
    assert r.status_code == 200 and r.json() == {"accepted": 2}
    assert stored(client) == 2


def _many(n: int) -> dict[str, Any]:
    return {"observations": [routed(f"u{i}") for i in range(n)]}


def _with_bad(index: int, **bad: Any) -> dict[str, Any]:
    items = [routed(f"u{i}") for i in range(4)]
    items[index] = routed(f"u{index}", **bad)
    return {"observations": items}


GARBAGE: list[tuple[str, Any, int, str]] = [
    ("not json", b"{observations: [", 400, "malformed JSON"),
    ("empty body", b"", 422, "body"),
    ("a list", [obs()], 422, "body"),
    ("a string", "hello", 422, "body"),
    ("wrong container", {"observations": "x"}, 422, "observations"),
    ("items not objects", {"observations": [1, 2]}, 422, "observation 0"),
    ("unknown top-level key", {"observations": [], "extra": 1}, 422, "extra"),
    ("bad variant", _with_bad(2, variant="treatment"), 422, "observation 2 field variant"),
    ("bad outcome", _with_bad(1, outcome="timeout"), 422, "observation 1 field outcome"),
    ("score above 1", _with_bad(3, score=1.5), 422, "observation 3 field score"),
    ("score a string", _with_bad(0, score="high"), 422, "observation 0 field score"),
    ("bad time", _with_bad(2, at="yesterday"), 422, "observation 2 field at"),
    ("negative tokens", _with_bad(1, input_tokens=-3), 422, "observation 1 field input_tokens"),
    ("unknown deployment", _with_bad(2, deployment="nope"), 422, "observation 2 field deployment"),
    ("unknown pair", _with_bad(1, pair="support-triage@9+x"), 422, "observation 1 field pair"),
    ("a year-9999 time", _with_bad(2, at="9999-01-01T00:00:00Z"), 422, "observation 2 field at"),
    ("a stale time", _with_bad(3, at="2020-01-01T00:00:00Z"), 422, "observation 3 field at"),
    ("another migration", _with_bad(0, migration="migration-other"), 422, "observation 0 field migration"),
    ("over 10,000", _many(10_001), 413, "at most 10,000"),  # (with the body limit raised, see fixture)
]


@pytest.mark.parametrize("body, status, said", [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_garbage_answers_4xx_json_naming_the_problem_and_stores_nothing(client, body, status, said):
    if isinstance(body, bytes):
        r = client.post("/v1/observations", content=body, headers={"content-type": "application/json"})
    else:
        r = client.post("/v1/observations", json=body)
    assert r.status_code == status, r.text
    payload = r.json()
    assert said in payload["error"] and isinstance(payload["detail"], list)
    assert stored(client) == 0


def test_item_errors_carry_the_index(client):
    r = client.post("/v1/observations", json=_with_bad(2, score=7))
    detail = r.json()["detail"]
    assert detail[0]["index"] == 2 and detail[0]["field"] == "score"


def _migration(registry, **kw: Any) -> None:
    row = MigrationRow(
        run_id=kw.get("run_id", "run-1"),
        workflow_id=MIGRATION,
        deployment=DEPLOYMENT,
        from_pair="a",
        to_pair=CANDIDATE_PAIR,
        reason="manual",
        requested_by="alice",
        phase=kw.get("phase", "canary"),
        started_at=kw.get("at", datetime.now(UTC)),
    )
    with registry.session() as s:
        s.add(row)


def test_migrations_list_and_one(client):
    reg = client.app.state.pairshift.registry
    _migration(reg, run_id="run-old", phase="rolled_back", at=datetime(2026, 1, 1, tzinfo=UTC))
    _migration(reg, run_id="run-new", phase="canary")
    listed = client.get("/v1/migrations").json()
    assert [m["run_id"] for m in listed] == ["run-new", "run-old"]
    assert {
        "id",
        "deployment",
        "phase",
        "reason",
        "from_pair",
        "to_pair",
        "requested_by",
        "started_at",
    } <= set(listed[0])
    one = client.get(f"/v1/migrations/{MIGRATION}").json()
    assert one["run_id"] == "run-new" and one["live"] is None  # no Temporal client configured
    assert client.get("/v1/migrations/run-old").json()["phase"] == "rolled_back"
    r = client.get("/v1/migrations/nope")
    assert r.status_code == 404 and "unknown migration" in r.json()["error"]


class _Handle:
    async def query(self, name: str) -> dict[str, Any]:
        assert name == "status"
        return {"phase": "canary", "stage": {"index": 1, "percent": 5}}


class _Client:
    def get_workflow_handle(self, workflow_id: str, run_id: str | None = None) -> _Handle:
        assert (workflow_id, run_id) == (MIGRATION, "run-1")
        return _Handle()


def test_live_status_comes_from_the_temporal_client_factory(sqlite_registry):
    apply_example(sqlite_registry)
    _migration(sqlite_registry)

    async def factory() -> _Client:
        return _Client()

    async def broken() -> _Client:
        raise ConnectionError("temporal down")

    auth = bearer(api_token(sqlite_registry, "read"))
    with TestClient(create_app(sqlite_registry, temporal_client_factory=factory), headers=auth) as c:
        assert c.get(f"/v1/migrations/{MIGRATION}").json()["live"]["stage"]["percent"] == 5
    with TestClient(create_app(sqlite_registry, temporal_client_factory=broken), headers=auth) as c:
        r = c.get(f"/v1/migrations/{MIGRATION}")
        assert r.status_code == 200 and "temporal down" in r.json()["live_error"]


def test_health_openapi_and_the_slack_extension_point(sqlite_registry):
    slack = APIRouter()

    @slack.post("/slack/interactions")
    def interactions() -> dict[str, bool]:
        return {"ok": True}

    with TestClient(create_app(sqlite_registry, extra_routers=[slack])) as c:
        health = c.get("/healthz").json()
        assert (health["ok"], health["registry"]) == (True, "ok")
        assert health["observations"] == {
            "written": 0,
            "dropped": 0,
            "rejected": 0,
            "pending": 0,
            "failed_flushes": 0,
        }
        paths = c.get("/openapi.json").json()["paths"]
        assert {
            "/v1/deployments/{name}/resolve",
            "/v1/observations",
            "/v1/migrations",
            "/v1/migrations/{migration_id}",
            "/healthz",
            "/slack/interactions",
        } <= set(paths)
        assert c.post("/slack/interactions").json() == {"ok": True}
        assert c.get("/no/such/route").json()["error"] == "Not Found"


def test_an_unreachable_registry_answers_503_not_500(tmp_path):
    from pairshift.registry.store import Registry

    folder = tmp_path / "db"
    gone = Registry(f"sqlite:///{folder / 'r.db'}")  # creates the folder and the database file...
    shutil.rmtree(folder)
    folder.write_text("")  # ...and the folder is now a file: the database cannot be opened
    with TestClient(create_app(gone), raise_server_exceptions=False, headers=bearer("ps_" + "x" * 43)) as c:
        r = c.get("/healthz")
        assert r.status_code == 503 and "registry unavailable" in r.json()["error"]
        r = c.post("/v1/observations", json={"observations": [obs()]})
        assert r.status_code == 503 and json.loads(r.text)["error"].startswith("registry unavailable")
