"""How well does the profile-based predictor match end-to-end latency of our own model?

Architectures: random genomes of both search spaces (stream `--seed`: 1 is the sample the predictor
was designed on, 19 the fresh one of issue 19; none used to build the profile, which times single
operators and calibrates on four fixed 13-273M models and random proxies of its own stream, skipped
here should one ever coincide), at proxy scale (width 128, vocabulary 512) and at full size,
plus the lfm2-350m and qwen3-0.6b presets for the speed-ratio check.  Each is built as our `StarLM` in
fp32 and measured on this machine with the profile's thread count (`measure.measure_model`, the same
end-to-end timing the profile's calibration uses):
- prefill: batch 1, a prompt of `--prompt` tokens (the 10th percentile of its calls over 2 s, after a
  warm-up);
- decode: one token with `--context` tokens in the cache (a model that fits the last-level cache: the
  10th percentile of its steps over 1 s, in bursts alternating with a canary model's steps; a larger
  one: the median of its steps over 0.3 s);
each in a fresh process, in separate passes (`measure.measure_in_passes`: proxies, milliseconds per
call, and the two presets, whose speed ratio is checked, in `--rounds` or more; full-size models in
`--full-rounds` or one more; only passes made while the canary ran at its quiet speed count towards
settling prefill, the quiet speed being the fastest the profiles or this run saw), and reduced as the
profile's calibration does (`measure.speed_of`): prefill the fastest pass (interference only slows a
process down), decode the median ratio to the canary's steps times the canary's quiet decode step
(the fastest repeated over the profiles' calibration and this run's measurements), or for a model
too large for the cache the fastest pass.
The predictor is `star predict` with each given profile (`--profile`, repeatable: all are checked
against the same measurements; `--runs` measures the sample again, min/median/max printed), and the
machine's CPU fingerprint is printed and written first in `--out`.  Printed: the share of predictions within
±10% of the measurement, for prefill and decode separately, Kendall's tau between predicted and
measured, and the decode/prefill speed ratio of lfm2-350m over qwen3-0.6b.  Prefill is checked as
measured (`truth`); a decode against the canary is its ratio to the canary times the profile's canary
step (the canary's own step drifts with the host while the ratio holds).  Printed beside: prefill at
the profile's host speed (the canary's quiet prefill in the profile's calibration over that in this
run, `host_speed`: the headline rule from 2026-12-07 until held-out streams 36 and 37 scored it worse
than the figures as measured), and decode at the quietest canary step known.

`--runtime executorch` measures every architecture as an ExecuTorch program instead (star export
--format executorch's, lowered first or taken from the user's cache of programs:
evaluators/measure_executorch.py), to check a profile made with `star profile --runtime executorch`;
its profiles must have been made in that runtime, and peak memory is not checked there.

Peak memory: for `--memory` of the same architectures (proxies and full size from both spaces, then
the two presets), the peak resident memory of our model decoding at each of `--memory-contexts`,
measured in a fresh process (`measure.measure_peak_memory`), against the predicted peak memory.

    python benchmarks/latency_accuracy.py [--profile dev-cpu] [--profile here] [--seed 1] [--runs 1]
                                          [--proxies 20] [--full 12] [--memory 12] [--runtime eager]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import random
import statistics
import time

import torch

from star.arch import ArchConfig
from star.evaluators.measure import (
    CANARY_SLOW,
    RUNTIMES,
    decode_ratios,
    first_repeated,
    fits_cache,
    measure_in_passes,
    measure_peak_memory,
    quiet,
    speed_of,
    timing_record,
)
from star.evaluators.measure_executorch import export_programs, model_job
from star.evaluators.predictor import load_profile
from star.machine import cpu_kind, fingerprint
from star.presets import get_preset
from star.scaling import LATENCY_PROXY, to_proxy
from star.search_spaces import get_space
from star.stats import kendall_tau


def architectures(proxies: int, full: int, max_params: float, exclude: frozenset[str] = frozenset(),
                  seed: int = 1) -> list:
    """Random genomes of both spaces from stream `seed`, none of them in `exclude` (a profile's calibration)."""
    rng = random.Random(seed)
    out = []
    for space_name in ("lfm2", "star"):
        space = get_space(space_name)
        n_proxy, n_full = proxies // 2, full // 2
        while n_proxy or n_full:
            config = space.decode(space.sample(rng))
            proxy = to_proxy(config, **LATENCY_PROXY)
            if config.name in exclude or proxy.name in exclude:
                continue
            if n_proxy:
                out.append(("proxy", proxy))
                n_proxy -= 1
            elif config.params() <= max_params:
                out.append(("full", config))
                n_full -= 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="append",
                        help="a profile to check (repeatable: every profile is checked against the same measurements; "
                             "default dev-cpu); `here` is this machine's own (star profile without -o)")
    parser.add_argument("--seed", type=int, default=1,
                        help="the sample's random stream (1: the sample the predictor was designed on; use a new "
                             "one for a headline figure)")
    parser.add_argument("--runs", type=int, default=1, help="measure the sample this many times; min/median printed")
    parser.add_argument("--proxies", type=int, default=20)
    parser.add_argument("--full", type=int, default=12)
    parser.add_argument("--max-params", type=float, default=1.3e9, help="largest full-size model to build")
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3,
                        help="proxies are measured at least this many times, in separate passes over the sample, "
                             "and up to 6 times while their two fastest passes differ by more than 6%% (measure."
                             "measure_in_passes, as the profile's calibration does); the fastest is taken")
    parser.add_argument("--full-rounds", type=int, default=2,
                        help="full-size models: passes (one more where the two fastest differ by 6%%); the presets "
                             "are measured like proxies (--rounds to 6 passes)")
    parser.add_argument("--full-reps", type=int, default=3, help="timed calls per process for full-size models")
    parser.add_argument("--memory", type=int, default=12, help="architectures whose peak memory is measured")
    parser.add_argument("--memory-contexts", default="4096,32768")
    parser.add_argument("--max-memory-gib", type=float, default=12.0, help="skip larger predicted peaks")
    parser.add_argument("--out", help="write every measurement and prediction as JSON lines here")
    parser.add_argument("--runtime", default="eager", choices=RUNTIMES,
                        help="what to measure: our eager model, or its ExecuTorch program (the profiles must match)")
    parser.add_argument("--rescore", metavar="FILE", help="measure nothing: predict the measurements an earlier --out "
                                                         "stored with the given profiles")
    args = parser.parse_args()
    profiles = {name: load_profile(name) for name in args.profile or ["dev-cpu"]}
    if args.rescore:
        rescore(args.rescore, profiles, args)
        return
    wrong = [name for name, p in profiles.items() if p.runtime != args.runtime]
    if wrong:
        raise SystemExit(f"profiles {', '.join(wrong)} were not measured in {args.runtime}: check profiles of one "
                         "runtime against measurements in it (--runtime)")
    if args.runtime == "executorch":
        args.memory = 0  # peak memory is measured in eager PyTorch only
    threads = {int(p.machine["threads"]) for p in profiles.values()}
    if len(threads) != 1:
        raise SystemExit(f"the profiles were measured with different thread counts ({sorted(threads)}): check them "
                         "one thread count at a time")
    torch.set_num_threads(threads.pop())
    here = fingerprint()
    print(f"this machine: {cpu_kind(here)}, torch {here['torch']}, {torch.get_num_threads()} threads")
    for name, profile in profiles.items():
        print(f"profile {name}: {profile.path.name}, {profile.machine.get('grid', 'full')} grid, measured on "
              f"{profile.measured_on()}" + (f" (DIFFERS: {'; '.join(profile.differences_here())})"
                                            if profile.differences_here() else ""))
    calibration = frozenset(ArchConfig.from_json(r["model"]).name for p in profiles.values()
                            for r in p.machine.get("calibration_runs", []))
    archs = architectures(args.proxies, args.full, args.max_params, exclude=calibration, seed=args.seed)
    archs += [("preset", get_preset("lfm2-350m")), ("preset", get_preset("qwen3-0.6b"))]
    if args.runtime == "executorch":
        export_programs([model_job(config, args.prompt, args.context) for _, config in archs],
                        progress=lambda done, total, what: print(f"  lowered {done}/{total}: {what}", flush=True))
    known = [p.machine["canary_ms"] for p in profiles.values() if p.machine.get("canary_ms")]
    args.canary_ms = min(known) if known else None  # the host's quiet speed, as the profiles saw it
    known = [p.machine["canary_decode_ms"] for p in profiles.values() if p.machine.get("canary_decode_ms")]
    args.canary_decode_ms = min(known) if known else None  # the canary's quiet decode step, likewise
    summary: dict[str, list[float]] = {}
    with open(args.out, "w") if args.out else contextlib.nullcontext() as out:
        if out:
            out.write(json.dumps({"fingerprint": here, "machine": cpu_kind(here), "seed": args.seed,
                                  "prompt": args.prompt, "context": args.context, "runtime": args.runtime,
                                  **timing_record(args.runtime),
                                  "profiles": {n: p.machine.get("fingerprint") for n, p in profiles.items()}}) + "\n")
        runs = []
        for run in range(1, args.runs + 1):
            print(f"\nrun {run} of {args.runs}", flush=True)
            rows = measure_sample(archs, profiles, args)
            runs.append(rows)
            if out:
                out.writelines(json.dumps({"run": run, **r}) + "\n" for r in rows)
                out.flush()  # a headline stopped part way keeps its finished runs for --rescore
            for name, profile in profiles.items():
                for key, value in accuracy(rows, name, profile, args).items():
                    summary.setdefault(f"{name} {key}", []).append(value)
    if args.runs > 1:
        print(f"\nover {args.runs} runs (min / median / max):")
        for key, values in summary.items():
            print(f"  {key:<40} {min(values):8.3f} {statistics.median(values):8.3f} {max(values):8.3f}")
        across_runs(runs, profiles, args)
    first = next(iter(profiles.values()))
    space = get_space("lfm2")
    rng = random.Random(2)
    configs = [space.decode(space.sample(rng)) for _ in range(1000)]
    start = time.perf_counter()
    for config in configs:
        first.predict(config, args.prompt, args.context)
    batch = time.perf_counter() - start
    print(f"  prediction speed: 1,000 lfm2-space genomes in {batch:.3f} s ({1e3 * batch / 1000:.3f} ms each; "
          f"prefill, decode and memory)")
    if args.memory:
        memory_accuracy(first, memory_sample(archs, args.memory), args)


