"""Report assembly (pure) and its Markdown / HTML renderings."""

from __future__ import annotations

import re

from pairshift.contracts.evals import DatasetRef
from pairshift.policy import EvalPolicy
from pairshift.reports import ArmInput, FlippedOutputs, assemble_report, grid, render_html, render_markdown
from pairshift.stats import CaseOutcome, summarize_arm


def _outcomes(passes: list[bool], *, error_first: bool = False, tag: str = "billing") -> list[CaseOutcome]:
    return [
        CaseOutcome(
            case_id=f"c{i:03d}",
            epoch=1,
            passed=p,
            score=float(p),
            tags=[tag],
            latency_ms=100.0,
            cost_usd=0.001,
            error=error_first and i == 0,
            assertion_types=["is-json"],
            assertion_types_failed=[] if p else ["is-json"],
        )
        for i, p in enumerate(passes)
    ]


def _model_only_report(baseline: list[CaseOutcome], target: list[CaseOutcome], confidence: float = 0.95):
    arms = [
        ArmInput(arm="baseline", pair="p@1+old", run_id="r-b", summary=summarize_arm(baseline, confidence)),
        ArmInput(
            arm="model_only",
            pair="p@1+new",
            run_id="r-m",
            summary=summarize_arm(target, confidence),
            cached_calls=3,
        ),
    ]
    return assemble_report(
        report_id="r-m",
        deployment="d",
        baseline_pair="p@1+old",
        target_pair="p@1+new",
        dataset=DatasetRef(name="ds", hash="a" * 64, cases=len(baseline)),
        epochs=1,
        policy=EvalPolicy(epochs=1, blocking=["is-json"], confidence=confidence),
        arms=arms,
        outcomes={"baseline": baseline, "model_only": target},
    )


def test_model_only_report_repeats_the_arm_as_joint_and_lists_flips() -> None:
    baseline = _outcomes([True] * 20)
    target = _outcomes([False, True] + [True] * 18)
    report = _model_only_report(baseline, target)
    assert set(report.arms) == {"baseline", "model_only", "joint"}
    assert report.arms["joint"] == report.arms["model_only"]
    assert report.effects["joint"] == report.effects["model"]
    assert report.effects["model"].estimate == -0.05
    assert [(f.case, f.direction, f.to_arm) for f in report.flipped] == [("c000", "regressed", "model_only")]
    # is-json newly fails on c000 and passes nowhere new: one case of 20 is not shown to be a rise (it failed
    # the eval before), and 20 cases cannot show non-inferiority at 2 points either.
    assert report.gate.decision == "inconclusive"
    assert "is-json newly fails on 1 case(s): c000" in " ".join(report.gate.reasons)
    assert report.arms["model_only"].mcnemar_p == 1.0  # one discordant case: binomial(1, 1, 0.5) two-sided
    assert "this eval has 20" in report.power_note and "80% power" in report.power_note
    assert grid(report) == [
        ["old prompt", report_cell(report, "baseline"), report_cell(report, "model_only")],
        ["new prompt", "-", "-"],
    ]


def report_cell(report, arm: str) -> str:  # type: ignore[no-untyped-def]
    r = report.arms[arm]
    return f"{r.pass_rate * 100:.1f}% [{r.ci[0] * 100:.1f}, {r.ci[1] * 100:.1f}]"


def test_errors_turn_a_pass_into_inconclusive() -> None:
    clean = _model_only_report(_outcomes([True] * 400), _outcomes([True] * 400))
    assert clean.gate.decision == "pass"
    errored = _model_only_report(_outcomes([False] + [True] * 399, error_first=True), _outcomes([True] * 400))
    assert errored.gate.decision == "inconclusive"
    assert "failed at the provider" in errored.gate.reasons[-1]


def test_a_clear_regression_fails() -> None:
    report = _model_only_report(_outcomes([True] * 40), _outcomes([False] * 12 + [True] * 28))
    assert report.gate.decision == "fail"
    reasons = " ".join(report.gate.reasons)
    assert "shown worse than the allowed -2.0 points" in reasons
    assert "is-json newly fails on 12 case(s)" in reasons and "shown to rise" in reasons


def test_markdown_has_the_table_effects_and_gate() -> None:
    report = _model_only_report(_outcomes([True] * 20), _outcomes([False, True] + [True] * 18))
    text = render_markdown(report)
    # Wilson intervals: 20/20 -> [83.9, 100], 19/20 -> [76.4, 99.1]
    assert "| old prompt | 100.0% [83.9, 100.0] | 95.0% [76.4, 99.1] |" in text
    assert re.search(r"\| model \| -5\.0 \| \[-\d+\.\d, \+\d+\.\d\] \|", text)
    assert "**Gate: INCONCLUSIVE**" in text and "`c000` regressed in model_only" in text


def test_intervals_are_labelled_with_the_configured_confidence() -> None:
    baseline, target = _outcomes([True] * 20), _outcomes([False, True] + [True] * 18)
    report = _model_only_report(baseline, target, confidence=0.9)
    text, page = render_markdown(report), render_html(report)
    assert "[90% CI]" in text and "95%" not in text
    assert "90% CI" in page and "95% CI" not in page and "95% interval" not in page


def test_html_is_self_contained_and_escapes_model_output() -> None:
    report = _model_only_report(_outcomes([True] * 20), _outcomes([False, True] + [True] * 18))
    page = render_html(
        report,
        [
            FlippedOutputs(
                case="c000",
                to_arm="model_only",
                direction="regressed",
                baseline_output='{"ok": 1}',
                arm_output="<script>alert(1)</script>",
            )
        ],
    )
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert page.count("<svg") == 2  # effects chart + one tag chart
    assert 'class="gate inconclusive"' in page
