"""The searcher: steady-state multi-objective evolution over genomes, with successive-halving fidelities.

`ask(job)` proposes the next evaluation and `tell(row)` takes a finished one; nothing else changes the
state, and the random stream of proposal `job` is seeded by (run seed, job).  So the state after a
list of finished evaluations is a pure function of that list: resuming a crashed run replays its
`evaluations.parquet` through `tell` and carries on exactly where an uninterrupted one-worker run
would be.

Proposals, in order of priority:
1. promotions (asynchronous successive halving): a seeded preset, always (so that every preset is
   scored at the top rung, where the final front is made), and a genome in the top 1/eta of its
   rung, ranked as below, are re-evaluated at the next fidelity;
2. the seeded presets, then random genomes until `population` distinct genomes have been proposed;
3. children: two tournament-selected parents, block-wise crossover (probability `crossover`), point
   mutations, repair, and rejection of duplicates (by genome id) and of children over the
   constraints (screening: nothing over budget is ever trained).

Selection (`population` survivors, updated after every evaluation at the first rung): genomes are
compared at the one fidelity every genome has, the first rung, never a lower-rung score against a
higher-rung one (a promoted genome's later scores come from more training, not a better genome);
higher rungs serve the promotions and the final front (`star.queries.front_rows`).
- "nsga2" (STAR): constrained domination (feasible first, infeasible by total excess), then
  non-dominated rank, then crowding distance;
- "hvi" (LFM2's technical report): candidates over the budgets are discarded, the rest ranked by
  non-dominated rank, then by hypervolume improvement (exclusive contribution) within their front.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from star.genome import Genome, SearchSpace, genome_id
from star.objectives import Normaliser
from star.pareto import contributions, crowding_distance, dominates, hypervolume, non_dominated_sort

SELECTIONS = ("nsga2", "hvi")


@dataclass(frozen=True)
class Proposal:
    job: int
    genome: Genome
    genome_id: str
    rung: int
    origin: str  # "seed:<preset>", "random", "child" or "promotion"
    parents: tuple[str, ...] = ()


@dataclass
class Candidate:
    genome_id: str
    genome: Genome
    rung: int
    point: tuple[float, ...]
    violation: float


@dataclass
class EvolutionSettings:
    seed: int
    population: int = 32
    selection: str = "nsga2"
    rungs: int = 1  # number of fidelity levels (1: no successive halving)
    eta: int = 3
    crossover: float = 0.9
    mutation_rate: float | None = None  # default: 2 / number of genes
    seeds: list[tuple[str, Genome]] = field(default_factory=list)  # (preset name, genome)


Screen = Callable[[Genome], float]  # a genome's constraint excess (0: within budget)


def rank_order(candidates: Sequence[Candidate], selection: str) -> list[int]:
    """Indices of `candidates`, best first, under the selection rule (see the module docstring)."""
    feasible = [i for i, c in enumerate(candidates) if c.violation == 0]
    infeasible = sorted((i for i, c in enumerate(candidates) if c.violation > 0),
                        key=lambda i: (candidates[i].violation, i))
    order: list[int] = []
    points = [candidates[i].point for i in feasible]
    for front in non_dominated_sort(points):
        front_points = [points[k] for k in front]
        if selection == "hvi":
            score = contributions(front_points, _reference(front_points))
        else:
            score = crowding_distance(front_points)
        ranked = sorted(range(len(front)), key=lambda k: (-score[k], feasible[front[k]]))
        order.extend(feasible[front[k]] for k in ranked)
    if selection == "hvi" and order:
        return order  # LFM2: candidates over the device budgets are discarded
    return order + infeasible


def _reference(points: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """A reference point that every point of the front beats, so boundary points keep a contribution."""
    return tuple(max(1.1, max(p[m] for p in points) + 0.1) for m in range(len(points[0])))


class Evolution:
    def __init__(self, space: SearchSpace, settings: EvolutionSettings, normaliser: Normaliser,
                 point_of: Callable[[dict[str, Any]], tuple[float, ...]] | None = None,
                 screen: Screen | None = None) -> None:
        if settings.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}")
        self.space, self.settings, self.normaliser = space, settings, normaliser
        self.screen = screen or (lambda genome: 0.0)
        self.mutation_rate = settings.mutation_rate or min(1.0, 2.0 / len(space.gene_sizes()))
        self.population: list[Candidate] = []
        self.archive = Archive()
        self.rungs: list[list[Candidate]] = [[] for _ in range(settings.rungs)]
        self.tried: list[set[str]] = [set() for _ in range(settings.rungs)]  # finished or in flight, per rung
        self.in_flight: dict[int, Proposal] = {}
        self.screened_out = 0

    # ---- the two entry points --------------------------------------------------------------------

    def ask(self, job: int) -> Proposal:
        rng = random.Random(f"{self.settings.seed}:{job}")
        proposal = self._promotion(job) or self._initial(job, rng) or self._child(job, rng)
        self.in_flight[job] = proposal
        self.tried[proposal.rung].add(proposal.genome_id)
        return proposal

    def tell(self, row: dict[str, Any]) -> None:
        """A finished evaluation (a row of evaluations.parquet, ok or failed)."""
        self.in_flight.pop(int(row["job"]), None)
        rung, gid = int(row["rung"]), str(row["genome_id"])
        self.tried[rung].add(gid)
        if row["status"] != "ok":
            return
        genome = tuple(int(g) for g in str(row["genome"]).split(","))
        candidate = Candidate(gid, genome, rung, self.normaliser.point(row), float(row["violation"]))
        self.rungs[rung].append(candidate)
        if rung != 0:
            return
        self.archive.add(candidate)
        pool = [c for c in self.population if c.genome_id != gid] + [candidate]
        order = rank_order(pool, self.settings.selection)
        self.population = [pool[i] for i in order[:self.settings.population]]

    # ---- what the driver reads -------------------------------------------------------------------

    def hypervolume(self) -> float:
        """Of the first rung's feasible front (the rung every genome has)."""
        return hypervolume([c.point for c in self.archive.front], self.normaliser.reference)

    # ---- proposals -------------------------------------------------------------------------------

    def _promotion(self, job: int) -> Proposal | None:
        seeds = {genome_id(self.space.name, genome) for _, genome in self.settings.seeds}
        for rung in range(self.settings.rungs - 2, -1, -1):
            for c in self.rungs[rung]:
                if c.genome_id in seeds and c.genome_id not in self.tried[rung + 1]:
                    return Proposal(job, c.genome, c.genome_id, rung + 1, "promotion")
        for rung in range(self.settings.rungs - 2, -1, -1):
            members = [c for c in self.rungs[rung] if c.violation == 0]
            quota = len(members) // self.settings.eta
            if quota == 0:
                continue
            for i in rank_order(members, self.settings.selection)[:quota]:
                c = members[i]
                if c.genome_id not in self.tried[rung + 1]:
                    return Proposal(job, c.genome, c.genome_id, rung + 1, "promotion")
        return None

    def _initial(self, job: int, rng: random.Random) -> Proposal | None:
        for name, genome in self.settings.seeds:
            gid = genome_id(self.space.name, genome)
            if gid not in self.tried[0]:
                return Proposal(job, genome, gid, 0, f"seed:{name}")
        if len(self.tried[0]) >= self.settings.population:
            return None
        return self._random(job, rng)

    def _random(self, job: int, rng: random.Random) -> Proposal:
        genome = self.space.sample(rng)
        for _ in range(1000):
            gid = genome_id(self.space.name, genome)
            if gid not in self.tried[0] and self._passes(genome):
                break
            genome = self.space.sample(rng)
        return Proposal(job, genome, genome_id(self.space.name, genome), 0, "random")

    def _child(self, job: int, rng: random.Random) -> Proposal:
        parents_pool = [c for c in self.population if c.violation == 0] or self.population
        if not parents_pool:
            return self._random(job, rng)
        for _ in range(200):
            a = self._tournament(parents_pool, rng)
            if rng.random() < self.settings.crossover and len(parents_pool) > 1:
                b = self._tournament(parents_pool, rng)
                child = self.space.crossover(a.genome, b.genome, rng)[0]
                parents: tuple[str, ...] = (a.genome_id, b.genome_id)
            else:
                child, parents = a.genome, (a.genome_id,)
            child = self.space.mutate(child, rng, self.mutation_rate)
            gid = genome_id(self.space.name, child)
            if gid in self.tried[0] or not self._passes(child):
                continue
            return Proposal(job, child, gid, 0, "child", parents)
        return self._random(job, rng)

    def _tournament(self, pool: list[Candidate], rng: random.Random) -> Candidate:
        """Binary tournament: `pool` is in rank order, so the lower index wins."""
        i, j = rng.randrange(len(pool)), rng.randrange(len(pool))
        return pool[min(i, j)]

    def _passes(self, genome: Genome) -> bool:
        if self.screen(genome) > 0:
            self.screened_out += 1
            return False
        return True

def final_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The feasible non-dominated candidates, in input order."""
    feasible = [c for c in candidates if c.violation == 0 and all(math.isfinite(x) for x in c.point)]
    if not feasible:
        return []
    keep = set(non_dominated_sort([c.point for c in feasible])[0])
    return [c for i, c in enumerate(feasible) if i in keep]


class Archive:
    """The feasible Pareto front of one rung's evaluations, kept up to date one evaluation at a time
    (the callers feed it the first rung only: points from different rungs are not comparable)."""

    def __init__(self) -> None:
        self.best: dict[str, Candidate] = {}
        self.front: list[Candidate] = []

    def add(self, candidate: Candidate) -> None:
        """Take an evaluation (one of a genome already seen replaces it)."""
        previous = self.best.get(candidate.genome_id)
        self.best[candidate.genome_id] = candidate
        if previous is not None and any(c.genome_id == previous.genome_id for c in self.front):
            self.front = final_front(list(self.best.values()))  # a front member changed: recompute
        elif candidate.violation == 0 and not any(dominates(c.point, candidate.point) for c in self.front):
            self.front = [c for c in self.front if not dominates(candidate.point, c.point)] + [candidate]