def measure_sample(archs: list, profiles: dict, args: argparse.Namespace) -> list[dict]:
    """Every architecture measured end to end in separate passes (`measure.measure_in_passes`), reduced
    as the profile's calibration does (`measure.speed_of`), with each profile's predictions.  Every
    pass's figures are kept in the row (`rounds`)."""
    short = [config for kind, config in archs if kind == "proxy"]
    large = [config for kind, config in archs if kind == "full"]
    # The presets' ratio is a quotient of two measurements: a busy spell that covered both of one
    # preset's passes (seed 22, run 3: LFM2-350M's two passes 1,386 and 1,390 ms, 1,145 ms in run 1)
    # settles on a slow figure, so they get the proxies' three to six passes.
    presets = [config for kind, config in archs if kind == "preset"]
    repeats: dict[str, list] = {}
    for what, configs, passes, most, reps in (("proxies", short, args.rounds, 6, args.reps),
                                              ("full-size models", large, args.full_rounds, args.full_rounds + 1,
                                               args.full_reps),
                                              ("presets", presets, args.rounds, 6, args.full_reps)):
        print(f"measuring {len(configs)} {what} in passes", flush=True)
        measured = measure_in_passes(configs, args.prompt, args.context, passes=passes, most=most, reps=reps,
                                     runtime=args.runtime, canary_ms=args.canary_ms)
        args.canary_ms = measured.canary_fastest(args.canary_ms)
        own = measured.canary_decode()
        args.canary_decode_ms = measured.canary_decode(args.canary_decode_ms)
        if own:
            print(f"  the canary's quiet decode step: {own:.3f} ms in these measurements; "
                  f"{args.canary_decode_ms:.3f} ms taken (the fastest known)", flush=True)
        slow = [run for runs in measured.runs.values() for run in runs if not quiet(run, args.canary_ms)]
        mark = f"{args.canary_ms:.2f} ms" if args.canary_ms else "no repeated reading yet"
        print(f"  {sum(map(len, measured.runs.values()))} measurements, {len(slow)} of them in a slow stretch (the "
              f"canary over its fastest, {mark}, + {100 * CANARY_SLOW:.0f}%)", flush=True)
        repeats |= measured.runs
    host_ms = host_speed([p for runs in repeats.values() for p in runs])
    if host_ms:
        print(f"the host's speed in this run: the canary's quiet prefill {host_ms:.2f} ms (its readings around the "
              "passes, the fastest that another repeats)", flush=True)
    rows = []
    for i, (kind, config) in enumerate(archs):
        rounds = repeats[config.name]
        prefill, decode = speed_of(rounds, args.canary_decode_ms)
        row = {"kind": kind, "name": config.name, "params": config.params(), "prefill_ms": prefill,
               "decode_ms": decode, "decode_ratio": decode_ratio(rounds), "passes": len(rounds),
               "rounds": [list(r) for r in rounds],
               "canary_ms": args.canary_ms, "canary_decode_ms": args.canary_decode_ms, "host_ms": host_ms,
               "model": config.to_json()}
        rows.append(predict_row(row, profiles, args))
        shown = "  ".join(f"{name}: {p['prefill_ms']:9.2f} / {p['decode_ms']:8.3f}"
                          for name, p in row["predicted"].items())
        print(f"[{i + 1}/{len(archs)}] {kind:<6} {config.name:<22} {config.params() / 1e6:8.1f}M  measured prefill "
              f"{prefill:9.2f} ms, decode {decode:8.3f} ms ({len(rounds)} passes); predicted {shown}", flush=True)
    return rows


