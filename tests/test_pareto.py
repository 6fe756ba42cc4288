"""Pareto machinery against brute force: sorting, crowding, hypervolume, contributions, bounds."""

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from star.errors import StarError
from star.objectives import Normaliser, parse_objectives
from star.pareto import contributions, crowding_distance, dominates, hypervolume, non_dominated_sort
from star.validate import parse_amount

points_2_to_4d = st.integers(2, 4).flatmap(
    lambda d: st.lists(st.tuples(*[st.integers(0, 6)] * d), min_size=1, max_size=14))


@settings(max_examples=60, deadline=None)
@given(points_2_to_4d)
def test_non_dominated_sort_matches_brute_force(points):
    fronts = non_dominated_sort(points)
    assert sorted(i for f in fronts for i in f) == list(range(len(points)))
    remaining = set(range(len(points)))
    for front in fronts:
        expected = {i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining)}
        assert set(front) == expected
        remaining -= expected


def _grid_volume(points, reference):
    """Count unit cells dominated by integer points: an independent exact hypervolume."""
    cells = itertools.product(*[range(int(r)) for r in reference])
    return sum(any(all(p[m] <= c[m] for m in range(len(c))) for p in points) for c in cells)


@settings(max_examples=60, deadline=None)
@given(points_2_to_4d)
def test_hypervolume_is_exact_on_integer_grids(points):
    reference = (7,) * len(points[0])
    assert hypervolume(points, reference) == pytest.approx(_grid_volume(points, reference))


def test_hypervolume_examples_and_contributions():
    assert hypervolume([(1, 2), (2, 1)], (3, 3)) == pytest.approx(3.0)
    assert hypervolume([(0.5, 0.5, 0.5)], (1, 1, 1)) == pytest.approx(0.125)
    assert hypervolume([(2, 2)], (1, 1)) == 0.0  # worse than the reference adds nothing
    assert contributions([(1, 2), (2, 1), (2, 2)], (3, 3)) == pytest.approx([1.0, 1.0, 0.0])


def test_crowding_distance_boundaries_infinite_interior_normalised():
    d = crowding_distance([(0, 4), (1, 3), (3, 1), (4, 0)])
    assert math.isinf(d[0]) and math.isinf(d[3])
    assert d[1] == pytest.approx((3 - 0) / 4 + (4 - 1) / 4)
    assert d[2] == pytest.approx((4 - 1) / 4 + (3 - 0) / 4)


def test_hypervolume_3d_agrees_with_monte_carlo():
    rng = random.Random(0)
    pts = [tuple(rng.random() for _ in range(3)) for _ in range(25)]
    exact = hypervolume(pts, (1.0, 1.0, 1.0))
    samples = [tuple(rng.random() for _ in range(3)) for _ in range(40000)]
    hits = sum(any(all(p[m] <= s[m] for m in range(3)) for p in pts) for s in samples)
    assert exact == pytest.approx(hits / len(samples), abs=0.01)


def test_normaliser_maps_best_to_zero_and_maximised_objectives_flip():
    n = Normaliser(("quality", "params"), ("max", "min"), (0.0, 100.0), (1.0, 300.0))
    assert n.point({"quality": 1.0, "params": 100.0}) == (0.0, 0.0)
    assert n.point({"quality": 0.0, "params": 300.0}) == (1.0, 1.0)
    assert Normaliser.from_dict(n.to_dict()) == n


def test_amounts_and_objective_names_parse_or_fail_clearly():
    assert parse_amount("400M", "x") == 4e8 and parse_amount("2GiB", "x") == 2 * 2**30 and parse_amount("20", "x") == 20
    for bad in ("fast", "-1", "0", "3Q", "1e999", "nan", "inf", "9" * 400):
        with pytest.raises(StarError):
            parse_amount(bad, "--max-params")
    assert [o.name for o in parse_objectives("quality, params")] == ["quality", "params"]
    for bad in ("quality", "quality,speed", "params,params"):
        with pytest.raises(StarError):
            parse_objectives(bad)
