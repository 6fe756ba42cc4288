"""Which rule inside one measuring process repeats best on a busy host?

A whole-model measurement (`measure.measure_model`) runs in a fresh process and reduces many timed
calls to one figure; `measure_in_passes` then takes the fastest of several such processes.  On a
shared VM the host slows a process down in stretches of a fraction of a second to minutes, so the
figure a process reports depends on what it does with its calls.  This script records every call's
time, then compares rules on the same calls:

- the median of the calls over the first 0.3 s (the rule until 2026-12-07), or over 1, 2 or 3 s;
- the 10th percentile over 1, 2 or 3 s;
- the fastest call, and the fastest median of 5 consecutive calls, over 1, 2 or 3 s.

For each rule it prints, per phase: the share of single processes within ±10% of the model's median
over all its processes, the spread (slowest process over fastest: median and worst over models),
and how well the fastest of processes 1-3 agrees with the fastest of processes 4-6 (what the
passes of `latency_accuracy.py` and of a profile's calibration rely on).  Each pass visits every
model once, so a model's processes are spread over the whole run.

    python benchmarks/timing_rules.py --sample benchmarks/latency_issue19/headline_seed32.jsonl \\
        --models 6 --passes 6 --window 3 --out calls.jsonl
    python benchmarks/timing_rules.py --rescore calls.jsonl

The models are the proxies (or with `--kind full` the full-size models) of an earlier
`latency_accuracy.py --out` file, every `len/--models`-th one; prefill of 256 tokens and decode at
a context of 1024, as there.  Decode steps grow the cache (a proxy's by about half over 3 s), so the
longer windows measure decode at a longer context, unless `--decode-burst N` sets the cache back to
the prompt's every N steps (untimed).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import statistics
import time
from collections.abc import Callable

import torch

from star.arch import ArchConfig
from star.evaluators.measure import quantile_of, tune_allocator
from star.machine import cpu_kind, fingerprint
from star.model import StarLM

PROMPT, CONTEXT, THREADS = 256, 1024, 2


def record_calls(model_json: str, window_s: float, burst: int, canary_mib: int, queue: multiprocessing.Queue) -> None:
    """In a fresh process: every prefill's and then every decode step's ms over `window_s` each; with
    `burst`, the cache is set back to the prompt's after every `burst` steps (untimed), so that every
    step decodes at the same context.  With `canary_mib`, each decode step is followed by a burst of a
    memory-bound canary (`memory_canary`) lasting about as long, whose calls' median is kept per step."""
    torch.set_num_threads(THREADS)
    tune_allocator()
    config = ArchConfig.from_json(model_json)
    torch.manual_seed(0)
    with torch.inference_mode():
        model = StarLM(config).eval()
        ids = torch.randint(0, config.vocab_size, (1, PROMPT))

        def prefill() -> float:  # as measure._model_and_prefill_ms times it: the state made outside
            state = model.init_state(1)
            began = time.perf_counter()
            model(ids, state)
            return time.perf_counter() - began

        prefills = _calls(prefill, window_s)
        state = model.init_state(1)
        model(torch.randint(0, config.vocab_size, (1, CONTEXT)), state)
        token = torch.randint(0, config.vocab_size, (1,))

        snapshot = copy.deepcopy(state) if burst else None
        steps = 0

        def decode() -> float:
            nonlocal state, steps
            if burst and steps % burst == 0:
                state = copy.deepcopy(snapshot)
            steps += 1
            began = time.perf_counter()
            model.step(token, state)
            return time.perf_counter() - began

        if not canary_mib:
            queue.put((prefills, _calls(decode, window_s), []))
            return
        canary = memory_canary(canary_mib)
        decodes, canaries = [], []
        start = time.perf_counter()
        while time.perf_counter() - start < window_s:
            decodes.append(1e3 * decode())
            calls = [1e3 * canary()]
            while sum(calls) < decodes[-1]:
                calls.append(1e3 * canary())
            canaries.append(statistics.median(calls))
    queue.put((prefills, decodes, canaries))