def decode_ratio(rounds: list) -> float | None:
    """A model's decode over the canary's timed alongside it, the median over its passes (None for
    measurements made without the canary's decode: ExecuTorch's, files from before 2026-12-07)."""
    ratios = decode_ratios(rounds)
    return statistics.median(ratios) if ratios else None


def ratio_of(row: dict) -> float | None:
    """A row's decode ratio to the canary (None for a model too large for the last-level cache, which
    is not timed against the canary since 48b3212: `measure.fits_cache`), from its passes."""
    if not fits_cache(ArchConfig.from_json(row["model"])):
        return None
    return row["decode_ratio"] if row.get("decode_ratio") else decode_ratio(row.get("rounds") or [])


def fastest_decode(row: dict) -> float:
    """A row's fastest decode pass (its stored figure where the file has no passes)."""
    return min(r[1] for r in row["rounds"]) if row.get("rounds") else row["decode_ms"]


def host_speed(rounds: list) -> float | None:
    """The host's speed over some passes as the canary read it: the fastest of the canary's prefills
    timed around them (each pass's third figure, the slower of the readings right before and right
    after it) that another repeats within 6% (`measure.first_repeated`).  None where the passes carry
    no canary readings (files from before 2026-12-06) or no two agree.  One estimator for a sample's
    run and for a profile's calibration (`profile_host_speed`), so that their quotient is the host's
    drift between the two and nothing else."""
    readings = [p[2] for p in rounds if len(p) > 2]
    return first_repeated(readings) if readings else None


