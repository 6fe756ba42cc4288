"""How well does the profile-based predictor match end-to-end latency of our own model?

Architectures: random genomes of both search spaces (seed 1; none used to build the profile, which
times single operators and calibrates on presets, three fixed 40-273M models and random proxies of
its own stream, skipped here should one ever coincide), at proxy scale (width 128, vocabulary 512) and at full size,
plus the lfm2-350m and qwen3-0.6b presets for the speed-ratio check.  Each is built as our `StarLM` in
fp32 and measured on this machine with the profile's thread count (`profiler.measure_model`, the same
end-to-end timing the profile's calibration uses):
- prefill: batch 1, a prompt of `--prompt` tokens (median of `--reps` calls, after a warm-up);
- decode: one token with `--context` tokens in the cache (median of `--reps` steps);
each in a fresh process; proxies (milliseconds per call) in `--rounds` or more separate passes
(`profiler.measure_in_passes`), median taken.
The predictor is `star predict` with the given profile.  Printed: the share of predictions within
±10% of the measurement, for prefill and decode separately, Kendall's tau between predicted and
measured, and the decode/prefill speed ratio of lfm2-350m over qwen3-0.6b.

Peak memory: for `--memory` of the same architectures (proxies and full size from both spaces, then
the two presets), the peak resident memory of our model decoding at each of `--memory-contexts`,
measured in a fresh process (`profiler.measure_peak_memory`), against the predicted peak memory.

    python benchmarks/latency_accuracy.py [--profile dev-cpu] [--proxies 20] [--full 12] [--memory 12]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from star.arch import ArchConfig
from star.evaluators.predictor import load_profile
from star.evaluators.profiler import LATENCY_PROXY, measure_in_passes, measure_model, measure_peak_memory
from star.presets import get_preset
from star.scaling import to_proxy
from star.search_spaces import get_space
from star.stats import kendall_tau


def architectures(proxies: int, full: int, max_params: float, exclude: frozenset[str] = frozenset()) -> list:
    """Random genomes (seed 1) of both spaces, none of them in `exclude` (the profile's calibration)."""
    rng = random.Random(1)
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
    parser.add_argument("--profile", default="dev-cpu")
    parser.add_argument("--proxies", type=int, default=20)
    parser.add_argument("--full", type=int, default=12)
    parser.add_argument("--max-params", type=float, default=1.3e9, help="largest full-size model to build")
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3,
                        help="proxies are measured at least this many times, in separate passes over the sample, "
                             "and up to 6 times where the passes disagree by more than 6%% (profiler."
                             "measure_in_passes, as the profile's calibration does); the median is taken")
    parser.add_argument("--memory", type=int, default=12, help="architectures whose peak memory is measured")
    parser.add_argument("--memory-contexts", default="4096,32768")
    parser.add_argument("--max-memory-gib", type=float, default=12.0, help="skip larger predicted peaks")
    parser.add_argument("--out", help="write every measurement and prediction as JSON lines here")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    torch.set_num_threads(int(profile.machine["threads"]))
    rows = []
    calibration = frozenset(ArchConfig.from_json(r["model"]).name for r in profile.machine.get("calibration_runs", []))
    archs = architectures(args.proxies, args.full, args.max_params, exclude=calibration)
    archs += [("preset", get_preset("lfm2-350m")), ("preset", get_preset("qwen3-0.6b"))]
    short = [config for kind, config in archs if kind == "proxy"]
    print(f"measuring {len(short)} proxies in passes", flush=True)
    repeats = measure_in_passes(short, args.prompt, args.context, passes=args.rounds, reps=args.reps)
    for i, (kind, config) in enumerate(archs):
        predicted = profile.predict(config, args.prompt, args.context)
        if config.name in repeats:
            rounds = repeats[config.name]
            prefill, decode = (statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds))
        else:
            prefill, decode = measure_model(config, args.prompt, args.context, args.reps)
        rows.append({"kind": kind, "name": config.name, "params": config.params(), "prefill_ms": prefill,
                     "decode_ms": decode, "passes": len(repeats.get(config.name, [])) or 1,
                     "pred_prefill_ms": predicted["ttft_ms"], "pred_decode_ms": predicted["decode_ms"]})
        r = rows[-1]
        print(f"[{i + 1}/{len(archs)}] {kind:<6} {config.name:<22} {config.params() / 1e6:8.1f}M  prefill "
              f"{prefill:9.2f} ms (pred {r['pred_prefill_ms']:9.2f})  decode {decode:8.3f} ms "
              f"(pred {r['pred_decode_ms']:8.3f})", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    sample = [r for r in rows if r["kind"] != "preset"]
    print(f"\n{len(sample)} architectures ({sum(r['kind'] == 'proxy' for r in sample)} proxies, "
          f"{sum(r['kind'] == 'full' for r in sample)} full size), prompt {args.prompt}, context {args.context}, "
          f"{profile.machine['threads']} threads, profile {profile.path.name}")
    for phase in ("prefill", "decode"):
        errors = [r[f"pred_{phase}_ms"] / r[f"{phase}_ms"] - 1 for r in sample]
        within = sum(abs(e) <= 0.10 for e in errors) / len(errors)
        tau = kendall_tau([r[f"{phase}_ms"] for r in sample], [r[f"pred_{phase}_ms"] for r in sample])
        print(f"  {phase:<8} within ±10%: {100 * within:5.1f}%   median |error| "
              f"{100 * statistics.median(abs(e) for e in errors):5.1f}%   worst {100 * max(errors, key=abs):+6.1f}%"
              f"   Kendall tau {tau:.3f}")
    space = get_space("lfm2")
    rng = random.Random(2)
    configs = [space.decode(space.sample(rng)) for _ in range(1000)]
    start = time.perf_counter()
    for config in configs:
        profile.predict(config, args.prompt, args.context)
    batch = time.perf_counter() - start
    print(f"  prediction speed: 1,000 lfm2-space genomes in {batch:.3f} s ({1e3 * batch / 1000:.3f} ms each; "
          f"prefill, decode and memory)")
    lfm2, qwen = rows[-2], rows[-1]
    for phase in ("prefill", "decode"):
        measured = qwen[f"{phase}_ms"] / lfm2[f"{phase}_ms"]
        predicted = qwen[f"pred_{phase}_ms"] / lfm2[f"pred_{phase}_ms"]
        print(f"  {phase} speed ratio lfm2-350m over qwen3-0.6b: measured {measured:.2f}x, predicted "
              f"{predicted:.2f}x ({100 * (predicted / measured - 1):+.1f}%)")
    if args.memory:
        memory_accuracy(profile, memory_sample(archs, args.memory), args)


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
