"""``word-count``, ``rouge-n`` and ``bleu`` as promptfoo computes them (src/assertions/wordCount.ts, rouge.ts,
bleu.ts).

- word-count: words are the runs between JavaScript whitespace; ``value`` is a count or ``{min, max}``.
- rouge-n: ROUGE-1 F1 with clipped counts over Penn Treebank tokens of the lower-cased texts (promptfoo uses
  js-rouge's tokenizer; pairshift uses nltk's TreebankWordTokenizer, the same rules); default threshold 0.75.
- bleu: promptfoo's BLEU-4 (not sacrebleu's): lower-cased whitespace tokens, clipped n-gram precision
  against the best reference, orders the candidate is too short for left out and the weights renormalised,
  a zero precision smoothed to 1e-7, brevity penalty against the closest reference length (the shorter on
  a tie); an empty candidate scores 0; default threshold 0.5.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from typing import Any

from pairshift.jscompat.values import JS_WHITESPACE, js_trim

_SPLIT = re.compile(f"[{re.escape(JS_WHITESPACE)}]+")


def count_words(text: str) -> int:
    return len([w for w in _SPLIT.split(js_trim(text)) if w])


def word_count_bounds(value: Any) -> tuple[float | None, float | None]:
    """(min, max) of a word-count value; raises ValueError for a value promptfoo would refuse."""
    if isinstance(value, dict):
        low, high = value.get("min"), value.get("max")
        if low is None and high is None:
            raise ValueError("word-count needs a count or {min, max}")
        if low is not None and high is not None and low > high:
            raise ValueError(f"word-count min ({low}) must be <= max ({high})")
        return low, high
    if isinstance(value, bool) or value is None:
        raise ValueError("word-count value must be a number or {min, max}")
    count = float(value)  # a numeric string counts, as Number(value) does
    return count, count


@lru_cache(maxsize=1)
def _treebank() -> Any:
    from nltk.tokenize import TreebankWordTokenizer  # imported on first use: nltk is slow to import

    return TreebankWordTokenizer()


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(candidate: str, reference: str, n: int = 1) -> float:
    tokenize = _treebank().tokenize
    cand = tokenize(" ".join(_SPLIT.split(candidate.lower())).strip())
    ref = tokenize(" ".join(_SPLIT.split(reference.lower())).strip())
    if len(cand) < n or len(ref) < n:
        return 0.0
    cand_grams, ref_grams = _ngrams(cand, n), _ngrams(ref, n)
    overlap = sum(min(count, ref_grams[g]) for g, count in cand_grams.items())
    if overlap == 0:
        return 0.0
    precision = overlap / (len(cand) - n + 1)
    recall = overlap / (len(ref) - n + 1)
    return 2 * precision * recall / (precision + recall)


def bleu(candidate: str, references: list[str]) -> float:
    if not js_trim(candidate):
        return 0.0
    words = _SPLIT.split(js_trim(candidate.lower()))
    refs = [_SPLIT.split(js_trim(r.lower())) for r in references]
    closest = min((len(r) for r in refs), key=lambda length: (abs(length - len(words)), length))
    orders = []
    for n in range(1, 5):
        grams = _ngrams(words, n)
        total = sum(grams.values())
        if total == 0:
            continue
        clipped = max(sum(min(c, _ngrams(r, n)[g]) for g, c in grams.items()) for r in refs)
        orders.append(clipped / total)
    penalty = 1.0 if len(words) > closest else math.exp(1 - closest / len(words))
    log_mean = sum(math.log(p if p > 0 else 1e-7) for p in orders) / len(orders)
    return penalty * math.exp(log_mean)