@functools.cache
def profile_host_speed(profile) -> float | None:
    """`host_speed` over the passes of a profile's calibration (proxies and cold-cache models); once
    per profile, not once per row checked (`truth`)."""
    machine = profile.machine
    rounds = [p for run in machine.get("calibration_runs", []) for p in run.get("rounds", [])]
    rounds += [p for runs in (machine.get("cold_runs") or {}).values() for p in runs]
    return host_speed(rounds)


def truth(row: dict, phase: str, profile) -> float:
    """The measured figure a profile's prediction of `phase` is checked against.  Prefill: the fastest
    pass, as measured.  Decode, where measured against the canary: the model's ratio to the canary's
    decode step times that step as the profile recorded it (`canary_decode_ms`); the canary's own step
    moved from 3.5-4 ms to 2.3 ms and back within a quarter of an hour while every model's ratio to it
    held.  A model too large for the cache: its fastest decode pass, as measured (its slow spells are
    not the canary's: `measure.fits_cache`).

    Prefill at the profile's host speed (`prefill_at_profile_host`) is printed beside, no longer as
    the headline: chosen on design data (2026-12-07), it did worse on the two held-out streams after
    (36 and 37: a mean 90.0% within ±10% against 94.7% as measured), and ExecuTorch prefill scored
    90.0 / 86.7 / 93.3% with it against 96.7 / 90.0 / 96.7% as measured on its stream 31."""
    if phase == "prefill":
        return row["prefill_ms"]
    ratio, step = ratio_of(row), profile.machine.get("canary_decode_ms")
    return ratio * step if ratio and step else fastest_decode(row)


