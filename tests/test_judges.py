"""The judge is named by the policy (`eval.judge`), never guessed: refused at apply when unknown, retired or
retiring within a migration's horizon, or missing while the dataset has model-graded assertions; eval planning
takes it and keeps the same-family warning."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import dump_registry
from test_evals_support import eval_registry, write_config  # noqa: F401 - fixture

from pairshift import evals, judges
from pairshift.apply import apply_path
from pairshift.contracts.evals import EvalRequest
from pairshift.policy import Policy
from pairshift.registry import open_registry
from pairshift.registry.models import Model
from pairshift.registry.store import Registry

TODAY = date(2026, 11, 30)


def test_the_horizon_is_every_stage_at_its_longest_plus_the_approval_wait() -> None:
    # Default stages: 12 + 24 + 72 + 96 + 0 hours, approvals time out after 72 hours: 276 hours.
    assert judges.policy_horizon(Policy()) == timedelta(days=12)


@pytest.mark.parametrize(
    ("retires_on", "expected"),
    [
        (None, None),
        (TODAY - timedelta(days=1), "retired on 2026-11-29"),
        (TODAY + timedelta(days=5), "retires on 2026-12-05, within the 12 days"),
        (TODAY + timedelta(days=13), None),
    ],
)
def test_judge_problems(retires_on: date | None, expected: str | None) -> None:
    judge = Model(id="j", provider="sim", retires_on=retires_on)
    problem = judges.judge_problem(judge, "j", TODAY, timedelta(days=12))
    assert problem == expected or (expected is not None and problem is not None and expected in problem)
    assert "not a known model" in (judges.judge_problem(None, "nope", TODAY) or "")


def graded_config(tmp_path: Path, policy: dict, *, judge_model: dict | None = None) -> Path:
    """The example with one llm-rubric assertion in its first case and the deployment on ``policy``."""
    config = write_config(tmp_path / "c", n_cases=5)
    doc = yaml.safe_load(config.read_text())
    dataset = config.parent / "datasets" / "support-triage.jsonl"
    lines = dataset.read_text().splitlines()
    case = json.loads(lines[0])
    case["assert"].append({"type": "llm-rubric", "value": "Routes the ticket to one team"})
    lines[0] = json.dumps(case)
    dataset.write_text("\n".join(lines) + "\n")
    doc["policies"] = [{"name": "graded", **policy}]
    doc["deployments"][0]["policy"] = "graded"
    if judge_model:
        doc["models"].append(judge_model)
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config


@pytest.mark.parametrize(
    ("policy", "judge_model", "words"),
    [
        ({}, None, ["llm-rubric in case", "names no judge", "`judge: MODEL_ID`", "policies[].eval.judge"]),
        (
            {"eval": {"judge": "no-such-model"}},
            None,
            ["eval.judge", "judge no-such-model is not a known model"],
        ),
        (
            {"eval": {"judge": "sim-old-judge"}},
            {"id": "sim-old-judge", "provider": "sim", "retires_on": "2020-01-01"},
            ["eval.judge", "retired on 2020-01-01"],
        ),
    ],
    ids=["missing", "unknown", "retired"],
)
def test_apply_refuses_a_judge_that_cannot_grade(
    use_registry, cli, tmp_path: Path, policy: dict, judge_model: dict | None, words: list[str]
) -> None:
    before = dump_registry(open_registry())
    result = cli("apply", "-f", str(graded_config(tmp_path, policy, judge_model=judge_model)))
    assert result.code == 2, result.out
    line = result.err.strip()
    assert "\n" not in line
    for word in words:
        assert word in line, (word, line)
    assert dump_registry(open_registry()) == before


def test_apply_refuses_a_judge_retiring_within_the_horizon(use_registry, cli, tmp_path: Path) -> None:
    soon = (date.today() + timedelta(days=5)).isoformat()
    judge = {"id": "sim-soon", "provider": "sim", "retires_on": soon}
    result = cli(
        "apply", "-f", str(graded_config(tmp_path, {"eval": {"judge": "sim-soon"}}, judge_model=judge))
    )
    assert result.code == 2 and f"retires on {soon}, within the 12 days" in result.err


def test_planning_takes_the_policy_s_judge_and_warns_on_its_own_family(
    eval_registry: Registry,  # noqa: F811
    tmp_path: Path,
) -> None:
    apply_path(eval_registry, graded_config(tmp_path, {"eval": {"judge": "sim-literal-2025-11"}}), by="t")
    other = evals.plan_eval(
        eval_registry, EvalRequest(deployment="support-triage", to_model="sim-fresh-2025-09"), "j1"
    )
    assert other.judge == "sim-literal-2025-11" and other.warnings == []
    own = evals.plan_eval(
        eval_registry, EvalRequest(deployment="support-triage", to_model="sim-literal-2025-11"), "j2"
    )
    assert own.judge == "sim-literal-2025-11" and "same family" in own.warnings[0]


def test_planning_refuses_model_graded_cases_without_a_judge(
    eval_registry: Registry,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Applied before judges were required: the policy names none, the dataset grades with a model.
    config = graded_config(tmp_path, {"eval": {"judge": "sim-literal-2025-11"}})
    apply_path(eval_registry, config, by="t")
    request = EvalRequest(
        deployment="support-triage", to_model="sim-fresh-2025-09", eval_policy=Policy().eval
    )
    with pytest.raises(evals.EvalInputError, match=r"names no judge.*policies\[\]\.eval\.judge"):
        evals.plan_eval(eval_registry, request, "j3")
