"""Evidence the canary never saw: what a writer drops reaches the stage gate, and why an output was invalid is
stored (issue 24: "a gate must not pass on data it dropped"; "a raising callback's exception type")."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from test_router_support import ACTIVE_PAIR, CANDIDATE_PAIR, DEPLOYMENT, MIGRATION, apply_example, set_split

from pairshift.observations import ObservationIn, ObservationWriter, stage_stats
from pairshift.observations.store import LossIn, store_losses
from pairshift.registry.models import Observation, ObservationLoss
from pairshift.router import Router

VARIABLES = {"customer_tier": "gold", "ticket_body": "I was charged twice, refund please"}


def item(i: int, variant: str = "control", migration: str | None = MIGRATION) -> ObservationIn:
    return ObservationIn(
        deployment=DEPLOYMENT,
        pair=ACTIVE_PAIR if variant == "control" else CANDIDATE_PAIR,
        variant=variant,
        unit=f"u{i}",
        latency_ms=1.0,
        input_tokens=1,
        output_tokens=1,
        cost_usd=0.0,
        outcome="ok",
        migration=migration,
    )


def test_a_full_queue_counts_what_it_drops_per_variant_and_reports_it_at_the_next_flush() -> None:
    stored: list[ObservationIn] = []
    reports: list[list[LossIn]] = []
    writer = ObservationWriter(sink=stored.extend, losses=reports.append, max_queue=4, batch_size=100)
    for i in range(3):
        writer.put(item(i, "candidate"))
    for i in range(3, 8):
        writer.put(item(i, "control"))
    assert writer.dropped == 4 and writer.unreported_losses == 4 and reports == []
    assert writer.flush() == 4
    lost = {(x.variant, x.migration): x.lost for x in reports[0]}
    assert lost == {("candidate", MIGRATION): 3, ("control", MIGRATION): 1}
    assert writer.unreported_losses == 0 and writer.flush() == 0 and len(reports) == 1


def test_a_failing_loss_report_is_kept_for_the_next_flush() -> None:
    attempts: list[int] = []

    def flaky(report: list[LossIn]) -> None:
        attempts.append(sum(x.lost for x in report))
        if len(attempts) == 1:
            raise ConnectionError("registry down")

    writer = ObservationWriter(sink=lambda batch: None, losses=flaky, max_queue=1, batch_size=10)
    writer.put(item(0))
    writer.put(item(1))
    writer.flush()
    assert attempts == [1] and writer.unreported_losses == 1
    writer.flush()  # nothing queued: the kept report is sent anyway
    assert attempts == [1, 1] and writer.unreported_losses == 0


def test_a_requeued_batch_that_no_longer_fits_counts_as_lost() -> None:
    down = True

    def sink(batch: list[ObservationIn]) -> None:
        if down:
            raise ConnectionError("registry down")

    reports: list[list[LossIn]] = []
    writer = ObservationWriter(sink=sink, losses=reports.append, max_queue=5, batch_size=5)
    for i in range(5):
        writer.put(item(i, "candidate"))
    writer.flush()  # fails: the batch goes back
    for i in range(5, 8):
        writer.put(item(i, "control"))  # the three oldest candidates are dropped
    down = False
    writer.flush()
    assert {(x.variant): x.lost for x in reports[0]} == {"candidate": 3}


def test_losses_reach_the_live_stage_and_the_gate_reads_them(sqlite_registry) -> None:
    apply_example(sqlite_registry)
    set_split(sqlite_registry, 5)
    writer = ObservationWriter(sqlite_registry, max_queue=2, batch_size=100)
    for i in range(6):
        writer.put(item(i, "candidate"))
    assert writer.flush() == 2
    with sqlite_registry.session() as s:
        rows = s.scalars(select(ObservationLoss)).all()
        assert [(r.migration, r.percent, r.variant, r.lost) for r in rows] == [
            (MIGRATION, 5.0, "candidate", 4)
        ]
        stats = stage_stats(s, MIGRATION, 5.0)
    assert stats["candidate"].lost == 4 and stats["candidate"].n == 2 and stats["control"].lost == 0
    with sqlite_registry.session() as s:  # a second report adds (an upsert: concurrent writers never collide)
        assert store_losses(s, [LossIn(deployment=DEPLOYMENT, variant="candidate", lost=6)]) == 6
    with sqlite_registry.session() as s:
        assert stage_stats(s, MIGRATION, 5.0)["candidate"].lost == 10


@pytest.mark.parametrize(
    ("case", "loss", "kept"),
    [
        ("another migration's loss (a finished one)", {"migration": "mig-old"}, 0),
        ("an unknown deployment", {"deployment": "nope"}, 0),
        ("no migration named: the live one", {}, 3),
    ],
)
def test_a_loss_belongs_only_to_the_live_stage(sqlite_registry, case: str, loss: dict, kept: int) -> None:
    apply_example(sqlite_registry)
    set_split(sqlite_registry, 20)
    with sqlite_registry.session() as s:
        assert (
            store_losses(s, [LossIn(**({"deployment": DEPLOYMENT, "variant": "control", "lost": 3} | loss))])
            == kept
        )


def test_no_loss_is_kept_when_the_deployment_is_not_canarying(sqlite_registry) -> None:
    apply_example(sqlite_registry)
    with sqlite_registry.session() as s:
        assert store_losses(s, [LossIn(deployment=DEPLOYMENT, variant="control", lost=3)]) == 0
        assert s.scalars(select(ObservationLoss)).all() == []


@pytest.mark.parametrize(
    ("validate", "score", "detail"),
    [
        (lambda text: False, None, "validate returned False"),
        (lambda text: 1 / 0, None, "validate raised ZeroDivisionError"),
        (None, lambda text: {}["missing"], "score raised KeyError"),
        (lambda text: True, lambda text: 0.5, None),
    ],
    ids=["validate false", "validate raises", "score raises", "ok"],
)
async def test_why_an_output_is_invalid_is_stored(sqlite_registry, validate, score, detail) -> None:
    apply_example(sqlite_registry)
    with Router(DEPLOYMENT, sqlite_registry, refresh_s=0) as router:
        await router.complete("u1", VARIABLES, validate=validate, score=score)
    with sqlite_registry.session() as s:
        row = s.scalars(select(Observation)).one()
    assert (row.outcome, row.detail) == ("ok" if detail is None else "invalid", detail)


async def test_an_error_names_its_kind(sqlite_registry) -> None:
    apply_example(sqlite_registry)
    with Router(DEPLOYMENT, sqlite_registry, refresh_s=0) as router:
        with pytest.raises(Exception, match="ticket_body"):
            await router.complete("u1", {"customer_tier": "gold"})
    with sqlite_registry.session() as s:
        row = s.scalars(select(Observation)).one()
    assert (row.outcome, row.detail) == ("error", "TemplateProblem")


def test_the_commonest_reasons_outputs_were_invalid_come_first(sqlite_registry) -> None:
    from datetime import UTC, datetime, timedelta

    from pairshift.observations import invalid_details, store_batch

    apply_example(sqlite_registry)
    set_split(sqlite_registry, 50)
    at = datetime.now(UTC)
    rows = [("candidate", "online check raw-json: not JSON")] * 5 + [
        ("candidate", "validate returned False")
    ] * 2
    rows += [("candidate", f"online check c{i}: no") for i in range(3)] + [("control", None)]
    with sqlite_registry.session() as s:
        store_batch(
            s,
            [
                item(i, variant).model_copy(update={"outcome": "invalid", "detail": detail, "at": at})
                for i, (variant, detail) in enumerate(rows)
            ],
        )
        top = invalid_details(s, DEPLOYMENT, MIGRATION, at - timedelta(minutes=1))
    assert top["candidate"][:2] == [("online check raw-json: not JSON", 5), ("validate returned False", 2)]
    assert len(top["candidate"]) == 3 and top["control"] == [("(no detail)", 1)]
