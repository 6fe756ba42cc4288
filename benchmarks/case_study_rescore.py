"""Re-score a run's Pareto set and its seeded presets on two seeds, at the run's top fidelity and at the
next rung up, and say whether the front holds.

A front chosen on one seed at one fidelity is worth only as much as that ranking survives a second
seed and more training.  For every genome of the run's front and every seeded preset this trains the
genome's proxy exactly as a search worker does (its proxy, the run's precision and device, one
thread per process, the recall probe run anew for each seed):

- at the run's top fidelity with the second seed: the two-seed spread of quality at the run's own
  rung, the noise against which a quality margin there means something;
- at the next fidelity up (`high` above `default`) with both seeds: Kendall's tau between the run's
  ranking and the re-scored one, and the front recomputed with the two-seed mean quality (decode
  latency and cache bytes are the run's own: they do not depend on training).

A front too large to re-score whole is sampled systematically (`--every 3`: ranks 1, 4, 7, ...).
`--ablate PRESET` asks which genes buy the quality margin of each genome that dominates the preset
by more than the two-seed spread: the preset is evaluated with one of the dominator's differences
at a time (each global gene, then the whole layout), at the run's fidelity on both seeds.

Every finished evaluation is appended to a JSON-lines file, so an interrupted run resumes and
`--summary` reprints the figures without training.

    python benchmarks/case_study_rescore.py [--run RUN] [--every N] [--ablate PRESETS] [--jobs 2] [--summary]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from case_study_figures import gene_differences, genes, layout  # benchmarks/ is on sys.path

from star.evaluators.fidelity import FIDELITIES, Fidelity, get_fidelity
from star.genome import Genome, SearchSpace, genome_id
from star.machine import machine_name
from star.objectives import Normaliser, format_value
from star.pareto import dominates
from star.presets import get_preset
from star.queries import front_rows
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


def fidelity_flag(fidelity: Fidelity) -> str:
    """What `get_fidelity` reads back: a level's name, or a custom budget in K tokens."""
    return fidelity.name if fidelity.level >= 0 else f"{fidelity.tokens // 1024}K"


def next_rung_up(fidelity: Fidelity) -> Fidelity:
    """The named level above a run's top fidelity (a custom budget: the first level with more tokens)."""
    above = [f for f in FIDELITIES if f.tokens > fidelity.tokens and f.train_on == fidelity.train_on]
    if not above:
        raise SystemExit(f"no CPU fidelity above {fidelity.name}; name one with --fidelity")
    return above[0]


