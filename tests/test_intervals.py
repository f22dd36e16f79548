"""pairshift.intervals: the scalar statistic that score intervals search with is the array statistic, bit for
bit, on every kind of data an eval produces (one or several epochs, agreement at an end, zero discordance)."""

from __future__ import annotations

import numpy as np
import pytest

from pairshift import intervals
from pairshift.intervals import _one_row_statistic, score_interval, score_statistic, support_counts

RANGES = [(0.0, 1.0), (-1.0, 1.0), (-2.0, 2.0)]


def _data_sets() -> list[tuple[np.ndarray, float, float]]:
    rng = np.random.default_rng(20261201)
    sets = []
    for i in range(90):
        lo, hi = RANGES[i % 3]
        epochs = int(rng.integers(1, 4))
        values = np.round(rng.uniform(lo, hi, size=int(rng.integers(2, 80))) * epochs) / epochs
        sets.append((values, lo, hi))
    for lo, hi in RANGES:
        sets += [
            (np.full(40, lo), lo, hi),  # every case at the low end
            (np.full(40, hi), lo, hi),  # ... at the high end
            (np.zeros(100) if lo < 0 else np.full(100, 0.5), lo, hi),  # no discordance
            (np.concatenate([np.zeros(99), [hi]]), lo, hi),  # one case moved
        ]
    return sets


def _no_array_fallback(*_args: object) -> np.ndarray:
    raise AssertionError("the scalar statistic fell back to the arrays inside the range")


@pytest.mark.parametrize("values,lo,hi", _data_sets()[::15] + _data_sets()[-12:])
def test_the_scalar_statistic_is_the_array_statistic_bit_for_bit(values, lo, hi, monkeypatch):
    support, counts = support_counts(values, lo, hi)
    z_at = _one_row_statistic(support, counts)
    span = hi - lo
    deltas = [lo + 1e-12 * span, hi - 1e-12 * span, float(values.mean()), (lo + hi) / 2]
    deltas += list(np.linspace(lo, hi, 23)[1:-1])
    deltas = [d for d in deltas if lo < d < hi]  # score_interval asks only inside the range
    with monkeypatch.context() as m:
        if support.size <= intervals._SCALAR_SUPPORT:  # larger supports take the arrays by design
            m.setattr(intervals, "score_statistic", _no_array_fallback)
        scalar = [z_at(delta) for delta in deltas]
    for delta, z in zip(deltas, scalar, strict=True):
        assert z == float(score_statistic(support, counts, delta)[0]), (values.tolist(), delta)


def test_every_data_set_agrees_and_intervals_keep_their_known_values():
    for values, lo, hi in _data_sets():
        support, counts = support_counts(values, lo, hi)
        z_at = _one_row_statistic(support, counts)
        for delta in np.linspace(lo, hi, 7)[1:-1]:
            assert z_at(delta) == float(score_statistic(support, counts, delta)[0])
    # Wilson's interval for 25 of 30 at 95%, and its half-width z^2 / (n + z^2) when all 100 cases pass.
    _, (low, high), _ = score_interval(np.array([1.0] * 25 + [0.0] * 5), 0.95, 0.0, 1.0)
    assert (low, high) == pytest.approx((0.6643564949358397, 0.9266345762817346), abs=1e-12)
    _, (low, _), _ = score_interval(np.ones(100), 0.95, 0.0, 1.0)
    assert 1 - low == pytest.approx(1.959963984540054**2 / (100 + 1.959963984540054**2), abs=1e-9)