def prefill_at_profile_host(row: dict, profile) -> float:
    """The fastest prefill pass at the host speed the profile was calibrated at: times the profile's
    `host_speed` over the run's (`row["host_ms"]`); as measured where either is unknown.  A shared
    host's quiet speed drifts over hours: the canary's quiet prefill was 20.8 ms around one profile's
    calibration (17:26-17:37) and 18.4 ms around a sample measured an hour later (2026-12-07,
    docs/benchmarks.md), and that profile predicted every proxy of the sample 8-23% slow."""
    here, there = row.get("host_ms"), profile_host_speed(profile)
    if profile.runtime != "eager" or not (here and there):
        return row["prefill_ms"]
    return row["prefill_ms"] * there / here


def predict_row(row: dict, profiles: dict, args: argparse.Namespace) -> dict:
    """The row with each profile's predictions for its model."""
    config = ArchConfig.from_json(row["model"])
    row["predicted"] = {}
    for name, profile in profiles.items():
        predicted = profile.predict(config, args.prompt, args.context)
        row["predicted"][name] = {"prefill_ms": predicted["ttft_ms"], "decode_ms": predicted["decode_ms"]}
    return row


def rescore(path: str, profiles: dict, args: argparse.Namespace) -> None:
    """Each run's measurements stored by `--out`, predicted again with the given profiles: how a new
    profile does on a sample already measured (on the machine the file's first line names)."""
    with open(path) as f:
        lines = [json.loads(line) for line in f]
    print(f"measurements from {path}: {lines[0]['machine']}, sample seed {lines[0]['seed']}")
    args.seed, args.prompt, args.context = lines[0]["seed"], lines[0]["prompt"], lines[0]["context"]
    runs = []
    for run in sorted({line["run"] for line in lines[1:]}):
        print(f"\nrun {run}")
        rows = [line for line in lines[1:] if line["run"] == run]
        host_ms = host_speed([p for row in rows for p in row.get("rounds", [])])
        for row in rows:  # files from before 2026-12-07 (evening) lack it; the same estimator as measure_sample's
            row.setdefault("host_ms", host_ms)
        runs.append([predict_row(row, profiles, args) for row in rows])
        for name, profile in profiles.items():
            accuracy(runs[-1], name, profile, args)
    if len(runs) > 1:
        across_runs(runs, profiles, args)


