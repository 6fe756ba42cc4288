"""Evaluations per hour of `star search` with 1 and 2 Ray workers, on real suite evaluations.

Each configuration runs the same search (space lfm2, objectives quality and params, seed 0) through
the real path, Ray tasks, proxy training on the 50-task suite and the Parquet store, for `--budget`
evaluations at fidelity `--fidelity`.  Ray is started once, before the clock starts.  Configurations:
- 1 worker with every core (the default for --workers 1),
- 1 worker with one core (the per-worker baseline),
- N workers with cores/N each (the default for --workers N).

    python benchmarks/search_throughput.py [--budget 6] [--fidelity 64K] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray

from star.machine import machine_name
from star.search import Search, SearchSettings, create_run


def measure(folder: Path, budget: int, fidelity: str, workers: int, threads: int) -> float:
    settings = SearchSettings(space="lfm2", objectives=["quality", "params"], budget=budget, population=8,
                              fidelities=[fidelity])
    store = create_run(folder, settings)
    search = Search(store, workers=workers, threads_per_worker=threads)
    start = time.perf_counter()
    search.run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=6)
    parser.add_argument("--fidelity", default="64K")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {machine_name()}", flush=True)  # the CPU kind every figure below belongs to
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    configs = [("1 worker x all cores", 1, cores), ("1 worker x 1 core", 1, 1),
               (f"{args.workers} workers x {max(1, cores // args.workers)} core(s)", args.workers,
                max(1, cores // args.workers))]
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, workers, threads) in enumerate(configs):
            wall = measure(Path(tmp) / str(i), args.budget, args.fidelity, workers, threads)
            rates[name] = args.budget / wall * 3600
            print(f"{name:<28} {args.budget} evaluations in {wall:6.1f} s = {rates[name]:7.1f} evaluations/hour",
                  flush=True)
    many = configs[2][0]
    print(f"\n{many} vs 1 worker x all cores: {rates[many] / rates[configs[0][0]]:.2f}x; "
          f"vs 1 worker x 1 core: {rates[many] / rates[configs[1][0]]:.2f}x  ({cores} cores, fidelity {args.fidelity})")


if __name__ == "__main__":
    main()
