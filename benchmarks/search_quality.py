"""How good is our searcher, and what does multi-fidelity save?

Part 1, search quality.  Same evaluation budget, several seeds, four searchers:
- ours, `nsga2` selection (STAR) and `hvi` selection (LFM2's report), exactly the `Evolution` class
  `star search` uses, driven in memory (no Ray, no files: the machinery is tested elsewhere);
- random search (uniform genomes, repaired);
- Optuna's `NSGAIISampler` on the flattened genome (one `suggest_int` per gene, repaired before
  evaluation, Optuna's defaults except the population size, which matches ours).
Objectives: quality from the synthetic evaluator (`star.evaluators.synthetic`, a documented formula
that stands in for the suite so that hundreds of runs take minutes; observed at the default fidelity,
384K tokens), predicted decode latency (ryzen-hx370 roofline model) and cache bytes at 4K context.
Hypervolume: each objective normalised with the bounds `star search` writes in its manifest (256
random genomes of the space, seed 0; quality on [0, 1]), minimised, reference point 1.1 on every axis;
the figure is the hypervolume of the feasible non-dominated set of all evaluations of the run.

Part 2, multi-fidelity.  Our searcher with successive halving (children at the screening rung,
96K tokens, the top 1/3 promoted to the default, 384K) against the same searcher training everything
at the default.  Cost is training tokens.  Only default-rung evaluations count towards the
hypervolume (a low-fidelity score is not compared with them).
Reported: the final hypervolume of each at the same token budget, and the share of the budget that
multi-fidelity needs to reach single fidelity's final hypervolume (the saving at equal hypervolume).

    python benchmarks/search_quality.py [--seeds 5] [--budget 200] [--space lfm2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from star.evaluators.fidelity import get_fidelity
from star.evaluators.synthetic import evaluate_synthetic
from star.evolution import Evolution, EvolutionSettings, final_front
from star.genome import SearchSpace, genome_id
from star.machine import machine_name
from star.objectives import fit_normaliser, parse_objectives, screening_metrics
from star.pareto import hypervolume
from star.search_spaces import get_space

OBJECTIVES = "quality,decode_ms,cache_bytes"
DEVICE, PROMPT, CONTEXT = "ryzen-hx370", 1024, 4096


class Problem:
    """The benchmark's objective function with a cache (decoding and accounting cost milliseconds)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.objectives = parse_objectives(OBJECTIVES)
        self.normaliser = fit_normaliser(self.objectives, space, DEVICE, PROMPT, CONTEXT)
        self._cache: dict[tuple[str, int], dict[str, float]] = {}

    def values(self, genome: tuple[int, ...], tokens: int) -> dict[str, float]:
        key = (genome_id(self.space.name, genome), tokens)
        if key not in self._cache:
            config = self.space.decode(genome)
            metrics = screening_metrics(config, DEVICE, PROMPT, CONTEXT)
            metrics.update(evaluate_synthetic(config, tokens, seed=0))
            self._cache[key] = metrics
        return self._cache[key]

    def point(self, genome: tuple[int, ...], tokens: int) -> tuple[float, ...]:
        return self.normaliser.point(self.values(genome, tokens))

    def hypervolume(self, points: list[tuple[float, ...]]) -> float:
        return hypervolume(points, self.normaliser.reference)


def run_ours(problem: Problem, budget: int, seed: int, selection: str, fidelities: list[str],
             cost_budget: float | None = None) -> list[tuple[float, tuple[float, ...] | None]]:
    """(cumulative training tokens, normalised point if it is a top-fidelity evaluation) per evaluation."""
    tokens = [get_fidelity(f).tokens for f in fidelities]
    settings = EvolutionSettings(seed=seed, population=32, selection=selection, rungs=len(tokens))
    evo = Evolution(problem.space, settings, problem.normaliser)
    trace, spent, job = [], 0.0, 0
    while (job < budget) if cost_budget is None else (spent < cost_budget):
        proposal = evo.ask(job)
        values = problem.values(proposal.genome, tokens[proposal.rung])
        spent += tokens[proposal.rung]
        evo.tell({"job": job, "rung": proposal.rung, "genome_id": proposal.genome_id, "status": "ok",
                  "genome": ",".join(map(str, proposal.genome)), "violation": 0.0, **values})
        top = proposal.rung == len(tokens) - 1
        trace.append((spent, problem.normaliser.point(values) if top else None))
        job += 1
    return trace


def run_random(problem: Problem, budget: int, seed: int) -> list[tuple[float, ...]]:
    rng = random.Random(seed)
    tokens = get_fidelity("2").tokens
    return [problem.point(problem.space.sample(rng), tokens) for _ in range(budget)]


