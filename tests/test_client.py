"""RemoteRouter: resolve, complete and record over `pairshift api`, as a Python app without the registry."""

from __future__ import annotations

import pytest
from conftest import api_token, bearer
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from test_router_support import DEPLOYMENT, MIGRATION, apply_example, set_split

from pairshift.api import create_app
from pairshift.client import RemoteError, RemoteRouter
from pairshift.observations import stage_stats
from pairshift.registry.models import Observation

VARIABLES = {"customer_tier": "gold", "ticket_body": "I was charged twice, refund please"}


def test_resolve_complete_and_record_over_http(sqlite_registry):
    apply_example(sqlite_registry)
    set_split(sqlite_registry, 50)
    token = api_token(sqlite_registry, "resolve", "complete", "observe")
    with TestClient(create_app(sqlite_registry), headers=bearer(token)) as http:
        router = RemoteRouter(DEPLOYMENT, http=http)
        a = router.resolve("unit-1")
        assert a.deployment == DEPLOYMENT and a.migration == MIGRATION and a.percent == 50.0
        answer = router.complete("unit-1", VARIABLES)
        assert answer["pair"] == a.pair and '"team"' in answer["output"]
        router.record("unit-2", router.resolve("unit-2"), latency_ms=120.0, output_tokens=3)
        # An assignment without a percent (built by hand, an older API's answer) sends none: inferred
        router.record("unit-1", a.model_copy(update={"percent": None}), latency_ms=90.0)
        with pytest.raises(RemoteError, match="ticket_body") as err:
            router.complete("unit-3", {"customer_tier": "gold"})
        assert err.value.status == 422
        http.app.state.pairshift.flush_observations()
    with sqlite_registry.session() as s:
        assert s.scalar(select(func.count()).select_from(Observation)) == 4
        stage = stage_stats(s, MIGRATION, 50.0)
        assert stage["control"].n + stage["candidate"].n == 4  # every call in the 50% stage


def test_a_missing_scope_is_a_remote_error(sqlite_registry):
    apply_example(sqlite_registry)
    token = api_token(sqlite_registry, "resolve")
    with TestClient(create_app(sqlite_registry), headers=bearer(token)) as http:
        with pytest.raises(RemoteError, match="complete") as err:
            RemoteRouter(DEPLOYMENT, http=http).complete("u", VARIABLES)
    assert err.value.status == 403
