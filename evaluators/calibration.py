"""Calibrating a profile on whole models: what the sum of a model's unit timings misses, measured
on whole models and fitted (`calibrate`, which `star profile` runs after timing the grid):

- the fixed time each kind of block adds and the decode cost per weight byte (`block_overheads`),
  on random proxies the caller passes in (`star profile` takes them from the search spaces:
  star.search_spaces.calibration_proxies);
- for models larger than the last-level cache, the ratio of whole-model time to the sum of cold
  unit timings, per width (`cold_scales`), on four fixed models of 13-273 M parameters;
- the runtime's fixed working memory on top of weights, cache and activations;
- how far repeated measurements disagreed while calibrating (`timing_noise`), and the share of
  calibration models whose measurements never settled (`unsettled`): a busy machine's mark.

Measuring is evaluators/measure.py's; the predictor reads what this writes into the profile.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from typing import Any

from star.arch import ArchConfig
from star.presets import get_preset, hybrid
from star.scaling import LATENCY_PROXY, to_proxy

from .features import block_kinds
from .latency import peak_memory_bytes
from .measure import measure_in_passes, measure_peak_memory, settled, speed_of
from .predictor import Profile

CALIBRATION_PROMPT, CALIBRATION_CONTEXT = 256, 1024
# How hard the decode fit pulls each kind's fixed cost towards 0 (in squared blocks per model).  A
# quick profile fits nine constants on 16 proxies measured once; on a busy machine plain least
# squares gave 0.95 ms per FFN-less block and -0.12 ms per MB of weights (a full profile: -0.08 and
# +0.011), and predicted some proxies 66-104% slow.  With 100: the worst error of the design sample
# (seed 1) fell from +66% to -31% for the quick profile; the first dev-cpu profile, refitted from
# its own stored measurements, still predicts its quiet-machine sample 100% within 10% (tau 0.931
# to 0.919).  docs/benchmarks.md, issue 19.
RIDGE = 100.0
# The prefill fit's penalty: prefill gaps are tens of milliseconds where decode's are tenths, so a
# smaller one lets each kind's constant follow them.  Chosen on samples already used (2026-12-07):
# ExecuTorch quick profile on stream 30, LFM2 proxies' prefill within ±10% 3 -> 10 of 10 and 3 -> 7
# of 10 (least squares: 10 and 8; 100: 9 and 6); eager profiles rescored on streams 27 and 28 (4
# profiles, 3 runs each), within ±10% +1.2 points on average against one constant per block.
PREFILL_RIDGE = 10.0
# What calibration adds to a profile's metadata that predictions read (older profiles' single
# constant among them): without these, a profile predicts the sum of the units alone.
CALIBRATED_KEYS = ("overhead_ms_per_block", "block_overhead_ms", "warm_decode_ms_per_weight_byte", "cold_scale")


def cold_calibration_models() -> list[ArchConfig]:
    """Whole models too large for a last-level cache yet quick to run: a proxy-width model with wide
    SwiGLUs (128 wide, 13 M parameters) and widths 512, 1024 and 2048 (40 M, 115 M and 273 M
    parameters), short convolutions and GQA alternating.  The 128-wide one is there because a cold
    unit of a proxy's size waits on memory far more than a whole model does: scaled like the
    512-wide model, 128-wide models of 30-50 MB were predicted 45-75% too slow."""
    shapes = ((128, 4, 2, 2048, 16, 512), (512, 8, 4, 2304, 8, 8192), (1024, 16, 8, 4608, 6, 8192),
              (2048, 32, 8, 8192, 4, 8192))
    return [hybrid(f"calibration-cold-{width}", width, heads, kv, ffn, vocab,
                   ["short_conv", "attention"] * (blocks // 2), max_positions=4096)
            for width, heads, kv, ffn, blocks, vocab in shapes]


def cold_scales(profile_: Profile, passes: int = 3, most: int = 6, runtime: str = "eager",
                models: list[ArchConfig] | None = None, canary_ms: float | None = None,
                canary_decode_ms: float | None = None
                ) -> tuple[dict[str, dict[str, float]], dict[str, list[list[float]]], float | None, float | None]:
    """Per phase and model width, measured whole-model time over the sum of cold unit timings; every
    process's (prefill, decode, canary[, canary decode]) ms per model; the canary's quiet prefill (of
    these measurements and `canary_ms`: measure.Passes); and the canary's decode step the decodes are
    expressed at: `canary_decode_ms` (the calibration proxies', so that one profile has one), or these
    measurements' quiet step where none is given.

    A unit timed alone right after a cache flush waits on memory that a whole model streams with the
    prefetchers already running, and how much that matters depends on the unit's size: one scale
    from a 1024-wide model left 512-wide models 12% over their measured decode.  Each width rests on
    one model, so one slow measurement moves every prediction of that width: in two full profiles
    made an hour apart on a busy host, the 2048-wide model's fastest of three processes gave scales
    of 1.30 and 0.87 (prefill), and the profile with 1.30 predicted 2048-wide models 24-25% slow.
    So each model is measured like the calibration proxies: in `passes` fresh processes, then more
    (up to `most`) until its two fastest taken while the host was quiet agree within 6%
    (`measure.measure_in_passes`), its speed taken (`measure.speed_of`).  Only models the predictor
    treats as cold on this machine count."""
    configs = cold_models(profile_, models)
    measured = measure_in_passes(configs, CALIBRATION_PROMPT, CALIBRATION_CONTEXT, passes=passes, most=most,
                                 reps=3, runtime=runtime, canary_ms=canary_ms)
    cold_runs = {name: [list(t) for t in runs] for name, runs in measured.runs.items()}
    canary_decode_ms = canary_decode_ms or measured.canary_decode()
    return (scales_of(profile_, configs, cold_runs, canary_decode_ms), cold_runs, measured.canary_fastest(canary_ms),
            canary_decode_ms)


def scales_of(profile_: Profile, configs: list[ArchConfig], cold_runs: dict[str, list[list[float]]],
              canary_decode_ms: float | None = None) -> dict[str, dict[str, float]]:
    """`cold_scales`' figures from its measurements (`cold_runs`: each model's passes; decode against
    the canary's quiet step, `canary_decode_ms`: measure.speed_of), against the profile's predictions
    as they stand: what a profile stores, and how a stored profile is refitted under a changed
    predictor without measuring again (benchmarks/latency_refit.py)."""
    scales: dict[str, dict[str, float]] = {"prefill": {}, "decode": {}}
    for config in configs:
        predicted = profile_.predict(config, CALIBRATION_PROMPT, CALIBRATION_CONTEXT)
        width = str(config.hidden_size)
        prefill, decode = speed_of(cold_runs[config.name], canary_decode_ms)
        scales["prefill"][width] = prefill / predicted["ttft_ms"]
        scales["decode"][width] = decode / predicted["decode_ms"]
    return scales


def cold_models(profile_: Profile, models: list[ArchConfig] | None = None) -> list[ArchConfig]:
    """Those of `models` (default: cold_calibration_models) that this machine runs cold (larger than
    its last-level cache)."""
    return [config for config in (cold_calibration_models() if models is None else models)
            if profile_.cache_state(config, CALIBRATION_CONTEXT) == "cold"]


def block_overheads(profile_: Profile, models: list[ArchConfig], passes: int = 3, most: int = 6,
                    runtime: str = "eager"
                    ) -> tuple[dict[str, dict[str, float]], float, list[dict[str, Any]], float | None, float | None]:
    """The fixed ms a block adds inside a whole model beyond its units' timings, and the extra ms per
    weight byte of a decode step, from the gaps between measured and unit-summed times of
    `models` (random proxies), each measured in at least `passes` separate passes and up to `most` where
    they have not settled (`measure_in_passes`; their speed taken, `measure.speed_of`); the runs, and
    the canary's quiet prefill and decode step while measuring them.

    Decode: one constant per mixer kind and per FFN kind, plus one cost per weight byte, fitted
    together by ridge regression (`RIDGE`).  A proxy's decode step is mostly Python dispatch (the
    model's loop, residual adds, norms, state bookkeeping), which differs by kind: attention blocks cost more than
    their units, long convolutions less.  The per-byte term is memory: a unit timed alone finds its
    weights in the last-level cache, but a whole proxy (13-20 MB) does not fit the share of it a
    core gets (a chain of matrix-vector products here read 27 GB/s up to 8 MB of weights and
    6.7 GB/s from 16 MB on), so every weight byte costs extra; fitted, 0.04-0.11 ms per MB.
    Prefill: a constant per kind too, by ridge regression with a lighter penalty (`PREFILL_RIDGE`),
    and no per-byte term.  The first eager profile did better with one constant per block (the
    median: 100% of its accuracy sample within 10%, 84-88% with per-kind least squares), but in
    ExecuTorch the gap follows the kind: an attention unit timed alone prefills 10-20% slower than
    inside a model, the other units within a few percent, and one constant per block predicted LFM2
    proxies 10-12% slow and STAR ones 6-8% fast (2026-12-07, docs/latency.md)."""
    measured = measure_in_passes(models, CALIBRATION_PROMPT, CALIBRATION_CONTEXT, passes=passes, most=most,
                                 runtime=runtime)
    timings = measured.runs
    canary_decode_ms = measured.canary_decode()
    runs = []
    for config in models:
        prefill, decode = speed_of(timings[config.name], canary_decode_ms)
        runs.append({"model": config.to_json(), "prefill_ms": prefill, "decode_ms": decode,
                     "rounds": [list(t) for t in timings[config.name]]})
    runs = with_units(profile_, runs)
    overheads, per_byte = fit_overheads(runs, profile_.weight_bytes)
    return overheads, per_byte, runs, measured.canary_fastest(), canary_decode_ms


def with_units(profile_: Profile, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calibration runs with the sums of their units' timings (`units_prefill_ms`,
    `units_decode_ms`) as `profile_` predicts them: the fixed costs are fitted to the gaps.  The
    profile must hold no calibration (CALIBRATED_KEYS removed) for these to be the units alone."""
    out = []
    for run in runs:
        predicted = profile_.predict(ArchConfig.from_json(run["model"]), CALIBRATION_PROMPT, CALIBRATION_CONTEXT)
        out.append({**run, "units_prefill_ms": predicted["ttft_ms"], "units_decode_ms": predicted["decode_ms"]})
    return out


def fit_overheads(runs: list[dict[str, Any]], weight_bytes: int, ridge: float = RIDGE,
                  prefill_ridge: float = PREFILL_RIDGE) -> tuple[dict[str, dict[str, float]], float]:
    """The fit of `block_overheads` on its stored measurements (a profile's `calibration_runs`), so
    that a fit can be redone, or another penalty tried, without measuring again
    (benchmarks/latency_refit.py): per phase, a constant per mixer kind and per FFN kind, and for
    decode the ms per weight byte."""
    import numpy as np

    models = [ArchConfig.from_json(run["model"]) for run in runs]
    keys = sorted({key for config in models for block in config.blocks for key in block_kinds(block)})
    counts = np.array([[sum(key in block_kinds(b) for b in config.blocks) for key in keys] for config in models],
                      dtype=float)
    # Ridge: the per-kind constants are pulled towards 0 (the unit sums being right), the per-byte
    # cost is not.  Every block has exactly one mixer and one FFN, so only mixer-plus-FFN sums are
    # determined by the data; the penalty picks one split, and predictions use only the sums.
    features_ = np.hstack([counts, [[config.params() * weight_bytes / 1e6] for config in models]])
    gaps = np.array([run["decode_ms"] - run["units_decode_ms"] for run in runs])
    penalty = np.eye(len(keys) + 1) * ridge
    penalty[-1, -1] = 0.0
    solution, *_ = np.linalg.lstsq(features_.T @ features_ + penalty, features_.T @ gaps, rcond=None)  # ridge 0 too
    gaps = np.array([run["prefill_ms"] - run["units_prefill_ms"] for run in runs])
    prefill, *_ = np.linalg.lstsq(counts.T @ counts + np.eye(len(keys)) * prefill_ridge, counts.T @ gaps, rcond=None)
    overheads = {"decode": {key: float(v) for key, v in zip(keys, solution[:-1], strict=True)},
                 "prefill": {key: float(v) for key, v in zip(keys, prefill, strict=True)}}
    return overheads, float(solution[-1]) / 1e6


def timing_noise(runs: list[dict[str, Any]]) -> dict[str, float]:
    """How far repeated measurements of one model disagreed while profiling: per phase, the median
    over calibration proxies of slowest pass over fastest, minus 1 (only proxies with 2+ passes).

    Measured: 7% (prefill) and 10% (decode) on an idle 2-core VM whose profile then predicted 100% of
    a sample within ±10%; 35% and 47% on a VM of the same CPU kind whose host was busy, where a proxy's
    decode moved between 7 and 13 ms from one second to the next and the profile predicted 75% and 41%.
    A profile made in such an hour predicts that hour: `Profile.noise_warning` says so."""
    noise = {}
    for i, phase in enumerate(("prefill", "decode")):
        spreads = [max(r[i] for r in run["rounds"]) / min(r[i] for r in run["rounds"]) - 1
                   for run in runs if len(run["rounds"]) > 1]
        if spreads:
            noise[phase] = float(statistics.median(spreads))
    return noise


def unsettled(rounds: list[list[list[float]]], canary_ms: float | None = None) -> dict[str, float]:
    """Per phase, the share of calibration models (each given as its passes' [prefill, decode(,
    canary(, canary decode))] ms) that had not settled when the profile stopped measuring them
    (`measure.settled`: prefill, the two fastest passes made while the host was quiet, by the canary
    against `canary_ms`, differ by more than measure.SETTLED_SPREAD; decode, likewise, or where the
    canary's decode was timed alongside, no two ratios to it agree within that): models whose fitted
    figures may be a busy spell's.

    It tells good profiles from bad where `timing_noise` does not, because the profile keeps each
    model's fastest pass: the spread of the passes says how busy the host was, this whether the
    fastest was found anyway.  Six profiles made by the same rules on one busy day (the 2026-12-06
    Zen 4 VM; counted over their calibration proxies, each checked on a fresh sample of 32 models:
    docs/benchmarks.md, issue 19): the one with 0% (prefill) and 3% (decode) unsettled predicted 97%
    of its sample within ±10% in each phase (median of 3 runs); the five with 12-81% and 22-69%
    scored 31-81% (prefill) and 28-94% (decode), while timing noise put the good one at 55% / 15%,
    among the noisiest."""
    if not rounds:
        return {}
    return {phase: sum(not settled(runs, i, canary_ms) for runs in rounds) / len(rounds)
            for i, phase in enumerate(("prefill", "decode"))}


CALIBRATION_STAGES = ("calibrating: fixed costs on whole proxies", "calibrating: cold-cache scales on 13-273M models",
                      "calibrating: runtime memory")


def calibrate(path: str, proxies: list[ArchConfig], quick: bool = False,
              stage: Callable[[int, str], None] | None = None, runtime: str = "eager",
              cold_configs: list[ArchConfig] | None = None) -> dict[str, Any]:
    """Measure what unit timings miss on whole models and store it in the profile's metadata:

    - the fixed time each kind of block adds and the decode cost per weight byte (`block_overheads`),
      on `proxies` (`star profile`: 32 random ones), three to six passes each (quick: two or three);
    - for models larger than the last-level cache, the ratio of whole-model time to the sum of cold
      unit timings, per width (`cold_scales`), on four models of 13-273 M parameters;
    - the runtime's fixed working memory on top of weights, cache and activations.

    `quick` (with `star profile --quick`, which passes 16 proxies) measures each proxy in two or three
    passes and each cold model in two to four, instead of three to six (twice the most for a model never
    measured while the host ran quiet: measure.NEVER_QUIET_MOST).  `cold_configs` replaces the cold-cache
    models (cold_calibration_models).

    In ExecuTorch (`runtime`), every model is first lowered to a program (or taken from the cache of
    programs: evaluators/measure_executorch.py), and the runtime's working memory is not measured
    (peak memory predictions of such a profile count weights, caches and activations only)."""
    import os

    import pyarrow.parquet as pq

    profile_ = Profile(path)
    for key in CALIBRATED_KEYS:  # measured against the units alone
        profile_.machine.pop(key, None)
    report = stage or (lambda done, what: None)
    passes, most = (2, 3) if quick else (3, 6)
    if runtime == "executorch":
        from .measure_executorch import export_programs, model_job

        models = proxies + cold_models(profile_, cold_configs)
        jobs = [model_job(config, CALIBRATION_PROMPT, CALIBRATION_CONTEXT) for config in models]
        export_programs(jobs, progress=lambda done, total, what: report(
            0, f"lowering calibration models to ExecuTorch ({done}/{total}): {what}"))
    report(0, CALIBRATION_STAGES[0])
    overhead, per_byte, runs, canary_ms, canary_decode_ms = block_overheads(profile_, proxies, passes, most, runtime)
    profile_.machine["block_overhead_ms"] = overhead
    profile_.machine["warm_decode_ms_per_weight_byte"] = per_byte
    report(1, CALIBRATION_STAGES[1])
    cold_scale, cold_runs, canary_ms, canary_decode_ms = cold_scales(
        profile_, passes, most + 1 if quick else most, runtime, cold_configs, canary_ms, canary_decode_ms)
    report(2, CALIBRATION_STAGES[2] if runtime == "eager" else f"{CALIBRATION_STAGES[2]}: not measured in ExecuTorch")
    working = [0.0]  # ExecuTorch: not measured
    if runtime == "eager":
        working = []
        for name in ("lfm2-proxy", "attention-proxy"):
            config = to_proxy(get_preset(name), **LATENCY_PROXY)  # the calibration shape, as before
            measured = measure_peak_memory(config, CALIBRATION_CONTEXT)
            working.append(measured - peak_memory_bytes(config, CALIBRATION_CONTEXT, profile_.weight_bytes))
    table = pq.read_table(path)
    machine = json.loads(table.schema.metadata[b"star.profile"])
    calibration = {"block_overhead_ms": overhead, "warm_decode_ms_per_weight_byte": per_byte,
                   "cold_scale": cold_scale,
                   "runtime_bytes": max(0.0, float(statistics.median(working))), "timing_noise": timing_noise(runs),
                   "unsettled": unsettled([run["rounds"] for run in runs] + list(cold_runs.values()), canary_ms),
                   "canary_ms": canary_ms, "canary_decode_ms": canary_decode_ms}
    machine.pop("overhead_ms_per_block", None)  # the single constant of older profiles
    machine.update(calibration, calibration_runs=runs, cold_runs=cold_runs)  # the raw measurements, for inspection
    tmp = path + ".tmp"
    pq.write_table(table.replace_schema_metadata({"star.profile": json.dumps(machine)}), tmp)

    os.replace(tmp, path)
    report(3, "done")
    return calibration