def ablations(space: SearchSpace, preset: Genome, dominator: Genome) -> dict[str, Genome]:
    """The preset with one of the dominator's differences at a time: each global gene that differs,
    and the dominator's layout (all block genes together), each repaired to canonical form."""
    n = len(space.global_genes)
    variants = {}
    for i, gene in enumerate(space.global_genes):
        unused = space.repair([*dominator[:i], preset[i], *dominator[i + 1:]]) == tuple(dominator)  # e.g. no convs
        if preset[i] != dominator[i] and not unused:
            variants[gene.name] = space.repair([*preset[:i], dominator[i], *preset[i + 1:]])
    if preset[n:] != dominator[n:]:
        variants["layout"] = space.repair([*preset[:n], *dominator[n:]])
    return {name: genome for name, genome in variants.items() if genome != preset}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="results/lfm2-cpu", help="run folder (default: results/lfm2-cpu)")
    parser.add_argument("--fidelity", default=None, help="the rung up (default: the level above the run's top)")
    parser.add_argument("--seeds", default=None, help="two seeds (default: the run's seed and the next)")
    parser.add_argument("--results", default="benchmarks/case_study_rescore.jsonl", help="JSON-lines results")
    parser.add_argument("--jobs", type=int, default=2, help="evaluations at once, one process and thread each")
    parser.add_argument("--every", type=int, default=1,
                        help="re-score every Nth genome of the front by rank (1: all; the presets always)")
    parser.add_argument("--summary", action="store_true", help="print the figures from --results, train nothing")
    parser.add_argument("--ablate", default="", metavar="PRESETS",
                        help="comma-separated seeded presets: also evaluate, at the run's fidelity on both seeds, each "
                             "with one gene of each clear dominator at a time (which genes buy the quality margin)")
    args = parser.parse_args()
    print(f"machine: {machine_name()}", flush=True)  # the CPU kind every figure below belongs to

    store = RunStore.open(args.run)
    settings = store.manifest["settings"]
    normaliser = Normaliser.from_dict(store.manifest["normaliser"])
    space = get_space(settings["space"])
    front = front_rows(store)
    top = front[0]["rung"]
    run_fidelity = get_fidelity(settings["fidelities"][top])
    up = get_fidelity(args.fidelity) if args.fidelity else next_rung_up(run_fidelity)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [settings["seed"], settings["seed"] + 1]
    if len(seeds) != 2 or seeds[0] != settings["seed"]:
        raise SystemExit(f"--seeds: two seeds, the first the run's own ({settings['seed']})")
    top_rows = {r["genome_id"]: r for r in store.rows if r["status"] == "ok" and r["rung"] == top}
    presets = {}
    for name in settings["seed_presets"]:
        genome = ",".join(map(str, space.encode(get_preset(name))))
        found = [g for g, r in top_rows.items() if r["genome"] == genome]  # presets reach the top rung
        if found:
            presets[found[0]] = name
        else:
            print(f"{name}: not evaluated at rung {top} (yet)")
    # a systematic sample of the front when it is too large to re-score whole: ranks 1, 1 + every, ...
    sampled = [r["genome_id"] for r in front[::args.every]]
    chosen = [*sampled, *(g for g in presets if g not in sampled)]

    path = Path(args.results)
    done: dict[tuple[int, int, str], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["run"] == args.run:
                done[(entry["fidelity"]["tokens"], entry["seed"], entry["genome_id"])] = entry
    print(f"run {args.run}: {len(chosen)} genomes ({len(sampled)} of the {len(front)} on the front at rung {top} "
          f"({run_fidelity.name}), every {args.every}"
          f"; presets {sorted(presets.values())}); seeds {seeds}; {args.jobs} evaluations at once", flush=True)
    configs = {g: r["config_json"] for g, r in top_rows.items()}
    evaluator = settings["evaluator"]

    def run(wanted: list[tuple[Fidelity, int, str]], extra: dict[str, dict] | None = None) -> None:
        """Evaluate what `wanted` names and the results file lacks, appending each as it finishes."""
        todo = [(f, s, g) for f, s, g in wanted if (f.tokens, s, g) not in done]
        if not todo or args.summary:
            return
        print(f"{len(todo)} evaluations to run", flush=True)
        start = time.perf_counter()
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = {pool.submit(rescore_one, configs[g], fidelity_flag(f), s, evaluator["precision"],
                                   evaluator["device"]): (f, s, g) for f, s, g in todo}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    f, s, g = pending.pop(future)
                    entry = {"run": args.run, "genome_id": g, **(extra or {}).get(g, {}), **future.result()}
                    done[(f.tokens, s, g)] = entry
                    with path.open("a") as out:
                        out.write(json.dumps(entry) + "\n")
                    print(f"  {g} {f.name} seed {s}: {entry['aggregate']:.4f} ({entry['timing']['total_s']:.0f} s; "
                          f"{time.perf_counter() - start:.0f} s since start; {len(pending)} left)", flush=True)

    # the second seed at the run's own rung first: it sets the noise the ablations are judged against
    run([(run_fidelity, seeds[1], g) for g in chosen])
    if args.ablate:
        spread = max(abs(top_rows[g]["quality"] - done[(run_fidelity.tokens, seeds[1], g)]["aggregate"])
                     for g in chosen if (run_fidelity.tokens, seeds[1], g) in done)
        extra = {}
        for g in (g for g, name in presets.items() if name in args.ablate.split(",")):
            point = normaliser.point(top_rows[g])
            for o in (r["genome_id"] for r in front):
                if o == g or not dominates(normaliser.point(top_rows[o]), point) \
                        or top_rows[o]["quality"] - top_rows[g]["quality"] <= spread:
                    continue
                genome = tuple(int(x) for x in top_rows[g]["genome"].split(","))
                other = tuple(int(x) for x in top_rows[o]["genome"].split(","))
                for gene, variant in ablations(space, genome, other).items():
                    vid = genome_id(space.name, variant)
                    configs[vid] = space.decode(variant).to_json()
                    extra[vid] = {"ablation": {"preset": g, "dominator": o, "gene": gene}}
        run([(run_fidelity, s, v) for s in seeds for v in extra], extra)
    run([(up, s, g) for s in seeds for g in chosen])
    summarise(args.run, chosen, front, presets, top_rows, done, run_fidelity, up, seeds, normaliser,
              settings["objectives"])


def summarise(run: str, chosen: list[str], front: list[dict], presets: dict[str, str], top_rows: dict[str, dict],
              done: dict, run_fidelity: Fidelity, up: Fidelity, seeds: list[int], normaliser: Normaliser,
              objectives: list[str]) -> None:
    def score(fidelity: Fidelity, seed: int, g: str) -> float | None:
        if fidelity.tokens == run_fidelity.tokens and seed == seeds[0]:
            return top_rows[g]["quality"]
        entry = done.get((fidelity.tokens, seed, g))
        return entry["aggregate"] if entry else None

    complete = [g for g in chosen if all(score(f, s, g) is not None for f in (run_fidelity, up) for s in seeds)]
    front_ids = [r["genome_id"] for r in front]
    print(f"\n{len(complete)} of {len(chosen)} genomes have all four scores ({run_fidelity.name} and {up.name} "
          f"({up.tokens // 1024}K tokens), seeds {seeds})")
    head = f"  {'genome_id':<12}  {'layout':<16}  {'genes':<26}"
    print(head + f"  {run_fidelity.name} s{seeds[0]}/s{seeds[1]}   {up.name} s{seeds[0]}/s{seeds[1]}"
          "   decode_ms  cache     front then/now")
    mean_up = {g: statistics.mean([score(up, s, g) for s in seeds]) for g in complete}
    points_up = {g: normaliser.point({**top_rows[g], "quality": mean_up[g]}) for g in complete}
    front_now = {g for g in complete if not any(dominates(points_up[o], points_up[g]) for o in complete if o != g)}
    for g in sorted(complete, key=lambda g: -mean_up[g]):
        r = top_rows[g]
        name = f"  ({presets[g]})" if g in presets else ""
        print(f"  {g:<12}  {layout(r):<16}  {genes(r):<26}  {score(run_fidelity, seeds[0], g):.4f}/"
              f"{score(run_fidelity, seeds[1], g):.4f}  {score(up, seeds[0], g):.4f}/{score(up, seeds[1], g):.4f}"
              f"  {format_value('decode_ms', r['decode_ms']):>9}  {format_value('cache_bytes', r['cache_bytes']):>8}"
              f"  {'yes' if g in front_ids else 'no':>4}/{'yes' if g in front_now else 'no'}{name}")

    spreads = {}
    for fidelity in (run_fidelity, up):
        diffs = [abs(score(fidelity, seeds[0], g) - score(fidelity, seeds[1], g)) for g in complete]
        spreads[fidelity.name] = max(diffs) if diffs else float("nan")
        if diffs:
            print(f"two-seed spread at {fidelity.name}: median {statistics.median(diffs):.4f}, max {max(diffs):.4f}")
    on_front = [g for g in front_ids if g in complete]
    for label, group in (("the front", on_front), ("the front and the presets", complete)):
        if len(group) >= 2:
            run_q = [top_rows[g]["quality"] for g in group]
            print(f"Kendall's tau, the run's quality ({run_fidelity.name}, seed {seeds[0]}) against the {up.name} "
                  f"two-seed mean, over {label} ({len(group)}): {kendall_tau(run_q, [mean_up[g] for g in group]):.3f}")
    if len(complete) >= 2:
        taus = [kendall_tau([score(f, seeds[0], g) for g in complete], [score(f, seeds[1], g) for g in complete])
                for f in (run_fidelity, up)]
        print(f"Kendall's tau, seed {seeds[0]} against seed {seeds[1]}: at {run_fidelity.name} {taus[0]:.3f}, "
              f"at {up.name} {taus[1]:.3f}")
    print(f"front at {up.name} (two-seed mean quality, the run's device objectives): {len(front_now)} genomes; "
          f"of the run's front {len(set(on_front) & front_now)} of {len(on_front)} stay")

    # Each preset against the run's front at its own rung: the margin of each dominator, against noise
    mean_run = {g: statistics.mean([score(run_fidelity, s, g) for s in seeds]) for g in complete}
    for g, name in presets.items():
        if g not in complete:
            continue
        point = normaliser.point(top_rows[g])
        dominators = [o for o in front_ids if o != g and dominates(normaliser.point(top_rows[o]), point)]
        print(f"\n{name} ({g}, {layout(top_rows[g])}, {genes(top_rows[g])}): "
              + (f"dominated at {run_fidelity.name} by {len(dominators)} of the run's front" if dominators
                 else "on the run's front"))
        for o in dominators:
            margin = top_rows[o]["quality"] - top_rows[g]["quality"]
            margin_mean = mean_run[o] - mean_run[g] if o in mean_run else float("nan")
            margin_up = mean_up[o] - mean_up[g] if o in mean_up else float("nan")
            noise = spreads[run_fidelity.name]
            verdict = "larger than" if min(margin, margin_mean) > noise else "within"
            print(f"  {o} {layout(top_rows[o])}: quality margin {margin:+.4f} (seed {seeds[0]}), "
                  f"{margin_mean:+.4f} (two-seed mean), {verdict} the two-seed spread {noise:.4f}; at {up.name} "
                  f"{margin_up:+.4f}; "
                  + ", ".join(f"{obj} {format_value(obj, top_rows[o][obj])} vs {format_value(obj, top_rows[g][obj])}"
                              for obj in objectives if obj != "quality")
                  + f"; genes that differ: {gene_differences(top_rows[g], top_rows[o])}")
    ablated = [e for e in done.values() if "ablation" in e and e["fidelity"]["tokens"] == run_fidelity.tokens]
    for preset_id, dominator in sorted({(e["ablation"]["preset"], e["ablation"]["dominator"]) for e in ablated}):
        if preset_id not in mean_run:
            continue
        print(f"\n{presets[preset_id]} with one difference of {dominator} at a time ({run_fidelity.name}, quality "
              f"two-seed mean against the preset's {mean_run[preset_id]:.4f}; the dominator "
              f"{mean_run.get(dominator, float('nan')) - mean_run[preset_id]:+.4f}):")
        for gene in sorted({e["ablation"]["gene"] for e in ablated if e["ablation"]["dominator"] == dominator}):
            scores = [e["aggregate"] for e in ablated if e["ablation"]["dominator"] == dominator
                      and e["ablation"]["preset"] == preset_id and e["ablation"]["gene"] == gene]
            if len(scores) == len(seeds):
                print(f"  {gene:<12} {statistics.mean(scores) - mean_run[preset_id]:+.4f} "
                      f"(seeds: {', '.join(f'{q:.4f}' for q in scores)})")
    print(f"\nresults: {len(done)} evaluations in the results file for {run}")


if __name__ == "__main__":
    main()
