"""Does the suite rank architectures the way published work says, and stably across seeds?

Evaluates eight fixed proxy architectures on the suite (the three reference proxies on three seeds,
the other five on two), then prints:
- in-context recall of attention-proxy against conv-proxy (Zoology: attention far above gated
  convolutions on associative recall) and the share of attention's score that lfm2-proxy recovers;
- their real-text scores (a "local" skill where the two should be close);
- Kendall's tau between seed 0 and seed 1 of the aggregate over the eight architectures.

Every finished evaluation is appended to a JSON-lines file, so an interrupted run resumes where it
stopped.  On a GPU, `--jobs N` runs N evaluations at once, each in its own process: a proxy's step
there is bound by kernel launches on the host, so several processes share one GPU well.

    python benchmarks/suite_discrimination.py [--fidelity default] [--results FILE.jsonl]
    python benchmarks/suite_discrimination.py --fidelity gpu --device cuda --jobs 19
    python benchmarks/suite_discrimination.py --train-on in_context_recall --fidelity 8M \
        --results benchmarks/suite_recall.jsonl --seeds-other 0 [--only attention-proxy,conv-proxy]

`--train-on` trains every proxy on some tasks or categories alone (MAD-style, one skill at a time),
so that all of a CPU's budget goes to the skill in question.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path

from star.arch import ArchConfig, BlockConfig, LongConvMixer, RecurrenceMixer
from star.machine import machine_name
from star.presets import get_preset, hybrid, lfm2_layout
from star.scaling import to_proxy
from star.stats import kendall_tau


def _with_mixer(base: ArchConfig, name: str, mixer: object) -> ArchConfig:
    return replace(base, name=name, blocks=tuple(BlockConfig(mixer=mixer, ffn=b.ffn) for b in base.blocks))


ARCHITECTURES: dict[str, Callable[[], ArchConfig]] = {
    "attention-proxy": lambda: get_preset("attention-proxy"),
    "conv-proxy": lambda: get_preset("conv-proxy"),
    "lfm2-proxy": lambda: get_preset("lfm2-proxy"),
    "lfm2-1.2b-proxy": lambda: to_proxy(get_preset("lfm2-1.2b")),
    "recurrence-proxy": lambda: _with_mixer(get_preset("conv-proxy"), "recurrence-proxy", RecurrenceMixer(4, 32)),
    "long-conv-proxy": lambda: _with_mixer(get_preset("conv-proxy"), "long-conv-proxy", LongConvMixer(64)),
    "lfm2-half-depth": lambda: hybrid("lfm2-half-depth", 128, 4, 2, 512, 512, lfm2_layout()[:8], max_positions=4096),
    "attention-first": lambda: hybrid("attention-first", 128, 4, 2, 512, 512,
                                      ["attention"] * 6 + ["short_conv"] * 10, max_positions=4096),
}
REFERENCE = ("attention-proxy", "conv-proxy", "lfm2-proxy")


def plan(seeds_reference: int, seeds_other: int) -> list[tuple[str, int]]:
    runs = [(name, seed) for seed in range(seeds_reference) for name in REFERENCE]
    runs += [(name, seed) for seed in range(seeds_other) for name in ARCHITECTURES if name not in REFERENCE]
    return runs


def run_one(name: str, seed: int, fidelity: str, device: str, threads: int | None, train_on: str | None) -> dict:
    """One evaluation (in a worker process when --jobs > 1)."""
    from star.evaluators.suite import evaluate
    from star.evaluators.tasks import select_tasks

    tasks = select_tasks(train_on) if train_on else None
    result = evaluate(ARCHITECTURES[name](), fidelity, seed=seed, device=device, threads=threads, tasks=tasks,
                      train_on=tasks).to_dict()
    result["architecture"] = name
    result["train_on"] = train_on or "all"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fidelity", default="default", help="suite fidelity (default: default)")
    parser.add_argument("--results", default="benchmarks/suite_discrimination.jsonl", help="JSON-lines results")
    parser.add_argument("--seeds-reference", type=int, default=3, help="seeds for the three reference proxies")
    parser.add_argument("--seeds-other", type=int, default=2, help="seeds for the other five architectures")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--jobs", type=int, default=1, help="evaluations at once, one process each")
    parser.add_argument("--deadline-s", type=float, default=0.0,
                        help="start no evaluation after this many seconds (0: none); the summary covers what finished")
    parser.add_argument("--only", help="comma-separated architectures to run (default: all eight)")
    parser.add_argument("--train-on", help="train on these tasks or categories alone and score only them "
                                           "(default: the whole mixture, all 50 tasks scored)")
    args = parser.parse_args()
    print(f"machine: {machine_name()}", flush=True)  # the CPU kind every figure below belongs to

    from star.evaluators.suite import get_fidelity

    fidelity = get_fidelity(args.fidelity)
    path = Path(args.results)
    done: dict[tuple[str, int], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["fidelity"]["tokens"] == fidelity.tokens and row.get("train_on", "all") == (args.train_on or "all"):
                done[(row["architecture"], row["seed"])] = row
    only = set(args.only.split(",")) if args.only else set(ARCHITECTURES)
    if only - set(ARCHITECTURES):
        parser.error(f"--only: unknown {sorted(only - set(ARCHITECTURES))}; choose from {list(ARCHITECTURES)}")
    todo = [run for run in plan(args.seeds_reference, args.seeds_other) if run not in done and run[0] in only]
    start = time.perf_counter()

    def record(result: dict) -> None:
        done[(result["architecture"], result["seed"])] = result
        with path.open("a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"{result['architecture']:18s} seed {result['seed']}: aggregate {result['aggregate']:.4f}, in-context "
              f"recall {result['categories']['in_context_recall']:.4f} ({result['timing']['total_s']:.0f} s, "
              f"{result['training']['tokens_per_s']:,.0f} tok/s, {time.perf_counter() - start:.0f} s since start)",
              flush=True)

    threads = 1 if args.jobs > 1 else None
    if args.jobs == 1:
        for name, seed in todo:
            if args.deadline_s and time.perf_counter() - start > args.deadline_s:
                break
            record(run_one(name, seed, args.fidelity, args.device, threads, args.train_on))
    else:
        import multiprocessing

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = {pool.submit(run_one, name, seed, args.fidelity, args.device, threads, args.train_on)
                       for name, seed in todo}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    record(future.result())
                if args.deadline_s and time.perf_counter() - start > args.deadline_s:
                    for future in pending:
                        future.cancel()

    def scores(name: str, key: str) -> list[float]:
        rows = [r for (n, _), r in sorted(done.items()) if n == name]
        return [r["aggregate"] if key == "aggregate" else r["categories"][key] for r in rows]

    print(f"\nfidelity {fidelity.name} ({fidelity.tokens:,} tokens); mean ± sd over seeds")
    present = [name for name in REFERENCE if scores(name, "aggregate")]
    categories = [*done[next(iter(done))]["categories"], "aggregate"] if done else []
    print(f"{'':18s} " + "".join(f"{name:>26s}" for name in present))
    for key in categories:
        cells = []
        for name in present:
            values = scores(name, key)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {sd:.4f} (n={len(values)})")
        print(f"{key:18s} " + "".join(f"{cell:>26s}" for cell in cells))
    if len(present) == len(REFERENCE):
        attention, conv, lfm2 = (statistics.mean(scores(n, "in_context_recall")) for n in REFERENCE)
        print(f"in-context recall: attention / conv = {attention / max(conv, 1e-9):.2f}; "
              f"lfm2 recovers {100 * lfm2 / max(attention, 1e-9):.0f}% of attention (target >= 90%)")
    names = [n for n in ARCHITECTURES if (n, 0) in done and (n, 1) in done]
    first = [done[(n, 0)]["aggregate"] for n in names]
    second = [done[(n, 1)]["aggregate"] for n in names]
    for n, x, y in zip(names, first, second, strict=True):
        print(f"  {n:18s} seed 0 {x:.4f}  seed 1 {y:.4f}")
    if len(names) >= 2:
        print(f"Kendall's tau of the aggregate, seed 0 vs seed 1, over {len(names)} architectures: "
              f"{kendall_tau(first, second):.3f} (target >= 0.8)")


if __name__ == "__main__":
    main()
