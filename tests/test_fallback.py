"""The fallback chain: refused at apply when it repeats the primary model or names a retired one; tried in
order when the assigned pair's model is gone, unavailable or slow; recorded as outcome `fallback` (an error of
the pair that failed for the gates); and the fallback-rate notice."""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES, api_token, bearer
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_router_support import ACTIVE_PAIR, DEPLOYMENT, apply_example

from pairshift.api import create_app
from pairshift.apply import apply_path
from pairshift.completion import FallbackWindow, fallback_notice_due
from pairshift.config import ConfigError
from pairshift.observations import ObservationIn, ObservationWriter, store_batch, variant_stats
from pairshift.registry.models import Deployment, Model, Observation, UnitAggregate
from pairshift.router import Router

VARIABLES = {"customer_tier": "gold", "ticket_body": "I was charged twice, refund please"}
PATH = f"/v1/deployments/{DEPLOYMENT}/complete"
GPT = "gpt-4o-2024-08-06"  # the HTTP sim's OpenAI mirror of sim-classic
CLAUDE = "claude-sonnet-4-20250514"  # the HTTP sim's Anthropic mirror of sim-classic


# ---- apply


def _config(tmp_path: Path, fallback: list[str], *, extra_models: list[dict] | None = None) -> Path:
    dst = tmp_path / "config"
    shutil.copytree(EXAMPLES, dst, ignore=shutil.ignore_patterns("*.py"))
    cfg = yaml.safe_load((dst / "pairshift.yaml").read_text())
    cfg["models"] += extra_models or []
    cfg["deployments"][0]["fallback"] = fallback
    (dst / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


RETIRED = {"id": "sim-old-2023", "provider": "sim", "retires_on": "2024-01-01"}


@pytest.mark.parametrize(
    ("fallback", "said"),
    [
        (["sim-classic-2024-06"], "repeats the primary model"),
        (["support-triage@2+sim-classic-2024-06"], "repeats the primary model"),
        (["sim-fresh-2025-09", "support-triage@2+sim-fresh-2025-09"], "named earlier in the chain"),
        (["sim-nope"], "unknown model sim-nope"),
        (["sim-old-2023"], "retired on 2024-01-01"),
        (["support-triage@9+sim-fresh-2025-09"], "unknown prompt version support-triage@9"),
    ],
)
def test_a_bad_chain_is_refused_at_apply_and_nothing_is_written(sqlite_registry, tmp_path, fallback, said):
    with pytest.raises(ConfigError, match=said) as err:
        apply_path(sqlite_registry, _config(tmp_path, fallback, extra_models=[RETIRED]), by="test")
    assert "fallback[" in str(err.value)
    with sqlite_registry.session() as s:
        assert s.get(Deployment, DEPLOYMENT) is None


def test_a_good_chain_is_stored_and_changing_it_is_an_update(sqlite_registry, tmp_path):
    chain = ["sim-fresh-2025-09", "support-triage@2+sim-literal-2025-11"]
    apply_path(sqlite_registry, _config(tmp_path, chain), by="test")
    with sqlite_registry.session() as s:
        assert s.get(Deployment, DEPLOYMENT).fallback == chain
    shutil.rmtree(tmp_path / "config")
    result = apply_path(sqlite_registry, _config(tmp_path, ["sim-literal-2025-11"]), by="test")
    assert any("updated deployment support-triage (fallback)" in c for c in result.changes)
    with Router(DEPLOYMENT, sqlite_registry, refresh_s=0) as router:
        assert router.split.fallback == ((None, "sim-literal-2025-11"),)


# ---- serving


@pytest.fixture
def served(sqlite_registry, sim_server):
    """The example deployment on the HTTP sim's OpenAI mirror, with a chain: Claude (HTTP sim), then the
    in-process sim."""
    apply_example(sqlite_registry)
    with sqlite_registry.session() as s:
        s.add(
            Model(
                id=GPT,
                provider="openai",
                base_url=sim_server.openai_base_url,
                request_rules={"max_attempts": 1},
            )
        )
        s.add(
            Model(
                id=CLAUDE,
                provider="anthropic",
                base_url=sim_server.base_url,
                request_rules={"max_attempts": 1},
            )
        )
        dep = s.get(Deployment, DEPLOYMENT)
        dep.active_model = GPT
        dep.fallback = [CLAUDE, "sim-fresh-2025-09"]
        s.add(dep)
    return sqlite_registry


def _post(registry, n: int = 1) -> list:
    token = api_token(registry, "complete")
    with TestClient(create_app(registry), raise_server_exceptions=False, headers=bearer(token)) as c:
        return [c.post(PATH, json={"unit": f"u{i}", "variables": VARIABLES}) for i in range(n)]


def _rows(registry) -> list[Observation]:
    with registry.session() as s:
        return list(s.scalars(select(Observation).order_by(Observation.id)))


def test_a_retired_model_is_answered_by_the_first_pair_of_the_chain_that_works(served, sim_server):
    sim_server.retire(GPT)
    (r,) = _post(served)
    assert r.status_code == 200, r.text
    body = r.json()
    failed = f"support-triage@1+{GPT}"
    assert body["fallback_from"] == failed and body["pair"] == f"support-triage@1+{CLAUDE}"
    assert body["resolved_model"] == CLAUDE and '"team"' in body["output"]
    (row,) = _rows(served)
    assert (row.pair, row.outcome, row.served_pair) == (failed, "fallback", f"support-triage@1+{CLAUDE}")
    assert row.resolved_model == CLAUDE and row.output_tokens > 0


def test_the_chain_is_tried_in_order(served, sim_server):
    sim_server.retire(GPT, CLAUDE)
    (r,) = _post(served)
    assert r.status_code == 200 and r.json()["pair"] == "support-triage@1+sim-fresh-2025-09"
    assert _rows(served)[0].served_pair == "support-triage@1+sim-fresh-2025-09"


@pytest.mark.parametrize("fault", ["500", "timeout"])
def test_an_unavailable_or_slow_model_falls_back(served, sim_server, fault):
    with served.session() as s:
        s.get(Model, GPT).request_rules = {"max_attempts": 1, "timeout_s": 0.3}
    sim_server.settings(faults={"*": {"timeout_s": 2.0}})
    sim_server.script_faults(GPT, fault)
    (r,) = _post(served)
    assert r.status_code == 200 and r.json()["fallback_from"] == f"support-triage@1+{GPT}"
    assert _rows(served)[0].outcome == "fallback"


def test_a_refused_request_is_not_sent_elsewhere(served, sim_server):
    """403: the key may not use the model; another model is no answer to a configuration error."""
    sim_server.settings(forbidden=[GPT])
    (r,) = _post(served)
    assert r.status_code == 502 and r.json()["detail"][0]["kind"] == "permission"
    assert sim_server.stats(CLAUDE).get("requests", 0) == 0
    assert [o.outcome for o in _rows(served)] == ["error"]


def test_when_the_whole_chain_fails_the_assigned_pairs_error_is_answered_and_recorded(served, sim_server):
    with served.session() as s:
        s.get(Deployment, DEPLOYMENT).fallback = [CLAUDE]
    sim_server.retire(GPT, CLAUDE)
    (r,) = _post(served)
    assert r.status_code == 502 and f"support-triage@1+{GPT}" in r.json()["error"]
    assert [(o.outcome, o.served_pair) for o in _rows(served)] == [("error", None)]


def test_router_complete_falls_back_too(served, sim_server):
    sim_server.retire(GPT)
    with Router(DEPLOYMENT, served, refresh_s=0) as router:
        result = asyncio.run(router.complete("u1", VARIABLES))
    assert result.completion.resolved_model == CLAUDE
    assert _rows(served)[0].outcome == "fallback"


# ---- the gates count a fallback as an error of the pair that failed


def test_a_fallback_is_an_error_of_the_failing_pair_in_the_stage_aggregates(sqlite_registry):
    from test_router_support import CANDIDATE_PAIR, MIGRATION, set_split

    apply_example(sqlite_registry)
    set_split(sqlite_registry, 50)
    rows = [
        ObservationIn(
            deployment=DEPLOYMENT,
            pair=CANDIDATE_PAIR,
            variant="candidate",
            unit=f"u{i}",
            latency_ms=900.0,
            input_tokens=1,
            output_tokens=1,
            cost_usd=0.0,
            outcome="fallback" if i % 2 else "ok",
            served_pair=ACTIVE_PAIR if i % 2 else None,
            migration=MIGRATION,
        )
        for i in range(10)
    ]
    with sqlite_registry.session() as s:
        store_batch(s, rows)
    with sqlite_registry.session() as s:
        agg = list(s.scalars(select(UnitAggregate)))
        assert sum(a.errors for a in agg) == 5 and sum(a.calls for a in agg) == 10
        assert {a.first_latency_ms for a in agg if a.errors} == {
            None
        }  # a fallback's latency is not the pair's
        stats = variant_stats(s, DEPLOYMENT, MIGRATION, since=datetime(2000, 1, 1, tzinfo=UTC))
    assert (stats["candidate"].errors.y, stats["candidate"].errors.n) == (5, 10)


# ---- the fallback-rate notice (pure decision, then the window)


@pytest.mark.parametrize(
    ("calls", "fallbacks", "last_sent", "now", "due"),
    [
        (100, 2, None, 0, True),  # 2% > 1%
        (100, 1, None, 0, False),  # exactly 1%: not above
        (19, 19, None, 0, False),  # too few calls to speak of a rate
        (100, 50, 0.0, 3599.0, False),  # one notice an hour
        (100, 50, 0.0, 3600.0, True),
        (1000, 0, None, 0, False),
    ],
)
def test_fallback_notice_due(calls, fallbacks, last_sent, now, due):
    assert fallback_notice_due(calls, fallbacks, 0.01, last_sent, now) is due


def test_the_window_forgets_calls_older_than_an_hour():
    now = [0.0]
    window = FallbackWindow(clock=lambda: now[0])
    for _ in range(30):
        window.add(True)
    now[0] = 3600.0 + 60
    assert window.add(False) == (1, 0)


class Process:
    """One serving process: its own router of the deployment (its own writer), on a clock the test moves."""

    def __init__(self, registry, now: list[float]) -> None:
        self.router = Router(DEPLOYMENT, registry, refresh_s=0).start()
        self.router.fallbacks = FallbackWindow(clock=lambda: now[0])

    def send(self, n: int, first: int) -> None:
        async def many() -> None:
            for i in range(first, first + n):
                await self.router.complete(f"u{i}", VARIABLES)

        asyncio.run(many())
        self.router.writer.flush()
        if self.router.fallbacks.checking is not None:
            self.router.fallbacks.checking.join(10)


def test_the_notice_is_fleet_wide_once_an_hour(served, sim_server, caplog):
    """Two processes each serve 13 calls through the chain: neither alone reaches the 20 calls a rate needs,
    the fleet does (26 calls, all fallbacks): one notice goes out, from one process, and one only an hour."""
    sim_server.retire(GPT)
    now = [0.0]
    a, b = Process(served, now), Process(served, now)
    with caplog.at_level(logging.WARNING, logger="pairshift.notices"):
        a.send(12, 0)
        b.send(12, 100)
        now[0] += 61  # each process reads the fleet at most once a minute
        a.send(1, 200)
        b.send(1, 300)
        now[0] += 61
        a.send(1, 400)  # still within the hour of the one notice: claimed already
    a.router.close()
    b.router.close()
    sent = [r.getMessage() for r in caplog.records if "fallback_rate" in r.getMessage()]
    assert len(sent) == 1 and "support-triage" in sent[0] and "100.0%" in sent[0], sent
    with served.session() as s:
        assert s.get(Deployment, DEPLOYMENT).fallback_notice_at is not None


def test_a_router_without_a_registry_decides_from_its_own_calls(served, sim_server, caplog):
    sim_server.retire(GPT)
    with Router(DEPLOYMENT, served, refresh_s=0) as source:
        split = source.split
    writer = ObservationWriter(served)
    router = Router(DEPLOYMENT, loader=lambda: split, refresh_s=0, writer=writer)
    assert router.notice_registry() is None
    with caplog.at_level(logging.WARNING, logger="pairshift.notices"):
        with router:

            async def many() -> None:
                for i in range(25):
                    await router.complete(f"u{i}", VARIABLES)

            asyncio.run(many())
        _wait_for(lambda: any("fallback_rate" in r.getMessage() for r in caplog.records))
    writer.close()
    sent = [r.getMessage() for r in caplog.records if "fallback_rate" in r.getMessage()]
    assert len(sent) == 1 and "support-triage" in sent[0]


def _wait_for(condition, timeout_s: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