def run_optuna(problem: Problem, budget: int, seed: int) -> list[tuple[float, ...]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names, sizes = problem.space.gene_names(), problem.space.gene_sizes()
    tokens = get_fidelity("2").tokens
    points: list[tuple[float, ...]] = []

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        raw = [trial.suggest_int(n, 0, s - 1) for n, s in zip(names, sizes, strict=True)]
        point = problem.point(problem.space.repair(raw), tokens)
        points.append(point)
        return point

    sampler = optuna.samplers.NSGAIISampler(population_size=32, seed=seed)
    study = optuna.create_study(directions=["minimize"] * len(problem.objectives), sampler=sampler)
    study.optimize(objective, n_trials=budget)
    return points


def front_hv(problem: Problem, points: list[tuple[float, ...]]) -> float:
    from star.evolution import Candidate

    front = final_front([Candidate(str(i), (), 0, p, 0.0) for i, p in enumerate(points)])
    return problem.hypervolume([c.point for c in front])


def cost_to_reach(trace: list[tuple[float, tuple[float, ...] | None]], problem: Problem, target: float) -> float:
    points: list[tuple[float, ...]] = []
    for spent, point in trace:
        if point is not None:
            points.append(point)
            if front_hv(problem, points) >= target:
                return spent
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=200, help="evaluations per search (part 1)")
    parser.add_argument("--space", default="lfm2")
    parser.add_argument("--mf-seeds", type=int, default=10, help="seeds for part 2 (it is noisier)")
    args = parser.parse_args()
    print(f"machine: {machine_name()}", flush=True)  # the CPU kind every figure below belongs to
    problem = Problem(get_space(args.space))

    print(f"part 1: hypervolume after {args.budget} evaluations, space {args.space}, {args.seeds} seeds "
          f"(objectives {OBJECTIVES}; normalised, reference 1.1)")
    results: dict[str, list[float]] = {}
    timings: dict[str, float] = {}
    for name, run in (("ours (nsga2)", lambda s: [p for _, p in run_ours(problem, args.budget, s, "nsga2", ["2"])]),
                      ("ours (hvi)", lambda s: [p for _, p in run_ours(problem, args.budget, s, "hvi", ["2"])]),
                      ("random", lambda s: run_random(problem, args.budget, s)),
                      ("optuna NSGAIISampler", lambda s: run_optuna(problem, args.budget, s))):
        t0 = time.perf_counter()
        results[name] = [front_hv(problem, run(seed)) for seed in range(args.seeds)]
        timings[name] = time.perf_counter() - t0
    baseline = statistics.mean(results["random"])
    for name, values in results.items():
        print(f"  {name:<22} HV {statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}  "
              f"(x{statistics.mean(values) / baseline:.3f} of random; per seed "
              f"{', '.join(f'{v:.4f}' for v in values)}; {timings[name]:.1f} s)")
    best = max(results, key=lambda n: statistics.mean(results[n]))
    print(f"  best on average: {best}")

    cost_budget = args.budget * get_fidelity("2").tokens
    low, top = (f"{get_fidelity(f).tokens // 1024}K" for f in ("0", "2"))
    print(f"\npart 2: multi-fidelity ({low} → {top}, eta 3) vs single fidelity ({top}), same token budget "
          f"({cost_budget / 2**20:.0f}M tokens = {args.budget} evaluations at {top}), {args.mf_seeds} seeds")
    finals_single, finals_multi, fractions = [], [], []
    for seed in range(args.mf_seeds):
        single = run_ours(problem, 0, seed, "nsga2", ["2"], cost_budget)
        multi = run_ours(problem, 0, seed, "nsga2", ["0", "2"], cost_budget)
        hv_single = front_hv(problem, [p for _, p in single if p is not None])
        hv_multi = front_hv(problem, [p for _, p in multi if p is not None])
        # Equal hypervolume: the tokens multi-fidelity needs to match single fidelity's final hypervolume.
        c_multi = cost_to_reach(multi, problem, hv_single)
        fractions.append(c_multi / cost_budget)
        finals_single.append(hv_single)
        finals_multi.append(hv_multi)
        reached = f"{c_multi / 2**20:.0f}M tokens ({100 * c_multi / cost_budget:.0f}%)" if c_multi < float("inf") \
            else "not reached"
        print(f"  seed {seed}: final HV single {hv_single:.4f} ({len(single)} evals), multi {hv_multi:.4f} "
              f"({len(multi)} evals, {sum(p is not None for _, p in multi)} at {top}); multi reaches single's "
              f"final HV after {reached}")
    reached = [f for f in fractions if f < float("inf")]
    print(f"  final HV at equal tokens: single {statistics.mean(finals_single):.4f} ± "
          f"{statistics.stdev(finals_single):.4f}, multi {statistics.mean(finals_multi):.4f} ± "
          f"{statistics.stdev(finals_multi):.4f}")
    print(f"  multi-fidelity matched single fidelity's final HV in {len(reached)}/{len(fractions)} seeds"
          + (f", using on median {100 * statistics.median(reached):.0f}% of the tokens "
             f"(saving {100 * (1 - statistics.median(reached)):.0f}%)" if reached else ""))

if __name__ == "__main__":
    main()