def memory_canary(mib: int) -> Callable[[], float]:
    """A call timing one matrix-vector product over `mib` MiB of fp32 weights (1024 wide), far beyond the
    last-level cache: what a large model's decode step does for each of its layers, without the model.
    It returns the seconds the call took."""
    weight = torch.randn(mib * 2**20 // (4 * 1024), 1024)
    vector = torch.randn(1, 1024)

    def once() -> float:
        began = time.perf_counter()
        torch.nn.functional.linear(vector, weight)
        return time.perf_counter() - began

    return once


def _calls(once: Callable[[], float], window_s: float) -> list[float]:
    """ms of each call of `once` (returning the seconds it timed) for `window_s` seconds."""
    out: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < window_s:
        out.append(1e3 * once())
    return out


def record(sample: str, models: int, passes: int, window_s: float, out: str, burst: int = 0,
           kind: str = "proxy", max_params: float = float("inf"), canary_mib: int = 0) -> None:
    with open(sample) as f:
        rows = [json.loads(line) for line in f][1:]
    found: dict[str, str] = {}
    for row in rows:
        if row["kind"] == kind and row["params"] <= max_params:
            found.setdefault(row["name"], row["model"])
    chosen = list(found.items())[:: max(1, len(found) // models)][:models]
    context = multiprocessing.get_context("spawn")
    with open(out, "w") as f:
        f.write(json.dumps({"machine": cpu_kind(fingerprint()), "sample": sample, "window_s": window_s,
                            "prompt": PROMPT, "context": CONTEXT, "threads": THREADS, "decode_burst": burst,
                            "kind": kind, "memory_canary_mib": canary_mib}) + "\n")
        for index in range(passes):
            for name, model_json in chosen:
                queue = context.Queue()
                process = context.Process(target=record_calls, args=(model_json, window_s, burst, canary_mib, queue))
                process.start()
                prefills, decodes, canaries = queue.get()
                process.join()
                f.write(json.dumps({"pass": index, "name": name, "time": time.time(),
                                    "prefill": [round(t, 4) for t in prefills],
                                    "decode": [round(t, 4) for t in decodes],
                                    "canary": [round(t, 4) for t in canaries]}) + "\n")
                f.flush()
            print(f"pass {index + 1} of {passes} done", flush=True)


def _first(calls: list[float], seconds: float) -> list[float]:
    """The calls after the first (a warm-up) up to `seconds` of them."""
    out: list[float] = []
    for t in calls[1:]:
        out.append(t)
        if sum(out) >= 1e3 * seconds:
            break
    return out


def _fastest_run_median(values: list[float], run: int = 5) -> float:
    return min(statistics.median(values[i:i + run]) for i in range(max(1, len(values) - run + 1)))


def rules() -> dict[str, Callable[[list[float]], float]]:
    out: dict[str, Callable[[list[float]], float]] = {
        "median 0.3 s (before)": lambda c: statistics.median(_first(c, 0.3))}
    for seconds in (1.0, 2.0, 3.0):
        out[f"median {seconds:.0f} s"] = lambda c, s=seconds: statistics.median(_first(c, s))
        out[f"10th percentile {seconds:.0f} s"] = lambda c, s=seconds: quantile_of(_first(c, s), 0.1)
        out[f"fastest call {seconds:.0f} s"] = lambda c, s=seconds: min(_first(c, s))
        out[f"fastest 5-call median {seconds:.0f} s"] = lambda c, s=seconds: _fastest_run_median(_first(c, s))
    return out


def ratio_rules() -> dict[str, Callable[[list[float], list[float]], float]]:
    """Rules on decode steps and the memory canary's burst after each (`--memory-canary`): the model's
    figure over the canary's, each process's ratio to be multiplied by the canary's quiet speed."""
    out: dict[str, Callable[[list[float], list[float]], float]] = {}
    for seconds in (1.0, 2.0, 3.0):
        def low(steps: list[float], canary: list[float], s: float = seconds) -> float:
            kept = _first(steps, s)
            return quantile_of(kept, 0.1) / quantile_of(canary[1:1 + len(kept)], 0.1)

        def paired(steps: list[float], canary: list[float], s: float = seconds) -> float:
            kept = _first(steps, s)
            return statistics.median(a / b for a, b in zip(kept, canary[1:1 + len(kept)], strict=True))

        out[f"ratio of 10th percentiles {seconds:.0f} s"] = low
        out[f"median step/canary ratio {seconds:.0f} s"] = paired
    return out


def _print_rule(name: str, width: int, per_model: list[list[float]], combine: Callable[[list[float]], float]) -> None:
    """One rule's line: the share of single processes within ±10% of their model's median, the spread
    (slowest over fastest: median and worst over models), and how far `combine` of processes 1-3 is
    from `combine` of 4-6 (median and worst over models)."""
    within, spreads, halves = [], [], []
    for values in per_model:
        middle = statistics.median(values)
        within += [abs(v / middle - 1) <= 0.10 for v in values]
        spreads.append(max(values) / min(values) - 1)
        if len(values) >= 6:
            halves.append(abs(combine(values[:3]) / combine(values[3:6]) - 1))
    agreement = (f"{100 * statistics.median(halves):5.1f}% / {100 * max(halves):5.1f}%" if halves
                 else "(fewer than 6 processes)")
    print(f"  {name:<{width}} {100 * sum(within) / len(within):5.1f}% | {100 * statistics.median(spreads):5.1f}% / "
          f"{100 * max(spreads):5.1f}% | {agreement}")


def _ratio_report(by_model: dict[str, list[dict]]) -> None:
    print("\ndecode over the memory canary: single process within ±10% of the model's median | spread, "
          "median / worst | median of processes 1-3 against 4-6, median / worst")
    for name, rule in ratio_rules().items():
        per_model = [[rule(r["decode"], r["canary"]) for r in runs] for runs in by_model.values()]
        _print_rule(name, 36, per_model, statistics.median)
    canary = [statistics.median(r["canary"]) for runs in by_model.values() for r in runs]
    print(f"  the canary's median per process: {min(canary):.2f}-{max(canary):.2f} ms")


def rescore(path: str) -> None:
    with open(path) as f:
        lines = [json.loads(line) for line in f]
    head, rows = lines[0], lines[1:]
    burst = head.get("decode_burst", 0)
    context = f"the cache set back every {burst} steps" if burst else "the cache growing"
    print(f"machine: {head['machine']}; {len(rows)} processes, windows of {head['window_s']} s; decode with {context}")
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["name"], []).append(row)
    for phase in ("prefill", "decode"):
        print(f"\n{phase}: single process within ±10% of the model's median | spread, median / worst | "
              f"fastest of processes 1-3 against 4-6, median / worst")
        if any(len(r[phase]) < 2 for r in rows):
            print("  not compared: some processes made fewer than 2 calls in the window")
            continue
        for name, rule in rules().items():
            _print_rule(name, 28, [[rule(r[phase]) for r in runs] for runs in by_model.values()], min)
    if all(r.get("canary") for r in rows):
        _ratio_report(by_model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", default="benchmarks/latency_issue19/headline_seed32.jsonl",
                        help="a latency_accuracy.py --out file whose proxies are timed")
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--passes", type=int, default=6, help="fresh processes per model (6 for the halves)")
    parser.add_argument("--window", type=float, default=3.0, help="seconds of prefills, then of decode steps")
    parser.add_argument("--decode-burst", type=int, default=0,
                        help="set the cache back to the prompt's every N decode steps (default 0: it grows)")
    parser.add_argument("--kind", choices=("proxy", "full"), default="proxy",
                        help="which of the sample's models: its proxies, or its full-size models (out of the "
                             "last-level cache: memory-bound decode)")
    parser.add_argument("--max-params", type=float, default=float("inf"), help="skip larger models")
    parser.add_argument("--memory-canary", type=int, default=0, metavar="MIB",
                        help="follow each decode step with a burst of a matrix-vector product over MIB MiB "
                             "(memory-bound, like a large model's step) and compare rules on their ratio")
    parser.add_argument("--out", default="timing_rules.jsonl")
    parser.add_argument("--rescore", metavar="FILE", help="measure nothing: compare the rules on a stored --out")
    args = parser.parse_args()
    if not args.rescore:
        record(args.sample, args.models, args.passes, args.window, args.out, args.decode_burst, args.kind,
               args.max_params, args.memory_canary)
    rescore(args.rescore or args.out)


if __name__ == "__main__":
    main()
