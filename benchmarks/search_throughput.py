"""Evaluations per hour of `star search` with 1 and 2 Ray workers, on real suite evaluations.

Each configuration runs the same search (space lfm2, objectives quality and params, seed 0) through
the real path, Ray tasks, proxy training on the 50-task suite and the Parquet store, for `--budget`
evaluations at fidelity `--fidelity`.  Ray is started once, before the clock starts.  Configurations:
- 1 worker with every core (the default for --workers 1),
- 1 worker with one core (the per-worker baseline),
- N workers with cores/N each (the default for --workers N).

With `--nodes N`, on a real multi-node cluster started on this machine instead (`ray start` processes,
one CPU per node; tests/cluster_helpers.py): the search joins it with `--ray-address`, first while it
has one node (1 node x 1 CPU), then after N-1 more nodes join (N nodes x 1 CPU, one worker each).
With a budget no larger than the population, both runs evaluate the same genomes (the first
population is drawn before any result), so the two walls compare the same work.

    python benchmarks/search_throughput.py [--budget 6] [--fidelity 64K] [--workers 2]
    python benchmarks/search_throughput.py --nodes 2 [--budget 8] [--fidelity 0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

from star.machine import machine_name
from star.search import Search, SearchSettings, create_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cluster_helpers import LocalCluster  # the test suite's cluster, started the same way


def measure(folder: Path, budget: int, fidelity: str, workers: int, threads: int, address: str | None = None,
            population: int = 8) -> tuple[float, int, float, float]:
    """Wall seconds of one search, how many nodes ran its evaluations, their mean wall seconds, and
    the seconds until the first worker fell idle (the drain starts: budget - workers + 1 results in)."""
    settings = SearchSettings(space="lfm2", objectives=["quality", "params"], budget=budget, population=population,
                              fidelities=[fidelity])
    store = create_run(folder, settings)
    arrivals: list[float] = []
    search = Search(store, workers=workers, threads_per_worker=threads, ray_address=address,
                    progress=lambda _: arrivals.append(time.perf_counter()))
    start = time.perf_counter()
    search.run()
    wall = time.perf_counter() - start
    full = arrivals[budget - workers] - start
    failed = [r["reason"] for r in store.rows if r["status"] != "ok"]
    if failed:
        raise SystemExit(f"{len(failed)} evaluations failed: {failed[0]}")
    return wall, len({r["node"] for r in store.rows}), sum(r["wall_s"] for r in store.rows) / len(store.rows), full


def ceiling(copies: int) -> float:
    """What the machine itself allows: `copies` independent processes of one single-thread proxy
    training (no Ray, no search), throughput against one process alone.  On a VM whose CPUs share
    caches, memory bandwidth or a physical core, this is below `copies`, and no scheduler beats it."""
    command = [sys.executable, "-m", "star.cli", "eval", "--preset", "lfm2-proxy", "--fidelity", "128K",
               "--probe-steps", "0", "--threads", "1", "--precision", "fp32", "--json"]
    walls = {}
    for n in (1, copies):
        start = time.perf_counter()
        procs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
        if any(p.wait() != 0 for p in procs):
            raise SystemExit("star eval failed")
        walls[n] = time.perf_counter() - start
    return copies * walls[1] / walls[copies]


def across_nodes(nodes: int, budget: int, fidelity: str) -> None:
    """1 node x 1 CPU against `nodes` nodes x 1 CPU, on one cluster that grows between the runs."""
    cluster = LocalCluster(head_cpus=1)
    os.environ.update(cluster.driver_env)
    try:
        rates, steady = {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for count in (1, nodes):
                while len(cluster.nodes) + 1 < count:
                    cluster.add_node(cpus=1)
                wall, used, mean, full = measure(Path(tmp) / str(count), budget, fidelity, workers=count, threads=1,
                                                 address=cluster.address, population=max(budget, 2))
                rates[count] = budget / wall * 3600
                steady[count] = (budget - count + 1) / full * 3600
                print(f"{count} node(s) x 1 CPU, {count} worker(s): {budget} evaluations in {wall:6.1f} s = "
                      f"{rates[count]:7.1f} evaluations/hour; {steady[count]:7.1f} while every worker was busy "
                      f"(on {used} node(s); one evaluation {mean:.1f} s on average)", flush=True)
        print(f"\n{nodes} nodes vs 1 node: {rates[nodes] / rates[1]:.2f}x end to end, "
              f"{steady[nodes] / steady[1]:.2f}x while every worker was busy (the last {nodes - 1} evaluation(s) "
              f"finish with workers idle)  (fidelity {fidelity}, nodes on this machine: {os.cpu_count()} cores)",
              flush=True)
    finally:
        ray.shutdown()
        cluster.stop()
    print(f"the machine's own ceiling, {nodes} independent single-thread trainings vs 1: {ceiling(nodes):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=6)
    parser.add_argument("--fidelity", default="64K")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=0, help="compare 1 node with this many, on a real cluster")
    args = parser.parse_args()
    print(f"machine: {machine_name()}", flush=True)  # the CPU kind every figure below belongs to
    if args.nodes:
        across_nodes(args.nodes, args.budget, args.fidelity)
        return
    cores = os.cpu_count() or 1
    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    configs = [("1 worker x all cores", 1, cores), ("1 worker x 1 core", 1, 1),
               (f"{args.workers} workers x {max(1, cores // args.workers)} core(s)", args.workers,
                max(1, cores // args.workers))]
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, workers, threads) in enumerate(configs):
            wall, *_ = measure(Path(tmp) / str(i), args.budget, args.fidelity, workers, threads)
            rates[name] = args.budget / wall * 3600
            print(f"{name:<28} {args.budget} evaluations in {wall:6.1f} s = {rates[name]:7.1f} evaluations/hour",
                  flush=True)
    many = configs[2][0]
    print(f"\n{many} vs 1 worker x all cores: {rates[many] / rates[configs[0][0]]:.2f}x; "
          f"vs 1 worker x 1 core: {rates[many] / rates[configs[1][0]]:.2f}x  ({cores} cores, fidelity {args.fidelity})")


if __name__ == "__main__":
    main()
