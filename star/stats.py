"""Rank statistics shared by the benchmarks.

Kendall's τ lives here once so that every figure the benchmarks report is the same statistic: tau-a
(concordant minus discordant pairs over all pairs) counts a tied pair against agreement, tau-b does
not, and on tied data the two differ (two benchmarks used one each).  Standard library only: the
core layer imports neither torch nor anything above it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two paired samples: (C − D) / √((C + D + Tb)(C + D + Ta)).

    C and D count the concordant and discordant pairs, Ta the pairs tied in `a` alone and Tb those
    tied in `b` alone; a pair tied in both counts nowhere.  So a ranking compared with itself scores
    1 and with its reverse −1 even when it has ties, which tau-a does not.  NaN when either sample
    is constant (every pair tied): no ranking, no correlation.  O(n²): the benchmarks rank a few
    dozen architectures."""
    if len(a) != len(b):
        raise ValueError(f"kendall_tau needs paired samples, got {len(a)} and {len(b)} values")
    concordant = discordant = tied_a = tied_b = 0
    for i, j in combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        if da == 0 and db == 0:
            continue
        if da == 0:
            tied_a += 1
        elif db == 0:
            tied_b += 1
        elif (da > 0) == (db > 0):
            concordant += 1
        else:
            discordant += 1
    denominator = math.sqrt((concordant + discordant + tied_b) * (concordant + discordant + tied_a))
    return (concordant - discordant) / denominator if denominator else math.nan
