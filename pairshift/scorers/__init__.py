"""Scorers: promptfoo-compatible assertions on one model output (PRODUCT §5).

``score_case(case, output, judge=...)`` is the entry point; ``score_case_sync`` is the fast path for
datasets without model-graded assertions. See ``engine`` for the scoring rules, ``assertions`` for the
deterministic checks and ``model_graded`` for the judge prompts.
"""

from pairshift.scorers.assertions import Output
from pairshift.scorers.engine import AssertionResult, CaseScore, score_case, score_case_sync
from pairshift.scorers.model_graded import Judge, ScorerError

__all__ = ["AssertionResult", "CaseScore", "Judge", "Output", "ScorerError", "score_case", "score_case_sync"]
