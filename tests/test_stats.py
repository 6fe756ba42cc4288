"""The one Kendall's τ every benchmark reports (star/stats.py), against values worked out by hand."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from star.stats import kendall_tau


def test_tau_b_of_a_small_example_with_ties_worked_out_by_hand():
    """a = 1 2 2 3 4, b = 1 3 2 2 5; the ten pairs (i, j):
    concordant (0,1) (0,2) (0,3) (0,4) (1,4) (2,4) (3,4): C = 7
    discordant (1,3): a rises 2 → 3, b falls 3 → 2: D = 1
    (1,2) tied in a alone (2 = 2; b 3 vs 2): Ta = 1;  (2,3) tied in b alone (a 2 vs 3; b 2 = 2): Tb = 1
    tau-b = (7 − 1) / √((7 + 1 + 1)(7 + 1 + 1)) = 6/9 = 2/3  (tau-a would be 6/10)."""
    assert kendall_tau([1, 2, 2, 3, 4], [1, 3, 2, 2, 5]) == pytest.approx(2 / 3)


def test_a_pair_tied_in_both_samples_counts_nowhere():
    """a = 1 1 2, b = 1 1 3: (0,1) tied in both, (0,2) and (1,2) concordant:
    tau-b = 2 / √((2 + 0)(2 + 0)) = 1  (tau-a would be 2/3)."""
    assert kendall_tau([1, 1, 2], [1, 1, 3]) == pytest.approx(1.0)


def test_unequal_ties_on_each_side():
    """a = 1 2 3 4, b = 1 1 1 2: pairs among the first three are tied in b alone (Tb = 3); (0,3) (1,3)
    (2,3) concordant (C = 3, D = 0): tau-b = 3 / √((3 + 0 + 3)(3 + 0 + 0)) = 3/√18 = 1/√2."""
    assert kendall_tau([1, 2, 3, 4], [1, 1, 1, 2]) == pytest.approx(1 / math.sqrt(2))
    assert kendall_tau([1, 1, 1, 2], [1, 2, 3, 4]) == pytest.approx(1 / math.sqrt(2))  # symmetric


rankings = st.lists(st.integers(0, 5), min_size=2, max_size=12).filter(lambda x: len(set(x)) > 1)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(rankings)
def test_a_ranking_against_itself_is_1_and_against_its_reverse_minus_1(x):
    """With ties too, which is what tau-b is for."""
    assert kendall_tau(x, x) == pytest.approx(1.0)
    assert kendall_tau(x, [-v for v in x]) == pytest.approx(-1.0)


def test_no_ranking_no_correlation_and_unpaired_samples_are_refused():
    assert math.isnan(kendall_tau([3, 3, 3], [1, 2, 3]))
    with pytest.raises(ValueError, match="paired"):
        kendall_tau([1, 2, 3], [1, 2])
