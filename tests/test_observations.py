"""Observation storage: all-or-nothing batches, hashed units, and the aggregates the canary gate reads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from test_router_support import (
    ACTIVE_PAIR,
    CANDIDATE_PAIR,
    DEPLOYMENT,
    MIGRATION,
    T0,
    apply_example,
    move_split,
    obs,
    set_split,
)

from pairshift.observations import (
    MAX_BATCH,
    BatchRejected,
    ObservationIn,
    hash_unit,
    stage_stats,
    store_batch,
    variant_stats,
    window_aggregates,
)
from pairshift.registry.models import Observation


def count(registry) -> int:
    with registry.session() as s:
        return s.scalar(select(func.count()).select_from(Observation))


@pytest.fixture
def canary(registry):
    apply_example(registry)
    set_split(registry, 20)
    return registry


def test_a_good_batch_is_stored_with_hashed_units_and_the_current_migration(canary):
    items = [
        obs(unit="alice"),
        obs(pair=CANDIDATE_PAIR, variant="candidate", unit="bob", score=0.5, at="2026-03-01T12:00:00"),
    ]  # naive time: taken as UTC
    with canary.session() as s:
        assert store_batch(s, items) == 2
    with canary.session() as s:
        rows = s.scalars(select(Observation).order_by(Observation.id)).all()
    assert [r.unit for r in rows] == [hash_unit("alice"), hash_unit("bob")]
    assert all(r.migration == MIGRATION for r in rows)
    assert rows[1].at == T0 and rows[1].score == 0.5


@pytest.mark.parametrize(
    "bad, field",
    [
        (obs(deployment="nope"), "deployment"),
        (obs(pair="support-triage@9+sim-classic-2024-06"), "pair"),
        (obs(variant="treatment"), "variant"),
        (obs(outcome="timeout"), "outcome"),
        (obs(score=1.5), "score"),
        (obs(score=-0.1), "score"),
        (obs(latency_ms=-1), "latency_ms"),
        ({k: v for k, v in obs().items() if k != "unit"}, "unit"),
    ],
)
def test_one_bad_item_refuses_the_whole_batch_naming_its_index(sqlite_registry, bad, field):
    canary = apply_example(sqlite_registry)
    items = [obs(unit=f"u{i}") for i in range(5)]
    items.insert(3, bad)
    with pytest.raises(BatchRejected) as info:
        with canary.session() as s:
            store_batch(s, items)
    assert info.value.errors[0].index == 3 and info.value.errors[0].field == field
    assert "observation 3" in str(info.value) and "nothing of this batch was stored" in str(info.value)
    assert count(canary) == 0


def test_unknown_pair_is_refused_on_every_backend(canary):
    with pytest.raises(BatchRejected, match="observation 1 field pair: unknown pair"):
        with canary.session() as s:
            store_batch(s, [obs(), obs(pair="x@1+y"), obs()])
    assert count(canary) == 0


def test_more_than_10000_items_are_refused(sqlite_registry):
    apply_example(sqlite_registry)
    with pytest.raises(BatchRejected, match="at most 10,000"):
        with sqlite_registry.session() as s:
            store_batch(s, [obs()] * (MAX_BATCH + 1))
    assert count(sqlite_registry) == 0


def test_late_telemetry_of_a_pair_from_the_ledger_is_accepted(sqlite_registry):
    apply_example(sqlite_registry)
    # The active pair moved on (as after a promotion); the old pair is still in the ledger.
    set_split(sqlite_registry, 0, migration=None, candidate=None)
    from pairshift.registry.models import Deployment

    with sqlite_registry.session() as s:
        dep = s.get(Deployment, DEPLOYMENT)
        dep.active_prompt, dep.active_model = "support-triage@2", "sim-fresh-2025-09"
    with sqlite_registry.session() as s:
        assert store_batch(s, [obs(pair=ACTIVE_PAIR), obs(pair=CANDIDATE_PAIR)]) == 2


def _stats_batch() -> list[ObservationIn]:
    rows = []
    for i in range(100):  # control: 2 errors, 1 invalid, scores 0.8
        outcome = "error" if i < 2 else "invalid" if i == 2 else "ok"
        rows.append(obs(unit=f"c{i % 40}", outcome=outcome, score=0.8, latency_ms=100.0 + i, cost_usd=0.002))
    for i in range(50):  # candidate: 5 errors, no scores, in the migration
        rows.append(
            obs(
                pair=CANDIDATE_PAIR,
                variant="candidate",
                unit=f"t{i % 10}",
                outcome="error" if i < 5 else "ok",
                latency_ms=300.0,
                cost_usd=0.001,
            )
        )
    rows.append(obs(at=(T0 - timedelta(hours=1)).isoformat()))  # before the window
    rows.append(obs(migration="another-migration"))  # another migration
    return [ObservationIn.model_validate(r) for r in rows]


def test_variant_stats_sums_one_migration_in_its_window_by_unit(canary):
    with canary.session() as s:
        store_batch(s, _stats_batch())
    with canary.session() as s:
        stats = variant_stats(
            s, DEPLOYMENT, MIGRATION, since=T0, until=T0 + timedelta(minutes=1), ranks_for=lambda n: (1, n)
        )
    c, t = stats["control"], stats["candidate"]
    assert (c.n, c.units, c.errors.y, c.invalid.y, c.score.n) == (100, 40, 2, 1, 100)
    # errored calls carry no latency: c0 and c1 errored first (100, 101 ms); their latency is calls 40, 41
    assert c.latency.order == {1: 102.0, 40: 141.0}
    # control: units c0..c39, unit i has calls i, i+40, i+80 (3 calls for i < 20, else 2)
    calls = [3] * 20 + [2] * 20
    assert c.errors.nn == sum(n * n for n in calls)
    assert c.errors.yy == 2 and c.errors.yn == 3 + 3  # errors on calls 0 and 1: units c0 and c1, 3 calls each
    assert c.score.y == pytest.approx(80.0) and c.score.call_sq == pytest.approx(64.0)
    assert c.score.yy == pytest.approx(sum((0.8 * n) ** 2 for n in calls))
    assert c.cost.y == pytest.approx(0.2) and c.cost.call_sq == pytest.approx(100 * 0.002**2)
    # one latency per unit: its first call that did not error (c0 and c1 errored first, then 140 and 141)
    assert c.latency.size == 40 and t.latency.size == 10
    assert (t.n, t.errors.y, t.units, t.score.n, t.cost.y) == (50, 5, 10, 0, pytest.approx(0.05))
    with canary.session() as s:
        empty = variant_stats(s, DEPLOYMENT, MIGRATION, since=T0 + timedelta(minutes=1))
    assert empty["control"].n == 0 and empty["candidate"].n == 0


def test_latency_order_statistics_are_read_by_rank(canary):
    with canary.session() as s:
        store_batch(s, [obs(unit=f"u{i}", latency_ms=float(3_000 - i)) for i in range(3_000)])
        store_batch(s, [obs(unit=f"u{i}", latency_ms=99_999.0) for i in range(10)])  # later calls: not first
    with canary.session() as s:
        stats = variant_stats(s, DEPLOYMENT, MIGRATION, since=T0, ranks_for=lambda n: (1, 2_850, n, n + 1))
        again = stage_stats(s, MIGRATION, 20.0, ranks_for=lambda n: (1, 2_850, n, n + 1))
    lat = stats["control"].latency
    assert lat.size == 3_000 and lat.order == {1: 1.0, 2_850: 2_850.0, 3_000: 3_000.0}
    assert again["control"].latency == lat


def flat(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_unit_aggregates_kept_at_ingest_equal_a_recount_of_the_stage(canary):
    rows = _stats_batch()
    with canary.session() as s:
        store_batch(s, rows[:70])
    with canary.session() as s:
        store_batch(s, rows[70:])  # the same units again: their rows are updated, not duplicated
    set_split(canary, 50)  # the next stage starts afresh
    late = T0 + timedelta(minutes=5)
    with canary.session() as s:
        store_batch(s, [obs(unit="late", at=late.isoformat())])
    ranks = lambda n: range(1, n + 1)  # noqa: E731
    with canary.session() as s:
        kept = stage_stats(s, MIGRATION, 20.0, ranks_for=ranks)
        recount = variant_stats(
            s, DEPLOYMENT, MIGRATION, since=T0 - timedelta(hours=2), until=late, ranks_for=ranks
        )
        later = stage_stats(s, MIGRATION, 50.0)
    for v in ("control", "candidate"):
        assert flat(kept[v].model_dump()) == pytest.approx(flat(recount[v].model_dump()), rel=1e-12)
    assert later["control"].n == 1 and later["candidate"].n == 0
    assert (
        kept["control"].units == 41 and kept["control"].n == 101
    )  # with the batch's row before T0 (unit u1)


def test_window_aggregates_bucket_by_time_and_variant(canary):
    rows = [
        obs(at=(T0 + timedelta(minutes=m)).isoformat(), outcome="error" if m == 20 else "ok", score=0.5)
        for m in (0, 5, 20, 31)
    ]
    rows.append(obs(pair=CANDIDATE_PAIR, variant="candidate", at=(T0 + timedelta(minutes=16)).isoformat()))
    with canary.session() as s:
        store_batch(s, rows)
    with canary.session() as s:
        windows = window_aggregates(s, DEPLOYMENT, since=T0, until=T0 + timedelta(hours=1), window_s=900)
    got = [(w.start, w.variant, w.n, w.errors) for w in windows]
    assert got == [
        (T0, "control", 2, 0),
        (T0 + timedelta(minutes=15), "candidate", 1, 0),
        (T0 + timedelta(minutes=15), "control", 1, 1),
        (T0 + timedelta(minutes=30), "control", 1, 0),
    ]
    assert windows[0].score_mean == pytest.approx(0.5) and windows[1].score_mean is None


def test_unit_keys_are_keyed_hashes_when_a_key_is_set(monkeypatch):
    plain = hash_unit("alice@example.com")
    monkeypatch.setenv("PAIRSHIFT_UNIT_HASH_KEY", "s3cret")
    keyed = hash_unit("alice@example.com")
    assert keyed != plain and len(keyed) == 32 and keyed == hash_unit("alice@example.com")
    monkeypatch.setenv("PAIRSHIFT_UNIT_HASH_KEY", "another")
    assert hash_unit("alice@example.com") != keyed, "the digest depends on the secret"


def test_an_abandoned_stream_is_a_call_but_neither_an_error_nor_a_latency(canary):
    """A stream the client gave up counts as a call of its pair, not as an error or invalid output, and its
    latency (the client's patience) is not the unit's latency draw: the unit's next call is."""
    with canary.session() as s:
        store_batch(s, [obs(unit="u", latency_ms=5.0, outcome="abandoned"), obs(unit="u", latency_ms=400.0)])
    ranks = lambda n: range(1, n + 1)  # noqa: E731
    with canary.session() as s:
        kept = stage_stats(s, MIGRATION, 20.0, ranks_for=ranks)["control"]
        recount = variant_stats(s, DEPLOYMENT, MIGRATION, since=T0 - timedelta(hours=2), ranks_for=ranks)
    for stats in (kept, recount["control"]):
        assert (stats.n, stats.errors.y, stats.invalid.y) == (2, 0, 0)
        assert stats.latency.order == {1: 400.0}


def _units_by_bucket() -> dict[str, str]:
    """One unit key per region of the buckets: candidate at 20% and 50%, only at 50%, at neither."""
    from pairshift.router import bucket

    found: dict[str, str] = {}
    for i in range(10_000):
        b = bucket(MIGRATION, f"unit-{i}")
        region = "both" if b < 2_000 else "only_50" if b < 5_000 else "neither"
        found.setdefault(region, f"unit-{i}")
        if len(found) == 3:
            return found
    raise AssertionError("no unit found for every region")


def _stage_moved_from_20_to_50(registry) -> None:
    """The example applied, then a migration's split set to 20% and moved to 50% as its activities do."""
    apply_example(registry)
    move_split(registry, 20.0)
    move_split(registry, 50.0)


@pytest.mark.parametrize(
    "region, variant, sent, stage",
    [
        ("only_50", "control", None, 20.0),  # routed by the 20% split, stored after the move: the 20% stage's
        ("only_50", "candidate", None, 50.0),  # routed by the 50% split
        ("both", "candidate", None, 50.0),  # both splits agree: the live stage
        ("neither", "control", None, 50.0),
        ("neither", "candidate", None, 50.0),  # neither agrees (not a split's row): the live stage, as before
        # The row carries the percent resolve answered (the router's rows do): that stage, whatever agrees.
        ("both", "candidate", 20.0, 20.0),
        ("neither", "control", 20.0, 20.0),
        ("only_50", "control", 20.0, 20.0),
        ("neither", "control", 50.0, 50.0),
        ("neither", "control", 0.0, None),  # routed before the canary began: no stage's
    ],
)
def test_a_row_stored_after_a_stage_moved_counts_in_the_stage_that_routed_it(
    registry, region, variant, sent, stage
):
    _stage_moved_from_20_to_50(registry)
    unit = _units_by_bucket()[region]
    pair = CANDIDATE_PAIR if variant == "candidate" else ACTIVE_PAIR
    with registry.session() as s:
        store_batch(s, [obs(unit=unit, variant=variant, pair=pair, at=None, percent=sent)])
    with registry.session() as s:
        counted = {p: stage_stats(s, MIGRATION, p)[variant].n for p in (20.0, 50.0)}
    assert counted == {20.0: int(stage == 20.0), 50.0: int(stage == 50.0)}


def test_a_call_the_router_routed_before_the_stage_moved_counts_in_that_stage(registry):
    """The app's router answered at 20% and records after the stage moved to 50% (it had not refreshed yet):
    its row carries 20%, so it is the 20% stage's although both splits send its unit to control."""
    from pairshift.router import Router

    apply_example(registry)
    unit = _units_by_bucket()["neither"]
    move_split(registry, 20.0)
    with Router(DEPLOYMENT, registry, refresh_s=3600) as router:
        routed = router.resolve(unit)
        move_split(registry, 50.0)
        router.record(unit, routed, latency_ms=120.0)
        router.writer.flush()
    assert (routed.variant, routed.percent) == ("control", 20.0)
    with registry.session() as s:
        assert {p: stage_stats(s, MIGRATION, p)["control"].n for p in (20.0, 50.0)} == {20.0: 1, 50.0: 0}


def test_after_the_grace_a_row_without_its_percent_counts_in_the_live_stage(registry):
    from pairshift.registry.models import Deployment

    _stage_moved_from_20_to_50(registry)
    with registry.session() as s:
        dep = s.get(Deployment, DEPLOYMENT)
        dep.split_changed_at = dep.split_changed_at - timedelta(minutes=10)
        s.add(dep)
        s.commit()
    with registry.session() as s:
        store_batch(s, [obs(unit=_units_by_bucket()["only_50"], variant="control", at=None)])
        # A row that says it was routed at 20% (a router's backlog, flushed late) is still the 20% stage's.
        store_batch(s, [obs(unit=_units_by_bucket()["neither"], variant="control", at=None, percent=20.0)])
    with registry.session() as s:
        assert stage_stats(s, MIGRATION, 50.0)["control"].n == 1
        assert stage_stats(s, MIGRATION, 20.0)["control"].n == 1
