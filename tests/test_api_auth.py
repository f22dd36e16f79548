"""The API's trust boundary: bearer tokens and scopes on every route, body limits read no further than the
limit, per-token rate limits, observations that must agree with the split, `pairshift tokens`, `--no-auth`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import api_token, bearer, dump_registry
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from test_router_support import (
    ACTIVE_PAIR,
    CANDIDATE_PAIR,
    DEPLOYMENT,
    MIGRATION,
    apply_example,
    move_split,
    obs,
)

from pairshift.api import create_app
from pairshift.observations import BatchRejected, ObservationIn
from pairshift.observations.split_check import GRACE, check_against_split
from pairshift.registry.models import ApiToken, Observation
from pairshift.router import bucket

ROUTES = [  # (method, path, scope)
    ("GET", f"/v1/deployments/{DEPLOYMENT}/resolve?unit=u1", "resolve"),
    ("POST", "/v1/observations", "observe"),
    ("POST", f"/v1/deployments/{DEPLOYMENT}/complete", "complete"),
    ("GET", "/v1/migrations", "read"),
    ("GET", f"/v1/migrations/{MIGRATION}", "read"),
    ("GET", "/reports/nope", "read"),
]


def routed(unit: str, percent: float = 20, migration: str | None = MIGRATION, **kw: Any) -> dict[str, Any]:
    variant = "candidate" if bucket(migration, unit) < round(percent * 100) else "control"
    pair = CANDIDATE_PAIR if variant == "candidate" else ACTIVE_PAIR
    return obs(unit=unit, variant=variant, pair=pair, at=datetime.now(UTC).isoformat()) | kw


@pytest.fixture
def canary(sqlite_registry):
    apply_example(sqlite_registry)
    move_split(sqlite_registry, 20)
    return sqlite_registry


@pytest.fixture
def app(canary):
    app = create_app(canary)
    with TestClient(app, raise_server_exceptions=False):
        yield app


def stored(registry) -> int:
    with registry.session() as s:
        return s.scalar(select(func.count()).select_from(Observation))


def call(c: TestClient, method: str, path: str, **kw: Any) -> httpx.Response:
    body = {"observations": [routed("u1")]} if method == "POST" else None
    if path.endswith("/complete"):  # each allowed completion records its observation
        body = {"unit": "u1", "variables": {"customer_tier": "gold", "ticket_body": "refund please"}}
    return c.request(method, path, json=body, **kw)


@pytest.mark.parametrize("method, path, scope", ROUTES)
def test_every_route_needs_a_token_with_its_scope(app, canary, method, path, scope):
    c = TestClient(app, raise_server_exceptions=False)
    r = call(c, method, path)
    assert (
        r.status_code == 401 and "Bearer" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
    )
    r = call(c, method, path, headers=bearer("ps_" + "x" * 43))
    assert r.status_code == 401 and "invalid or revoked" in r.json()["error"]
    other = "observe" if scope != "observe" else "read"
    r = call(c, method, path, headers=bearer(api_token(canary, other)))
    assert r.status_code == 403 and f"lacks the {scope!r} scope" in r.json()["error"]
    for allowed in (scope, "admin"):
        r = call(c, method, path, headers=bearer(api_token(canary, allowed)))
        assert r.status_code not in (401, 403), r.text
    app.state.pairshift.flush_observations()  # /complete records through the writer
    assert stored(canary) == (2 if method == "POST" else 0)  # the two allowed POSTs only


def test_health_and_the_schema_need_no_token(app):
    c = TestClient(app)
    assert c.get("/healthz").status_code == 200
    schema = c.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_the_forged_batch_of_the_review_is_refused_without_a_token_and_with_the_wrong_scope(app, canary):
    """2,000 rows, candidate all errors in the split's 1:4 ratio: the review's forced rollback."""
    rows = [
        obs(unit=f"fake-{i}", variant="candidate" if i % 5 == 0 else "control", outcome="error")
        | ({"pair": CANDIDATE_PAIR} if i % 5 == 0 else {})
        for i in range(2_000)
    ]
    c = TestClient(app, raise_server_exceptions=False)
    assert c.post("/v1/observations", json={"observations": rows}).status_code == 401
    r = c.post("/v1/observations", json={"observations": rows}, headers=bearer(api_token(canary, "read")))
    assert r.status_code == 403
    r = c.post("/v1/observations", json={"observations": rows}, headers=bearer(api_token(canary, "observe")))
    assert r.status_code == 422  # labelled by the attacker, not by the split, and dated 2026-03-01
    assert stored(canary) == 0


def test_an_observe_token_with_rows_that_match_the_split_is_accepted(app, canary):
    c = TestClient(app, headers=bearer(api_token(canary, "observe")))
    rows = [routed(f"user-{i}") for i in range(200)]
    assert {r["variant"] for r in rows} == {"control", "candidate"}
    r = c.post("/v1/observations", json={"observations": rows})
    assert r.status_code == 200 and r.json() == {"accepted": 200}


def test_a_row_whose_variant_disagrees_with_its_bucket_is_refused_with_its_index(app, canary):
    c = TestClient(app, raise_server_exceptions=False, headers=bearer(api_token(canary, "observe")))
    rows = [routed(f"user-{i}") for i in range(10)]
    flipped = "control" if rows[6]["variant"] == "candidate" else "candidate"
    rows[6] = rows[6] | {"variant": flipped}
    r = c.post("/v1/observations", json={"observations": rows})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["index"] == 6 and r.json()["detail"][0]["field"] in ("variant", "pair")
    assert "observation 6" in r.json()["error"] and stored(canary) == 0


def test_the_previous_split_is_accepted_for_a_grace_window_only(canary):
    before = [ObservationIn.model_validate(routed(f"user-{i}", percent=20)) for i in range(400)]
    move_split(canary, 50)
    moved = [o for o in before if o.variant != routed(o.unit, percent=50)["variant"]]
    assert moved  # some units went from control to candidate
    with canary.session() as s:
        check_against_split(s, before)  # just after the change: routed by the split it replaced
        later = datetime.now(UTC) + GRACE + timedelta(seconds=1)
        with pytest.raises(BatchRejected) as refused:
            check_against_split(s, [o.model_copy(update={"at": later}) for o in before], now=later)
    assert refused.value.total_bad == len(moved)


def test_a_row_carrying_its_percent_is_checked_against_that_split_only(canary):
    """``percent`` (what resolve answered) names the split that routed the row: the live one, or the one it
    replaced within the grace; a percent neither had, or a variant that split did not give, is refused."""
    before = [ObservationIn.model_validate(routed(f"user-{i}", percent=20)) for i in range(400)]
    before = [o.model_copy(update={"percent": 20.0}) for o in before]
    move_split(canary, 50)
    moved = [o for o in before if o.variant != routed(o.unit, percent=50)["variant"]]
    assert moved
    with canary.session() as s:
        check_against_split(s, before)  # the split that routed them, within the grace
        with pytest.raises(BatchRejected, match="observation 0 field percent: percent 35 is neither"):
            check_against_split(s, [before[0].model_copy(update={"percent": 35.0})])
        with pytest.raises(BatchRejected) as refused:  # routed at 20%, claiming the 50% split
            check_against_split(s, [o.model_copy(update={"percent": 50.0}) for o in before])
    assert refused.value.total_bad == len(moved)


@pytest.mark.parametrize("at", ["9999-01-01T00:00:00Z", "2020-01-01T00:00:00Z"])
def test_at_outside_the_window_is_refused(canary, at):
    with canary.session() as s, pytest.raises(BatchRejected, match="observation 0 field at"):
        check_against_split(s, [ObservationIn.model_validate(routed("u1", at=at))])


def test_observations_are_rate_limited_per_token(canary):
    app = create_app(canary, observe_rows_per_minute=100)
    one, two = api_token(canary, "observe"), api_token(canary, "observe")
    with TestClient(app, raise_server_exceptions=False) as c:
        rows = {"observations": [routed(f"user-{i}") for i in range(60)]}
        assert c.post("/v1/observations", json=rows, headers=bearer(one)).status_code == 200
        r = c.post("/v1/observations", json=rows, headers=bearer(one))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert c.post("/v1/observations", json=rows, headers=bearer(two)).status_code == 200  # its own bucket


async def test_an_oversized_body_is_refused_before_it_is_read_in_full(canary):
    app = create_app(canary, max_body_bytes=1_000_000)
    token = api_token(canary, "observe")
    sent = 0

    async def chunks():  # 200 MB offered in 64 KB chunks, without a Content-Length
        nonlocal sent
        for _ in range(3_200):
            sent += 1
            yield b"x" * 65_536

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=bearer(token)) as c:
        r = await c.post("/v1/observations", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "over the limit of 1,000,000 bytes" in r.json()["error"]
        assert sent <= 17, sent  # 1 MB / 64 KB = 16 chunks, then the limit is crossed
        big = b"[" + b" " * 2_000_000 + b"]"
        r = await c.post("/v1/observations", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        slack = await c.post("/slack/interactions", content=b"payload=" + b"x" * 70_000)
        assert slack.status_code == 413  # Slack's route is capped at 64 KB


def test_tokens_cli_creates_once_lists_and_revokes(cli, pairshift_env):
    from pairshift.registry import open_registry
    from pairshift.settings import get_settings

    r = cli("tokens", "create", "app-1", "--scopes", "observe,resolve", "--json")
    assert r.code == 0, r.err
    new = r.json()
    assert set(new) == {"name", "token", "scopes"} and new["scopes"] == ["resolve", "observe"]
    reg = open_registry(get_settings().registry_url)
    assert new["token"] not in dump_registry(reg)  # only its hash is stored
    with reg.session() as s:
        assert s.get(ApiToken, "app-1").token_hash != new["token"]
    assert cli("tokens", "create", "app-1", "--scopes", "read").code == 2  # the name is taken
    assert cli("tokens", "create", "app-2", "--scopes", "read,root").code == 2  # unknown scope
    listed = cli("tokens", "list", "--json").json()
    assert [t["name"] for t in listed] == ["app-1"] and "token" not in listed[0]
    apply_example(reg)
    app = create_app(reg)
    with TestClient(app, raise_server_exceptions=False, headers=bearer(new["token"])) as c:
        assert c.get(f"/v1/deployments/{DEPLOYMENT}/resolve", params={"unit": "u"}).status_code == 200
        assert cli("tokens", "revoke", "app-1").code == 0
        app.state.pairshift.token_cache.ttl_s = 0  # revocation reaches replicas within the cache's TTL
        r = c.get(f"/v1/deployments/{DEPLOYMENT}/resolve", params={"unit": "u"})
        assert r.status_code == 401
    assert cli("tokens", "revoke", "nope").code == 2


def test_no_auth_is_for_loopback_only_and_says_so(cli, pairshift_env, monkeypatch):
    import uvicorn

    served: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append((app, kw)))
    monkeypatch.setenv("PAIRSHIFT_DATABASE_URL", "postgresql://registry:hunter2@127.0.0.1:1/pairshift")
    from pairshift.settings import get_settings

    get_settings.cache_clear()
    r = cli("api", "--no-auth", "--host", "0.0.0.0", "--no-live-status")
    assert r.code == 2 and "loopback" in r.err and not served
    r = cli("api", "--no-auth", "--host", "127.0.0.1", "--no-live-status")
    assert r.code == 0 and "authentication OFF" in r.out
    assert "hunter2" not in r.out + r.err and "registry:***@127.0.0.1" in r.out
    r = cli("api", "--host", "::1", "--no-live-status")
    assert r.code == 0 and "authentication OFF" not in r.out
    no_auth_app = served[0][0]
    assert TestClient(no_auth_app).get("/openapi.json").status_code == 200
