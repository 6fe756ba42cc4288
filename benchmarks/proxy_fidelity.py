"""Does the quality objective rank architectures the way real training does, and is it worth its cost?

The quality a search optimises (docs/suite.md) is the recall probe plus language modelling of real
text at the genome's proxy scale.  This benchmark evaluates a fixed set of architectures the way a
search worker does and prints every figure that issue 17 asks for:

- scale: the proxies of LFM2-350M, -700M and -1.2B in that order on each seed (the order of the
  real models' published scores);
- recall: in-context recall of lfm2-proxy (conv then attention) and conv-proxy (no attention);
- stability: Kendall's tau of the default-fidelity quality, seed 0 against seed 1;
- the ladder: tau between adjacent rungs (screen-default, default-high) over the same architectures;
- cost: the wall time of each default evaluation, and the machine it ran on.

Architectures: the three reference proxies, the LFM2 family, Qwen3-16 (all-attention at LFM2's
depth), and `--randoms` genomes of the lfm2 space drawn from `--space-seed`.  The headline figures in
docs/benchmarks.md use a space seed that was not used while designing the probe and the ladder.

Each (architecture, seed) runs the probe once and reuses it at every fidelity, as a search does for
a promoted genome.  Every finished evaluation is appended to a JSON-lines file, so an interrupted run
resumes where it stopped.

    python benchmarks/proxy_fidelity.py --space-seed 7 --results benchmarks/proxy_fidelity.jsonl
    python benchmarks/proxy_fidelity.py --only lfm2-proxy --seeds 1 --fidelities default   # one timing
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from star.stats import kendall_tau

FAMILY = ("lfm2-350m", "lfm2-700m", "lfm2-1.2b")
REFERENCE = ("lfm2-proxy", "attention-proxy", "conv-proxy")


def architectures(space_seed: int, randoms: int, extra: bool = False) -> dict[str, str]:
    """name → config JSON (at proxy scale), built here so that workers need nothing but the JSON.
    `extra` adds the lfm2 space's costliest genome (width 2048, SwiGLU ×5, 16 GQA blocks, 8 KV heads),
    for timing only: it is not one of the architectures the rankings are measured over."""
    from star.presets import get_preset
    from star.scaling import to_proxy
    from star.search_spaces import get_space

    configs = {name: get_preset(name) for name in REFERENCE}
    if extra:
        space = get_space("lfm2")
        configs["lfm2-space-costliest"] = to_proxy(space.decode((2, 4, 2, 0, *[1] * 16)))
    configs.update({name: to_proxy(get_preset(name)) for name in (*FAMILY, "qwen3-16")})
    space, rng = get_space("lfm2"), random.Random(space_seed)
    seen: set[tuple[int, ...]] = set()
    while len(seen) < randoms:
        genome = space.sample(rng)
        if genome in seen:
            continue
        seen.add(genome)
        config = space.decode(genome)
        configs[f"random-{len(seen)}"] = to_proxy(config)
    return {name: config.to_json() for name, config in configs.items()}


def layout(config_json: str) -> str:
    blocks = json.loads(config_json)["blocks"]
    return "".join("A" if b["mixer"]["kind"] == "attention" else "c" for b in blocks)


def run_one(name: str, config_json: str, seed: int, fidelities: list[str], probe: dict | None, threads: int,
            precision: str) -> list[dict]:
    """One architecture and seed: the probe (unless given), then each fidelity with the probe reused."""
    import torch

    from star.arch import ArchConfig
    from star.evaluators.probe import ProbeResult
    from star.evaluators.suite import evaluate
    from star.machine import machine_name

    torch.set_num_threads(threads)
    config = ArchConfig.from_json(config_json)
    reused = ProbeResult(probe["score"], probe["learning_rate"], probe["runs"], probe["wall_s"]) if probe else None
    out = []
    for fidelity in fidelities:
        started = time.perf_counter()
        result = evaluate(config, fidelity, seed=seed, threads=threads, precision=precision,
                          probe=reused if reused is not None else True)
        wall = time.perf_counter() - started
        first = reused is None
        reused = result.probe
        record = result.to_dict()
        record.update(architecture=name, fidelity_name=result.fidelity.name, layout=layout(config_json),
                      width=config.hidden_size, params=config.params(), wall_s=wall, probe_ran_here=first,
                      machine=machine_name())
        out.append(record)
    return out


def load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluation_cost(record: dict) -> float:
    """Wall seconds of the evaluation as a search's first evaluation of the genome pays it: with the
    probe, which the benchmark runs once per (architecture, seed) and its other rungs reuse."""
    return record["wall_s"] + (0.0 if record["probe_ran_here"] else record["probe"]["wall_s"])


def summarise(rows: list[dict], names: list[str], fidelities: list[str], recall_seeds: int) -> None:
    by = {(r["architecture"], r["seed"], r["fidelity_name"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    default = "default" if "default" in fidelities else fidelities[0]
    first = next(iter(rows), {})
    print(f"\nmachine: {first.get('machine', '?')}; torch threads {first.get('environment', {}).get('threads', '?')}; "
          f"text training precision {first.get('training', {}).get('precision', '?')}; probe fp32")
    print(f"\n{'architecture':17s} {'layout':17s} {'width':>5s} {'params':>7s}  " +
          "  ".join(f"{'recall s' + str(s):>9s}" for s in seeds) + "  " +
          "  ".join(f"{f[:7] + ' s' + str(s):>11s}" for f in fidelities for s in seeds) +
          f"  {'bpb ' + default[:4]:>9s}  {'wall ' + default[:4]:>9s}")
    for name in names:
        any_row = next((r for r in rows if r["architecture"] == name), None)
        if any_row is None:
            continue
        recalls = [by.get((name, s, fidelities[0]), {}).get("categories", {}).get("in_context_recall") for s in seeds]
        quals = [by.get((name, s, f), {}).get("aggregate") for f in fidelities for s in seeds]
        base = [by[(name, s, default)] for s in seeds if (name, s, default) in by]
        bpb = statistics.mean(statistics.mean(t["bits_per_byte"] for t in r["tasks"] if t.get("bits_per_byte"))
                              for r in base) if base else float("nan")
        wall = max((evaluation_cost(r) for r in base), default=float("nan"))
        fmt = lambda v: f"{v:9.3f}" if v is not None else f"{'-':>9s}"  # noqa: E731
        fmt11 = lambda v: f"{v:11.4f}" if v is not None else f"{'-':>11s}"  # noqa: E731
        print(f"{name:17s} {any_row['layout']:17s} {any_row['width']:5d} {any_row['params'] / 1e6:6.2f}M  " +
              "  ".join(fmt(v) for v in recalls) + "  " + "  ".join(fmt11(v) for v in quals) +
              f"  {bpb:9.3f}  {wall:8.1f}s")

    def quality(name: str, seed: int, fidelity: str) -> float | None:
        return by.get((name, seed, fidelity), {}).get("aggregate")

    print("\nScale (default fidelity): lfm2-350m < lfm2-700m < lfm2-1.2b")
    for s in seeds:
        values = [quality(n, s, default) for n in FAMILY]
        if None not in values:
            ok = values[0] < values[1] < values[2]
            print(f"  seed {s}: " + " < ".join(f"{v:.4f}" for v in values) + f"  {'holds' if ok else 'DOES NOT HOLD'}")

    print("\nRecall (the probe's score, and the best run's accuracy): lfm2-proxy >= 0.6, conv-proxy <= 0.1 "
          "on each seed")
    for name in ("lfm2-proxy", "conv-proxy", "attention-proxy"):
        probes = [by[(name, s, fidelities[0])]["probe"] for s in range(recall_seeds) if (name, s, fidelities[0]) in by]
        print(f"  {name:16s} " + ", ".join(
            f"{p['score']:.3f} ({max(r.get('accuracy') or 0.0 for r in p['runs']):.3f})" for p in probes))

    common = [n for n in names if all(quality(n, s, default) is not None for s in seeds[:2])]
    if len(seeds) >= 2:
        tau = kendall_tau([quality(n, seeds[0], default) for n in common],
                          [quality(n, seeds[1], default) for n in common])
        print(f"\nStability: Kendall's tau of {default} quality, seed {seeds[0]} vs seed {seeds[1]}, "
              f"over {len(common)} architectures: {tau:.3f}")
    print("\nThe ladder: Kendall's tau between adjacent rungs (same seed, same architectures)")
    for lower, upper in itertools.pairwise(fidelities):
        for s in seeds:
            both = [n for n in names if quality(n, s, lower) is not None and quality(n, s, upper) is not None]
            if len(both) >= 3:
                tau = kendall_tau([quality(n, s, lower) for n in both], [quality(n, s, upper) for n in both])
                print(f"  {lower} vs {upper}, seed {s}, {len(both)} architectures: {tau:.3f}")
    walls = [(evaluation_cost(r), r["architecture"]) for r in rows if r["fidelity_name"] == default]
    if walls:
        print(f"\nCost of one {default} evaluation (probe + training + scoring, {len(walls)} runs, "
              f"{first.get('environment', {}).get('threads', '?')} torch thread(s) each, two runs at once): "
              f"median {statistics.median(w for w, _ in walls):.1f} s, max {max(walls)[0]:.1f} s ({max(walls)[1]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space-seed", type=int, default=7, help="seed of the random lfm2-space genomes")
    parser.add_argument("--randoms", type=int, default=5, help="random lfm2-space genomes (default 5)")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per architecture (default 2)")
    parser.add_argument("--recall-seeds", type=int, default=3,
                        help="seeds for lfm2-proxy, conv-proxy and attention-proxy (default 3; probe and default)")
    parser.add_argument("--fidelities", default="screen,default,high", help="rungs, low to high")
    parser.add_argument("--top-seeds", type=int, default=1, help="seeds that also run the last fidelity (default 1)")
    parser.add_argument("--results", default="benchmarks/proxy_fidelity.jsonl", help="JSON-lines results")
    parser.add_argument("--only", help="comma-separated architectures to run")
    parser.add_argument("--jobs", type=int, default=1, help="(architecture, seed) runs at once, one process each")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: cores / jobs)")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                        help="text training precision (the probe is always fp32)")
    parser.add_argument("--summary", action="store_true", help="print the summary of the results file and stop")
    parser.add_argument("--probes-from", help="reuse the probe results of this earlier results file")
    args = parser.parse_args()

    fidelities = [f.strip() for f in args.fidelities.split(",") if f.strip()]
    configs = architectures(args.space_seed, args.randoms, extra=bool(args.only))
    names = [n for n in configs if (n in args.only.split(",") if args.only else n != "lfm2-space-costliest")]
    path = Path(args.results)
    rows = [r for r in load(path) if r["architecture"] in names]
    if args.summary:
        summarise(rows, names, fidelities, args.recall_seeds)
        return
    done = {(r["architecture"], r["seed"], r["fidelity_name"]) for r in rows}
    earlier = load(Path(args.probes_from)) if args.probes_from else []
    probes = {(r["architecture"], r["seed"]): r["probe"] for r in [*earlier, *rows] if r.get("probe")}
    plan = []
    for seed in range(max(args.seeds, args.recall_seeds)):
        for name in names:
            if seed >= args.seeds and name not in REFERENCE:
                continue
            wanted = [f for i, f in enumerate(fidelities)
                      if (i < len(fidelities) - 1 or seed < args.top_seeds) and (seed < args.seeds or i == 0)]
            todo = [f for f in wanted if (name, seed, f) not in done]
            if todo:
                plan.append((name, seed, todo))
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"{len(plan)} runs to do ({sum(len(t) for _, _, t in plan)} evaluations), {args.jobs} at once, "
          f"{threads} threads each", flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        pending = {}
        queue = list(plan)
        while queue or pending:
            while queue and len(pending) < args.jobs:
                name, seed, todo = queue.pop(0)
                future = pool.submit(run_one, name, configs[name], seed, todo, probes.get((name, seed)), threads,
                                     args.precision)
                pending[future] = (name, seed)
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                name, seed = pending.pop(future)
                for record in future.result():
                    with path.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    rows.append(record)
                    categories = record["categories"]
                    print(f"[{time.perf_counter() - started:6.0f} s] {name} seed {seed} {record['fidelity_name']}: "
                          f"quality {record['aggregate']:.4f} (recall {categories['in_context_recall']:.3f}, "
                          f"text {categories.get('real_text', float('nan')):.4f}) in {record['wall_s']:.0f} s",
                          flush=True)
    summarise(rows, names, fidelities, args.recall_seeds)


if __name__ == "__main__":
    main()