def across_runs(runs: list[list[dict]], profiles: dict, args: argparse.Namespace) -> None:
    """How far the measurements themselves repeat, and each profile against the median of the runs.

    A measurement that moves by more than 10% from run to run bounds what any predictor can score
    within ±10% of one run: on a busy machine (a VM whose host runs other tenants), that bound, not
    the predictor, can decide the figure.  Printed: the share of single-run measurements within ±10%
    of their architecture's median over the runs, then every profile's accuracy against those medians."""
    print(f"\nmeasurement repeatability over {len(runs)} runs (the ceiling for a prediction of one run):")
    medians = []
    for rows in zip(*runs, strict=True):
        row = dict(rows[0])
        for phase in ("prefill", "decode"):
            row[f"{phase}_ms"] = statistics.median(r[f"{phase}_ms"] for r in rows)
        if all(r.get("host_ms") for r in rows):  # each run's prefill at the first run's host speed
            row["prefill_ms"] = statistics.median(r["prefill_ms"] * row["host_ms"] / r["host_ms"] for r in rows)
        ratios = [ratio_of(r) for r in rows]
        row["decode_ratio"] = statistics.median(ratios) if all(ratios) else None
        row["decode_ms"] = row["decode_ms"] if all(ratios) else statistics.median(map(fastest_decode, rows))
        row.pop("rounds", None)  # a median row's figures are the runs' medians, not one run's passes
        medians.append(row)
    measured = [rows for rows in zip(*runs, strict=True) if rows[0]["kind"] != "preset"]
    passes = all("rounds" in r for rows in runs for r in rows)  # files from before issue 19's fastest rule lack them
    stored = "fastest pass (as measured)" if passes else "as stored"
    estimators = {stored: lambda r, i: r[("prefill_ms", "decode_ms")[i]]}
    if passes:  # the same passes, their median taken instead
        estimators["median of the passes"] = lambda r, i: statistics.median(p[i] for p in r["rounds"])
    for label, estimate in estimators.items():
        print(f"  {label}:")
        for i, phase in enumerate(("prefill", "decode")):
            per_arch = [[estimate(r, i) for r in rows] for rows in measured]
            deviations = [m / statistics.median(values) - 1 for values in per_arch for m in values]
            spreads = [max(values) / min(values) - 1 for values in per_arch]
            within = sum(abs(d) <= 0.10 for d in deviations) / len(deviations)
            print(f"    {phase:<8} single runs within ±10% of the median: {100 * within:5.1f}%   median |deviation| "
                  f"{100 * statistics.median(map(abs, deviations)):5.1f}%   slowest run over fastest, median "
                  f"{100 * statistics.median(spreads):5.1f}%, worst {100 * max(spreads):5.1f}%")
    canary_check(runs)
    print(f"\neach profile against the median of the {len(runs)} runs' measurements:")
    for name, profile in profiles.items():
        accuracy(medians, name, profile, args)


def canary_check(runs: list[list[dict]]) -> None:
    """Whether the canary tells slow passes from quiet ones: each pass of every model, against that
    model's fastest over all runs, split by whether the canary around it ran within CANARY_SLOW of its
    fastest (the last run's figure).  Files from before the canary lack its readings: nothing printed."""
    if not all(len(p) == 3 for rows in runs for r in rows for p in r.get("rounds", [[]])):
        return
    canary = min(r["canary_ms"] for rows in runs for r in rows)
    print(f"\nevery pass against its model's fastest over the {len(runs)} runs, by the canary around it "
          f"(quiet: within {100 * CANARY_SLOW:.0f}% of its fastest, {canary:.2f} ms):")
    for kind in ("proxy", "full", "preset"):
        for i, phase in enumerate(("prefill", "decode")):
            split: dict[bool, list[float]] = {True: [], False: []}
            for rows in zip(*runs, strict=True):
                if rows[0]["kind"] != kind:
                    continue
                best = min(p[i] for r in rows for p in r["rounds"])
                for r in rows:
                    for p in r["rounds"]:
                        split[quiet(p, canary)].append(p[i] / best - 1)
            shown = [f"{label} {len(values)} passes, {100 * sum(v <= 0.10 for v in values) / len(values):5.1f}% "
                     f"within 10% (median +{100 * statistics.median(values):.1f}%)"
                     for label, values in (("quiet", split[True]), ("slow", split[False])) if values]
            print(f"  {kind:<6} {phase:<8} " + ";  ".join(shown))


