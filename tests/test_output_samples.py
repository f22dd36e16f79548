"""Example outputs for the migration report (issue 17 item 1): a few per check, redacted before they are
queued, bounded in length, read back per variant and check with their counts, deleted by retention."""

from __future__ import annotations

from datetime import timedelta

from pairshift import output_samples
from pairshift.capture import compile_patterns, redact
from pairshift.observations import ObservationIn, store_batch
from pairshift.registry import open_registry
from pairshift.registry.models import Deployment, OutputSample, utcnow

PATTERNS = compile_patterns([r"(?i)order\s*\d+"])


def offer(keeper: output_samples.ExampleKeeper, detail: str, output: str, variant: str = "candidate") -> bool:
    return keeper.offer(
        deployment="d",
        migration="m/1",
        pair="p@1+x",
        variant=variant,
        detail=detail,
        request={"vars": {"ticket_body": "charged twice (order 12345), mail bob@example.com"}},
        output=output,
        patterns=PATTERNS,
    )


def test_a_few_examples_per_check_and_variant_redacted_and_bounded() -> None:
    keeper = output_samples.ExampleKeeper(per_check=2)
    kept = [
        offer(keeper, "online check raw-json: x", f"Triage for order {i}: ```json {{}}```") for i in range(5)
    ]
    assert kept == [True, True, False, False, False]
    assert offer(keeper, "online check other: y", "z" * 5000)
    assert offer(keeper, "online check raw-json: x", "w", variant="control")
    samples = keeper.take()
    assert len(samples) == 4 and keeper.take() == []
    first = samples[0]
    assert first.output == "Triage for [REDACTED]: ```json {}```"
    assert "12345" not in first.input and "bob@example.com" not in first.input and "[REDACTED]" in first.input
    long = samples[2].output
    assert len(long) == output_samples.TEXT_MAX and long.endswith("…")


def test_redaction_comes_before_the_cut() -> None:
    text = "x" * (output_samples.TEXT_MAX - 5) + " order 123456789"
    assert "order 1" not in output_samples.bounded(redact(text, PATTERNS))


def test_gateway_requests_show_the_last_message() -> None:
    req = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    assert output_samples.input_text(req) == "b"
    assert output_samples.input_text(None) == ""


def test_failing_checks_counts_observations_and_attaches_examples(pairshift_env) -> None:
    from migration_harness import small_examples

    from pairshift.apply import apply_path

    reg = open_registry()
    apply_path(reg, small_examples(pairshift_env / "config"), by="test")
    with reg.session() as s:
        pair = s.get(Deployment, "support-triage").active_pair
    obs = [
        {
            "deployment": "support-triage",
            "pair": pair,
            "variant": "control",
            "unit": f"u{i}",
            "latency_ms": 1,
            "input_tokens": 1,
            "output_tokens": 1,
            "cost_usd": 0,
            "outcome": "invalid",
            "migration": "m/1",
            "detail": "online check a: bad" if i < 3 else "online check b: bad",
        }
        for i in range(4)
    ]
    with reg.session() as s:
        store_batch(s, [ObservationIn.model_validate(o) for o in obs])
        s.add(
            OutputSample(
                deployment="support-triage",
                migration="m/1",
                pair=pair,
                variant="control",
                kind="invalid",
                detail="online check a: bad",
                input="{}",
                output="oops",
            )
        )
        s.commit()
        checks = output_samples.failing_checks(s, "support-triage", "m/1")
    assert [(c.check, c.calls) for c in checks["control"]] == [
        ("online check a: bad", 3),
        ("online check b: bad", 1),
    ]
    assert checks["control"][0].examples == [{"input": "{}", "output": "oops"}]
    assert checks["control"][1].examples == []
    text = output_samples.render_markdown(checks)
    assert "control: online check a: bad (3 calls)" in text and "'oops'" in text
    with reg.session() as s:
        assert output_samples.delete_older_than(s, utcnow() - timedelta(days=1)) == 0
        assert output_samples.delete_older_than(s, utcnow() + timedelta(seconds=1)) == 1


def test_a_router_with_a_bad_redact_pattern_keeps_no_example() -> None:
    from pairshift.router import Assignment, Router, Split, _redact_patterns

    assert _redact_patterns(Deployment(name="d", active_prompt="p@1", active_model="m", redact=["("])) is None
    a = Assignment(deployment="d", pair="p@1+m", prompt="p@1", model="m", variant="control", migration=None)
    for patterns, kept in ((None, 0), (tuple(PATTERNS), 1)):
        split = Split(deployment="d", migration=None, threshold=0, control=a, candidate=None, redact=patterns)
        router = Router("d", loader=lambda split=split: split, refresh_s=0)
        router._split = split
        router.keep_invalid(a, {"vars": {}}, "order 1234", "online check x: y")
        assert len(router.examples.take()) == kept
