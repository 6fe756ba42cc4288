"""Which rule for timing one operator unit repeats best on a busy host?

A profile times each unit of its grid (`measure.unit_call`) in a handful of calls and keeps a figure
per case: until 2026-12-07 the median of 5 calls after 1 warm-up (quick grid) or of 9 after 2 (full),
the faster of two sweeps (now measure.SWEEPS, three).  A width-128 unit's decode call takes 0.1-0.4 ms, so that
median covers about a millisecond of the host's life, and two profiles made hours apart disagreed on
the same units by a median factor 0.89 (5-95%: 0.56-1.46).  This script records every call of each
unit over a window, in several fresh processes (each a sweep over all the cases), and compares rules
on the same calls:

- med5 / med9: the median of calls 2-6 / 3-11 (the quick and full rules until 2026-12-07);
- q10@W: the 10th percentile of the calls made within W seconds of wall time (flushes included);
- med@W: the median over W seconds; min@W: the fastest call.

With `--alongside`, each case's calls come in bursts of 10 ms alternating with bursts of a fixed
reference unit's (`reference_case`), and each rule is also applied to the unit's figure over the
reference's, scaled by the reference's quiet figure: the way whole-model decode is timed against the
canary (measure._decode_against_canary).

For each rule it prints, over the cases, how far the fastest figure of one group of processes is from
the fastest of another (median and 90th percentile): processes 1-3 against 4-6, as two profiles of
three sweeps each would disagree, and pairs against pairs (two sweeps).  Each process is a sweep over
all the cases, so a case's processes are spread over the whole run.

    python benchmarks/unit_timing.py --processes 6 --window 0.3 --alongside --out calls.jsonl.gz
    python benchmarks/unit_timing.py --rescore benchmarks/latency_issue19/unit_timing_1207.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import multiprocessing
import statistics
import time

import torch

from star.evaluators.features import Case, spec_text
from star.evaluators.measure import QUICK, Grid, cases, first_repeated, quantile_of, unit_call
from star.machine import cpu_kind, fingerprint, tune_allocator

THREADS = 2


def sample(widths: tuple[int, ...]) -> list[tuple[Case, bool]]:
    """The quick grid's mixer and FFN cases at `widths`, warm: decode at every length, prefill at 256."""
    grid = Grid(widths=widths, prefill=(256,), decode=QUICK.decode, reps=5, warmup=1)
    return [(case, False) for case in cases(grid) if case.unit.startswith(("mixer:", "ffn:"))]


BURST_S = 0.01


def reference_case() -> Case:
    """The unit timed alongside every case (`--alongside`): a width-128 short convolution's decode step
    (about 0.1 ms, Python dispatch as a proxy's units are)."""
    from star.arch import ShortConvMixer

    return Case("mixer:short_conv", 128, ShortConvMixer(kernel=3), "decode", 128)


def record(todo: list[tuple[Case, bool]], window_s: float, alongside: bool, queue: multiprocessing.Queue) -> None:
    """In a fresh process: for each case, every call's (seconds since the case began, call ms) over
    `window_s` of wall time (at least 11 calls); with `alongside`, in bursts of BURST_S alternating with
    bursts of the reference unit's calls, which are kept too."""
    torch.set_num_threads(THREADS)
    tune_allocator()
    out = []
    with torch.inference_mode():
        reference = unit_call(reference_case(), torch.float32) if alongside else None
        for case, cold in todo:
            once = unit_call(case, torch.float32, cold)
            start, calls, ref_calls = time.perf_counter(), [], []
            while len(calls) < 11 or time.perf_counter() - start < window_s:
                for call, kept in ((once, calls), (reference, ref_calls)):
                    if call is None:
                        continue
                    burst = time.perf_counter()
                    while True:
                        ms = call() * 1e3
                        kept.append((time.perf_counter() - start, ms))
                        if not alongside or time.perf_counter() - burst >= BURST_S:
                            break
            out.append({"calls": calls, "reference": ref_calls})
    queue.put(out)


RULES = ("med5", "med9", "q10@0.05", "q10@0.1", "q10@0.2", "q10@0.3", "med@0.1", "min@0.1")


def apply(rule: str, calls: list[list[float]]) -> float:
    """`rule`'s figure from one process's calls of one case ((seconds since start, ms) each)."""
    times = [ms for _, ms in calls]
    if rule == "med5":
        return statistics.median(times[1:6])
    if rule == "med9":
        return statistics.median(times[2:11])
    kind, window = rule.split("@")
    within = [ms for at, ms in calls[1:] if at <= float(window)] or times[1:2]
    return {"q10": lambda: quantile_of(within, 0.1), "med": lambda: statistics.median(within),
            "min": lambda: min(within)}[kind]()


def disagreement(figures: list[list[float]], first: tuple[int, ...], second: tuple[int, ...]) -> list[float]:
    """Per case, how far the fastest of its figures from processes `first` is from the fastest from
    `second` (|a / b - 1|), sorted: two profiles' sweeps of the same unit."""
    return sorted(abs(min(f[i] for i in first) / min(f[i] for i in second) - 1) for f in figures)


