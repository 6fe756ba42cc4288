"""Pareto machinery, all on minimisation: non-dominated sorting, crowding distance, hypervolume and
each point's hypervolume contribution.

Callers turn maximised objectives into minimised ones (quality q → 1 − q) and normalise before
calling; see `star.objectives.Normaliser`.  Everything here is exact and deterministic: ties are
broken by input order, never by hashing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """a is no worse than b everywhere and strictly better somewhere (minimisation)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def non_dominated_sort(points: Sequence[Point]) -> list[list[int]]:
    """Fronts of indices: front 0 is non-dominated, front 1 is non-dominated once front 0 is gone, ...
    (Deb's sort, with the N x N dominance matrix computed at once by numpy)."""
    if len(points) == 0:
        return []
    p = np.asarray(points, dtype=float)
    beats = (p[:, None, :] <= p[None, :, :]).all(-1) & (p[:, None, :] < p[None, :, :]).any(-1)
    counts = beats.sum(0)
    remaining = np.ones(len(p), dtype=bool)
    fronts: list[list[int]] = []
    while remaining.any():
        front = np.flatnonzero(remaining & (counts == 0))
        fronts.append(front.tolist())
        remaining[front] = False
        counts = counts - beats[front].sum(0)
    return fronts


def pareto_indices(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points (duplicates of a non-dominated point are all kept)."""
    return non_dominated_sort(points)[0] if points else []


def crowding_distance(points: Sequence[Point]) -> list[float]:
    """NSGA-II crowding distance within one front: boundary points get infinity, the others the sum
    over objectives of the normalised gap between their neighbours."""
    n = len(points)
    if n <= 2:
        return [math.inf] * n
    distance = [0.0] * n
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: (points[i][m], i))
        lo, hi = points[order[0]][m], points[order[-1]][m]
        distance[order[0]] = distance[order[-1]] = math.inf
        if hi == lo:
            continue
        for k in range(1, n - 1):
            distance[order[k]] += (points[order[k + 1]][m] - points[order[k - 1]][m]) / (hi - lo)
    return distance


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """The volume dominated by `points` and bounded by `reference` (exact).

    Points not strictly better than the reference in every objective add nothing.  Two objectives
    use a sweep; more use slicing along the last objective (HSO), which is fast for the front sizes
    a search produces (tens to a few hundred points in 3-4 objectives)."""
    kept = [tuple(p) for p in points if all(x < r for x, r in zip(p, reference, strict=True))]
    if not kept:
        return 0.0
    return _hv(_front(kept), tuple(reference))


def contributions(points: Sequence[Point], reference: Point) -> list[float]:
    """Each point's exclusive hypervolume: what the set loses without it (0 for dominated points)."""
    total = hypervolume(points, reference)
    return [total - hypervolume([p for j, p in enumerate(points) if j != i], reference) for i in range(len(points))]


def _front(points: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    unique = sorted(set(points))
    return [unique[i] for i in pareto_indices(unique)]


def _hv(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in points)
    if len(reference) == 2:
        volume, best_y = 0.0, reference[1]
        for x, y in sorted(points):
            if y < best_y:
                volume += (reference[0] - x) * (best_y - y)
                best_y = y
        return volume
    # Slice along the last objective: between consecutive levels, the points at or below the
    # level form a (d-1)-dimensional set whose volume is constant over the slab.
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for k, point in enumerate(ordered):
        top = ordered[k + 1][-1] if k + 1 < len(ordered) else reference[-1]
        if top <= point[-1]:
            continue
        below = _front([p[:-1] for p in ordered[:k + 1]])
        volume += _hv(below, reference[:-1]) * (top - point[-1])
    return volume
