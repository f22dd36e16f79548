"""A stage's quality figures from stored data (issue 17 item 4): invalid rate by check per stage and variant
(stage windows from the audit log), the canary judge's scores and spend per stage, and the figures a stage's
Slack notice carries (both arms, top checks, judged score with its interval, examples, the day's spend)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pairshift import split, stage_quality
from pairshift.contracts.quality import StageQualityInput
from pairshift.observations import ObservationIn, stage_stats, store_batch
from pairshift.registry import open_registry
from pairshift.registry.models import AuditEvent, Deployment, MigrationRow, OutputSample, utcnow

T0 = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
WID, RUN = "migration-support-triage", "run-1"
KEY = f"{WID}/{RUN}"


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], []),
        (
            [(T0, "stage 0: 20% to p@2+m")],
            [(20.0, T0, None)],
        ),
        (  # out of order in, in order out; each stage ends where the next starts
            [(T0 + timedelta(hours=2), "stage 1: 50% to p@2+m"), (T0, "stage 0: 2.5% to p@2+m")],
            [(2.5, T0, T0 + timedelta(hours=2)), (50.0, T0 + timedelta(hours=2), None)],
        ),
        (  # naive times (SQLite reads them back so) are UTC; details that do not parse are skipped
            [(T0.replace(tzinfo=None), "stage 0: 1% to p@2+m"), (T0, "phase changed"), (T0, "")],
            [(1.0, T0, None)],
        ),
    ],
)
def test_stage_windows(events, expected) -> None:
    assert stage_quality.stage_windows(events) == expected


def _registry_with_two_stages(pairshift_env):
    """support-triage canarying KEY: stage 20% from now-2h, 50% from now-1h; invalid calls in both."""
    from migration_harness import small_examples

    from pairshift.apply import apply_path

    reg = open_registry()
    apply_path(reg, small_examples(pairshift_env / "config"), by="test")
    start = utcnow() - timedelta(hours=2)
    with reg.session() as s:
        dep = s.get(Deployment, "support-triage")
        pair = dep.active_pair
        s.add(
            MigrationRow(
                run_id=RUN,
                workflow_id=WID,
                deployment="support-triage",
                from_pair=pair,
                to_pair=pair,
                reason="manual",
                requested_by="test",
                phase="canary",
                started_at=start,
            )
        )
        for k, (percent, at) in enumerate([(20, start), (50, start + timedelta(hours=1))]):
            s.add(
                AuditEvent(
                    migration=WID,
                    run_id=RUN,
                    at=at,
                    event="stage_started",
                    detail={"detail": f"stage {k}: {percent}% to {pair}"},
                )
            )
        s.add(
            AuditEvent(
                migration=WID,
                run_id="other-run",
                at=start,
                event="stage_started",
                detail={"detail": f"stage 0: 5% to {pair}"},
            )
        )
        s.commit()

    def calls(percent: int, at: datetime, control: list[str | None], candidate: list[str | None]) -> None:
        with reg.session() as s:
            split.set_split(
                s,
                deployment="support-triage",
                migration=KEY,
                prompt="support-triage@2",
                model=dep.active_model,
                percent=percent,
            )
            s.commit()
            obs = [
                ObservationIn.model_validate(
                    {
                        "deployment": "support-triage",
                        "migration": KEY,
                        "pair": pair,
                        "variant": variant,
                        "unit": f"{variant}-{percent}-{i}",
                        "latency_ms": 1,
                        "input_tokens": 1,
                        "output_tokens": 1,
                        "cost_usd": 0,
                        "outcome": "ok" if detail is None else "invalid",
                        "detail": detail,
                        "at": at.isoformat(),
                    }
                )
                for variant, details in (("control", control), ("candidate", candidate))
                for i, detail in enumerate(details)
            ]
            store_batch(s, obs)

    a, b = "online check raw-json: not JSON", "online check short: too long"
    calls(20, start + timedelta(minutes=10), [None] * 10, [a, a, b] + [None] * 7)
    calls(50, start + timedelta(minutes=70), [b] + [None] * 19, [a] + [None] * 19)
    return reg, pair, start


def test_report_counts_checks_per_stage_and_variant_in_each_stage_window(pairshift_env) -> None:
    reg, pair, start = _registry_with_two_stages(pairshift_env)
    with reg.session() as s:
        rates = stage_quality.stage_check_rates(s, "support-triage", WID, RUN)
    got = [(r.percent, r.variant, r.check.split(":")[0], r.calls, r.of_calls) for r in rates]
    assert got == [
        (20, "candidate", "online check raw-json", 2, 10),
        (20, "candidate", "online check short", 1, 10),
        (50, "candidate", "online check raw-json", 1, 20),
        (50, "control", "online check short", 1, 20),
    ]
    assert rates[0].rate == pytest.approx(0.2)
    with reg.session() as s:  # the limit is per stage and variant
        assert len(stage_quality.stage_check_rates(s, "support-triage", WID, RUN, limit=1)) == 3
    checks, judge = stage_quality.report_figures(reg, "support-triage", WID)
    assert checks == rates and judge == []
    text = stage_quality.render_markdown(checks, judge)
    assert "| 20% | candidate | online check raw-json: not JSON | 2 of 10 | 20.00% |" in text
    assert "Canary judge" not in text


def _judged(reg, pair: str, percent: float, variant: str, unit: str, score: float | None, cost: float, at):
    with reg.session() as s:
        s.add(
            OutputSample(
                deployment="support-triage",
                migration=KEY,
                pair=pair,
                variant=variant,
                kind="judge",
                unit=unit,
                percent=percent,
                score=score,
                cost_usd=cost,
                judged_at=at,
                input='{"ticket_body": "x"}',
                output=f"output {unit} " + "y" * 500,
                at=at,
            )
        )
        s.commit()


def test_judge_spend_per_stage_and_the_stage_notice_figures(pairshift_env) -> None:
    reg, pair, start = _registry_with_two_stages(pairshift_env)
    now = utcnow()
    for i in range(4):
        _judged(reg, pair, 50, "candidate", f"candidate-50-{i}", [1.0, 0.0, 1.0, None][i], 0.01, now)
        _judged(reg, pair, 50, "control", f"control-50-{i}", 1.0, 0.01, now)
    _judged(reg, pair, 50, "control", "control-50-9", None, 0.0, None)  # waiting: not judged yet
    _judged(reg, pair, 20, "candidate", "candidate-20-0", 1.0, 0.02, now)
    with reg.session() as s:
        spend = stage_quality.judge_by_stage(s, "support-triage", KEY)
    assert [(j.percent, j.judged, j.unreadable, j.cost_usd) for j in spend] == [
        (20, 1, 0, pytest.approx(0.02)),
        (50, 7, 1, pytest.approx(0.08)),
    ]
    text = stage_quality.render_markdown([], spend)
    assert "| 50% | 7 | 1 | $0.0800 |" in text

    inp = StageQualityInput(
        deployment="support-triage",
        migration=KEY,
        index=1,
        percent=50,
        since=start + timedelta(hours=1),
        until=now + timedelta(seconds=1),
        ended="breach",
        why="invalid_rate breached",
        judge="sim-classic-2024-06",
        judge_cap_usd=5.0,
    )
    with reg.session() as s:
        q = stage_quality.stage_quality(s, inp)
    control, candidate = q.arms
    with reg.session() as s:  # calls per arm are the gate's (unit aggregates attribute each call exactly)
        stats = stage_stats(s, KEY, 50)
    assert (control.variant, candidate.variant) == ("control", "candidate")
    assert (control.calls, candidate.calls) == (
        stats["control"].n,
        stats["candidate"].n,
    ) and candidate.calls == 20
    assert candidate.invalid_rate == pytest.approx(0.05) and candidate.invalid_ci[0] == 0.0
    assert [(c.check.split(":")[0], c.calls) for c in candidate.checks] == [("online check raw-json", 1)]
    assert (candidate.judged, candidate.judged_score) == (3, pytest.approx(2 / 3))
    assert candidate.judged_ci[0] < 2 / 3 < candidate.judged_ci[1]
    assert (control.judged, control.judged_score) == (4, 1.0)
    # no invalid example was kept in the window: the judge's lowest-scored samples, cut for Slack
    assert [e.why for e in candidate.examples] == ["judge score 0.00", "judge score 1.00"]
    assert all(len(e.output) <= 300 for e in candidate.examples)
    assert q.judge_stage.judged == 7 and q.judge_stage.cost_usd == pytest.approx(0.08)
    assert q.judge_spent_today_usd == pytest.approx(0.10) and q.judge_cap_usd == 5.0

    with reg.session() as s:  # without a judge in the policy: no judge figures at all
        q = stage_quality.stage_quality(s, inp.model_copy(update={"judge": None}))
    assert q.judge is None and q.judge_stage is None and q.arms[1].judged == 0
    assert [e.kind for e in q.arms[1].examples] == ["judged", "judged"]  # examples stay


def test_invalid_examples_of_the_window_come_first(pairshift_env) -> None:
    reg, pair, start = _registry_with_two_stages(pairshift_env)
    with reg.session() as s:
        for minutes, output in ((5, "before"), (75, "inside")):  # the first is the 20% stage's
            s.add(
                OutputSample(
                    deployment="support-triage",
                    migration=KEY,
                    pair=pair,
                    variant="candidate",
                    kind="invalid",
                    detail="online check raw-json: not JSON",
                    input="{}",
                    output=output,
                    at=start + timedelta(minutes=minutes),
                )
            )
        s.commit()
        got = stage_quality.examples(
            s, "support-triage", KEY, 50, "candidate", start + timedelta(hours=1), None
        )
    assert [(e.kind, e.why, e.output) for e in got] == [
        ("invalid", "online check raw-json: not JSON", "inside")
    ]
