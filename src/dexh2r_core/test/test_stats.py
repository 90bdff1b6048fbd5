"""Small-sample statistics: Wilson intervals, the median's order-statistic interval, McNemar."""

from __future__ import annotations

import numpy as np
import pytest

from dexh2r_core.stats import mcnemar_exact, median_interval, wilson_interval


def test_wilson_interval_known_values_and_edges():
    lo, hi = wilson_interval(33, 50)  # 0.66: the easy set's success, session 15
    assert (lo, hi) == pytest.approx((0.5215, 0.7756), abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and 0.05 < wilson_interval(0, 50)[1] < 0.08
    assert wilson_interval(50, 50)[1] == 1.0
    for n in range(1, 60):  # exact ends, no float residue
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(5, 3)


def test_wilson_interval_covers_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    p, n = 0.3, 50
    k = rng.binomial(n, p, size=4000)
    covered = np.mean([lo <= p <= hi for lo, hi in (wilson_interval(int(x), n) for x in k)])
    assert 0.93 < covered < 0.97


def test_median_interval_order_statistics():
    assert median_interval(range(1, 51)) == (18.0, 33.0)  # the textbook n = 50 pair
    assert median_interval([5, 1, 4, 2, 6, 3]) == (1.0, 6.0)  # n = 6: min and max (96.9 %)
    assert median_interval([1, 2, 3, 4, 5]) is None  # no pair reaches 95 %
    rng = np.random.default_rng(1)
    intervals = [median_interval(rng.normal(size=30)) for _ in range(2000)]
    covered = np.mean([lo <= 0.0 <= hi for lo, hi in intervals])
    assert covered >= 0.94


def test_mcnemar_exact():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # six changes, all one way: p = 0.031
    assert mcnemar_exact(1, 7) == pytest.approx(2 * 9 / 256)
    assert mcnemar_exact(7, 1) == mcnemar_exact(1, 7)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)
