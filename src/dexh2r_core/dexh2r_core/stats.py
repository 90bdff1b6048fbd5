"""Small-sample statistics for evaluation runs (standard library only, deterministic: no resampling).

A 50-episode success rate of 0.66 has a 95 % interval of about 0.52-0.78, so two runs that
differ by a few episodes may not differ at all. The evaluations report these intervals next to
their rates, and `dexh2r eval compare` tests paired runs (the same episodes, two versions of the
stack) with McNemar's exact test, which uses only the episodes whose outcome changed.

    wilson_interval(33, 50)            # (0.522, 0.776)
    median_interval([3.1, 4.0, ...])   # distribution-free interval for the median, or None
    mcnemar_exact(b=1, c=7)            # two-sided p-value: 1 gained / 7 lost successes -> 0.070
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist


def _binom_half_cdf(k: int, n: int) -> float:
    """P(Bin(n, 1/2) <= k), exact (integer sums)."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(min(k, n) + 1)) / 2**n


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a rate of k in n (good at small n and near 0 or 1, unlike the
    normal approximation; (0, 1) for n = 0)."""
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Exact ends for 0 and n (the formula leaves float residue there, e.g. 1e-17).
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free interval for the median: the order statistics (l, u) around it that
    cover it with at least `confidence` (the binomial(n, 1/2) rule); None below 6 values, where
    even (min, max) covers less than 95 %."""
    x = sorted(float(v) for v in values)
    n = len(x)
    alpha = 1.0 - confidence
    # The largest k with P(Bin(n, 1/2) < k) <= alpha / 2: the interval [x_(k), x_(n-k+1)].
    k = 0
    while k < n // 2 and _binom_half_cdf(k, n) <= alpha / 2:
        k += 1
    if k < 1:
        return None
    return x[k - 1], x[n - k]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes: b pairs went 0 -> 1, c went
    1 -> 0 (the pairs that did not change carry no information). 1.0 when nothing changed."""
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0, got {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * _binom_half_cdf(min(b, c), n))