def accuracy(rows: list[dict], name: str, profile, args: argparse.Namespace) -> dict[str, float]:
    """Print and return one profile's figures on one run's measurements."""
    sample = [r for r in rows if r["kind"] != "preset"]
    print(f"\nprofile {name}: {len(sample)} architectures ({sum(r['kind'] == 'proxy' for r in sample)} proxies, "
          f"{sum(r['kind'] == 'full' for r in sample)} full size), prompt {args.prompt}, context {args.context}, "
          f"{profile.machine['threads']} threads, sample seed {args.seed}")
    figures = {}
    checks = [("prefill", "prefill", lambda r: truth(r, "prefill", profile)),
              ("decode", "decode", lambda r: truth(r, "decode", profile))]
    here, there = sample[0].get("host_ms"), profile_host_speed(profile)
    if here and there and profile.runtime == "eager":
        checks.append(("prefill", "prefill at the profile's host speed", lambda r: prefill_at_profile_host(r, profile)))
        print(f"  prefill as measured; also at the profile's host speed: the canary's quiet prefill {there:.2f} ms "
              f"there, {here:.2f} ms here ({100 * (there / here - 1):+.1f}%)")
    steps = [r["canary_decode_ms"] for r in sample if ratio_of(r) and r.get("canary_decode_ms")]
    if steps and profile.machine.get("canary_decode_ms"):  # the same predictions at the quietest canary step known
        quietest = min(steps)
        checks.append(("decode", "decode at the quietest step",
                       lambda r: ratio_of(r) * quietest if ratio_of(r) else fastest_decode(r)))
        print(f"  decode checked at the profile's canary decode step, {profile.machine['canary_decode_ms']:.3f} ms "
              f"(the quietest known: {quietest:.3f} ms; models too large for the cache: their fastest pass)")
    for phase, label, measure in checks:
        predicted = [r["predicted"][name][f"{phase}_ms"] for r in sample]
        errors = [p / measure(r) - 1 for p, r in zip(predicted, sample, strict=True)]
        within = sum(abs(e) <= 0.10 for e in errors) / len(errors)
        tau = kendall_tau([measure(r) for r in sample], predicted)
        print(f"  {label:<8} within ±10%: {100 * within:5.1f}%   median |error| "
              f"{100 * statistics.median(abs(e) for e in errors):5.1f}%   worst {100 * max(errors, key=abs):+6.1f}%"
              f"   Kendall tau {tau:.3f}")
        figures[f"{label} within 10% (share)"] = within
        figures[f"{label} Kendall tau"] = tau
    lfm2, qwen = rows[-2], rows[-1]
    for phase in ("prefill", "decode"):
        measured = truth(qwen, phase, profile) / truth(lfm2, phase, profile)
        predicted = qwen["predicted"][name][f"{phase}_ms"] / lfm2["predicted"][name][f"{phase}_ms"]
        print(f"  {phase} speed ratio lfm2-350m over qwen3-0.6b: measured {measured:.2f}x, predicted "
              f"{predicted:.2f}x ({100 * (predicted / measured - 1):+.1f}%)")
        figures[f"{phase} ratio error (share)"] = predicted / measured - 1
    return figures


def memory_sample(archs: list, count: int) -> list:
    """The first few proxies and full-size models of each space, then the two presets."""
    each = max(1, (count - 2) // 4)
    sample = []
    for space in ("lfm2", "star"):
        for kind in ("proxy", "full"):
            sample += [a for a in archs if a[0] == kind and a[1].name.startswith(space)][:each]
    return sample + [a for a in archs if a[0] == "preset"]


def memory_accuracy(profile, sample: list, args: argparse.Namespace) -> None:
    contexts = [int(c) for c in args.memory_contexts.split(",")]
    errors, skipped = [], []
    print(f"\npeak memory while decoding, {len(sample)} architectures at contexts {contexts}")
    for kind, config in sample:
        for context in contexts:
            predicted = profile.predict(config, 1, context)["peak_memory"]
            if predicted > args.max_memory_gib * 2**30:
                skipped.append(f"{config.name}@{context}")
                continue
            measured = measure_peak_memory(config, context, int(profile.machine["threads"]))
            errors.append(predicted / measured - 1)
            print(f"  {kind:<6} {config.name:<24} {config.params() / 1e6:8.1f}M  context {context:>6}: measured "
                  f"{measured / 2**20:9.1f} MiB, predicted {predicted / 2**20:9.1f} MiB ({100 * errors[-1]:+.1f}%)",
                  flush=True)
    within = sum(abs(e) <= 0.10 for e in errors) / len(errors)
    print(f"  memory   within ±10%: {100 * within:5.1f}% of {len(errors)}   median |error| "
          f"{100 * statistics.median(abs(e) for e in errors):5.1f}%   worst {100 * max(errors, key=abs):+6.1f}%"
          + (f"   (skipped over {args.max_memory_gib:g} GiB: {', '.join(skipped)})" if skipped else ""))


if __name__ == "__main__":
    main()