def rescore(rows: list[dict]) -> None:
    """Print each rule's disagreement between groups of processes: the first half against the second
    (three sweeps against three, with 6 processes), and pairs of processes (two sweeps) against pairs."""
    processes = len(rows[0]["calls"])
    half = processes // 2
    groups = [(tuple(range(half)), tuple(range(half, 2 * half)))]
    pairs = [tuple(range(i, i + 2)) for i in range(0, processes - 1, 2)]
    groups += list(itertools.combinations(pairs, 2))
    print(f"{len(rows)} cases x {processes} processes; {rows[0].get('cpu', '')}")
    print("the fastest of one group of processes against another's, per case: median / 90th percentile over cases")
    print("rule            " + "  ".join(f"{'+'.join(str(i + 1) for i in a)} v {'+'.join(str(i + 1) for i in b):>6s}"
                                          for a, b in groups))

    def line(name: str, figures: list[list[float]]) -> None:
        cells = []
        for first, second in groups:
            d = disagreement(figures, first, second)
            cells.append(f"{100 * statistics.median(d):4.1f}/{100 * quantile_of(d, 0.9):4.1f}%")
        print(f"{name:15s} " + "  ".join(f"{cell:>11s}" for cell in cells))

    for rule in RULES:
        line(rule, [[apply(rule, calls) for calls in row["calls"]] for row in rows])
    if not rows[0].get("reference") or not rows[0]["reference"][0]:
        return
    # Against the reference: each process's ratio times the reference's quiet figure (the fastest of
    # all its figures in the group that another repeats within 6%), as whole-model decode is scaled.
    for rule in RULES[2:]:
        ratios = [[apply(rule, c) / apply(rule, r) for c, r in zip(row["calls"], row["reference"], strict=True)]
                  for row in rows]
        cells = []
        for first, second in groups:
            scaled = []
            for group in (first, second):
                readings = [apply(rule, row["reference"][i]) for row in rows for i in group]
                quiet = first_repeated(readings) or min(readings)
                scaled.append([min(r[i] for i in group) * quiet for r in ratios])
            d = sorted(abs(a / b - 1) for a, b in zip(*scaled, strict=True))
            cells.append(f"{100 * statistics.median(d):4.1f}/{100 * quantile_of(d, 0.9):4.1f}%")
        print(f"{rule + ' /ref':15s} " + "  ".join(f"{cell:>11s}" for cell in cells))


def read_rows(path: str) -> list[dict]:
    """An --out file's rows (gzip-compressed where the name ends in .gz), each process's calls as
    (seconds since the case began, ms) pairs again (`write_rows`)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        for key in ("calls", "reference"):
            row[key] = [[[at / 1e4, ms / 1e4] for at, ms in zip(calls["at_e4"], calls["ms_e4"], strict=True)]
                        for calls in row[key]]
    return rows


def write_rows(path: str, rows: list[dict]) -> None:
    """Write `rows` as JSON lines (gzip-compressed where the name ends in .gz), each process's calls as
    two lists of integers, in units of 0.1 ms (`at_e4`: since the case began) and 0.1 us (`ms_e4`: the
    call): under half the size of the pairs as decimals, so that a 6-process run stays under 2 MiB."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt") as f:
        for row in rows:
            kept = {**row, **{key: [{"at_e4": [round(at * 1e4) for at, _ in calls],
                                     "ms_e4": [round(ms * 1e4) for _, ms in calls]} for calls in row[key]]
                              for key in ("calls", "reference")}}
            f.write(json.dumps(kept, separators=(",", ":")) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--window", type=float, default=0.3, help="seconds of calls per case and process")
    parser.add_argument("--widths", default="128,512")
    parser.add_argument("--alongside", action="store_true", help="time a reference unit in bursts alongside")
    parser.add_argument("--out", help="JSON lines: one row per case with every process's calls")
    parser.add_argument("--rescore", help="an --out file to print the rules' figures of")
    parser.add_argument("--phase", choices=("prefill", "decode"), help="--rescore: that phase's cases only")
    args = parser.parse_args()
    if args.rescore:
        rescore([row for row in read_rows(args.rescore) if args.phase in (None, row["phase"])])
        return
    todo = sample(tuple(int(w) for w in args.widths.split(",")))
    machine = cpu_kind(fingerprint())
    print(f"{len(todo)} cases, {args.processes} processes, window {args.window} s; this machine: {machine}", flush=True)
    context = multiprocessing.get_context("spawn")
    per_process = []
    for i in range(args.processes):
        queue = context.Queue()
        worker = context.Process(target=record, args=(todo, args.window, args.alongside, queue))
        worker.start()
        per_process.append(queue.get())
        worker.join()
        print(f"process {i + 1} done", flush=True)
    rows = [{"unit": case.unit, "width": case.width, "spec": spec_text(case.spec), "phase": case.phase,
             "tokens": case.tokens, "cold": cold, "cpu": cpu_kind(fingerprint()),
             "calls": [process[j]["calls"] for process in per_process],
             "reference": [process[j]["reference"] for process in per_process]} for j, (case, cold) in enumerate(todo)]
    if args.out:
        write_rows(args.out, rows)
    rescore(rows)


if __name__ == "__main__":
    main()
