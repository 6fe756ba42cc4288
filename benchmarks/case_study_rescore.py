"""Re-score a run's Pareto set and its seeded presets at a higher fidelity, and recompute the front.

The case study's quality comes from 512K-token proxies, where the suite ranks architectures little
better than noise (docs/benchmarks.md).  At `high` (2M tokens) it ranks them stably (Kendall's tau
0.929 between seeds), so this asks: with quality measured there, does the seeded LFM2 layout stay
dominated, and by what?  Decode latency and cache bytes are the run's own (they do not depend on
training).  Each genome is evaluated exactly as a search worker would (its proxy, the run's seed,
precision and device), with 1 thread per process as in the run.

Every finished evaluation is appended to a JSON-lines file, so an interrupted run resumes.

    python benchmarks/case_study_rescore.py [--run results/lfm2-cpu] [--fidelity high] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from case_study_figures import layout  # benchmarks/ is on sys.path when a script there runs

from star.machine import machine_name
from star.objectives import Normaliser, format_value
from star.pareto import dominates
from star.presets import get_preset
from star.queries import best_per_genome, front_rows
from star.search_spaces import get_space
from star.stats import kendall_tau
from star.store import RunStore


def rescore_one(config_json: str, fidelity: str, seed: int, precision: str, device: str) -> dict:
    """One evaluation in a worker process: the genome's proxy, as the search's executor evaluates it."""
    from star.arch import ArchConfig
    from star.evaluators.suite import evaluate
    from star.scaling import to_proxy

    result = evaluate(to_proxy(ArchConfig.from_json(config_json)), fidelity, seed=seed, threads=1,
                      precision=precision, device=device)
    return result.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="results/lfm2-cpu", help="run folder (default: results/lfm2-cpu)")
    parser.add_argument("--fidelity", default="high", help="fidelity to re-score at (default: high, 2M tokens)")
    parser.add_argument("--results", default="benchmarks/case_study_rescore.jsonl", help="JSON-lines results")
    parser.add_argument("--jobs", type=int, default=2, help="evaluations at once, one process and thread each")
    args = parser.parse_args()
    print(f"machine: {machine_name()}", flush=True)  # the CPU kind every figure below belongs to

    from star.evaluators.fidelity import get_fidelity

    fidelity = get_fidelity(args.fidelity)
    store = RunStore.open(args.run)
    settings = store.manifest["settings"]
    objectives = settings["objectives"]
    normaliser = Normaliser.from_dict(store.manifest["normaliser"])
    space = get_space(settings["space"])
    rows = {r["genome_id"]: r for r in best_per_genome(store.rows)}
    by_genome = {r["genome"]: r for r in rows.values()}
    front = [r["genome_id"] for r in front_rows(store)]
    presets = {by_genome[",".join(map(str, space.encode(get_preset(p))))]["genome_id"]: p
               for p in settings["seed_presets"]}
    chosen = [*front, *(g for g in presets if g not in front)]

    path = Path(args.results)
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["run"] == args.run and entry["fidelity"]["tokens"] == fidelity.tokens \
                    and entry["seed"] == settings["seed"]:
                done[entry["genome_id"]] = entry
    todo = [g for g in chosen if g not in done]
    print(f"{len(chosen)} genomes ({len(front)} on the front, presets {sorted(presets.values())}); "
          f"{len(todo)} to evaluate at {fidelity.name} ({fidelity.tokens:,} tokens), {args.jobs} at once", flush=True)
    start = time.perf_counter()
    evaluator = settings["evaluator"]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {pool.submit(rescore_one, rows[g]["config_json"], args.fidelity, settings["seed"],
                               evaluator["precision"], evaluator["device"]): g for g in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                genome_id = pending.pop(future)
                entry = {"run": args.run, "genome_id": genome_id, **future.result()}
                done[genome_id] = entry
                with path.open("a") as f:
                    f.write(json.dumps(entry) + "\n")
                print(f"  {genome_id} {layout(rows[genome_id])}: {entry['aggregate']:.4f} "
                      f"({entry['timing']['total_s']:.0f} s; {time.perf_counter() - start:.0f} s since start)",
                      flush=True)

    present = [g for g in chosen if g in done]
    rescored = {g: {**rows[g], "quality": done[g]["aggregate"]} for g in present}
    points = {g: normaliser.point(r) for g, r in rescored.items()}
    print(f"\nquality at the run's fidelity and at {fidelity.name} ({fidelity.tokens:,} tokens), "
          f"seed {settings['seed']}:")
    print("  genome_id     layout             run quality (tokens)  rescored  decode_ms  cache     in front then/now")
    for g in sorted(present, key=lambda g: -rescored[g]["quality"]):
        r, now_front = rows[g], not any(dominates(points[o], points[g]) for o in present if o != g)
        name = f" ({presets[g]})" if g in presets else ""
        print(f"  {g}  {layout(r)}  {r['quality']:.4f} ({r['fidelity_tokens'] // 1024}K)"
              f"{rescored[g]['quality']:>14.4f}  {format_value('decode_ms', r['decode_ms']):>9}  "
              f"{format_value('cache_bytes', r['cache_bytes']):>8}  {'yes' if g in front else 'no':>4}/"
              f"{'yes' if now_front else 'no'}{name}")
    for g, preset in presets.items():
        if g not in points:
            continue
        dominators = [o for o in present if o != g and dominates(points[o], points[g])]
        print(f"{preset} ({g}): " + (f"dominated by {len(dominators)} of the re-scored: {', '.join(dominators)}"
                                     if dominators else "not dominated by any re-scored genome"))
    top_tokens = max(r["fidelity_tokens"] for r in rows.values())
    both = [g for g in present if rows[g]["fidelity_tokens"] == top_tokens]
    if len(both) >= 2:
        tau = kendall_tau([rows[g]["quality"] for g in both], [rescored[g]["quality"] for g in both])
        print(f"Kendall's tau, run quality against re-scored quality, over the {len(both)} genomes evaluated at "
              f"the run's top fidelity: {tau:.3f}")
    print(f"objectives {objectives}; {len(present)} of {len(chosen)} re-scored")


if __name__ == "__main__":
    main()
