"""Refit a profile's whole-model constants from the measurements it stores, with another ridge penalty.

`star profile` keeps every calibration proxy's measurements in the profile (`calibration_runs`), so
the fit (`calibration.fit_overheads`) can be redone without measuring anything: how issue 19 chose
the penalty (`calibration.RIDGE`) on the design sample, and how its figures can be reproduced:

    python benchmarks/latency_refit.py benchmarks/latency_issue19/quick.parquet --ridge 100 -o /tmp/q100.parquet
    python benchmarks/latency_accuracy.py --rescore benchmarks/latency_issue19/design_seed1.jsonl \\
        --profile benchmarks/latency_issue19/quick.parquet --profile /tmp/q100.parquet

With `--units`, the sums of unit timings each calibration model is compared with are recomputed by
the predictor as it is now, and the cold-cache scales refitted from the stored cold-model passes
(`cold_runs`) too: how a change to the predictor's rules is checked on profiles made before it
(docs/latency.md, "a setting the profile timed itself").

Printed: the fitted constants per kind (ms per block) and decode's cost per MB of weights.
"""

from __future__ import annotations

import argparse
import json

import pyarrow.parquet as pq

from star.evaluators.calibration import (
    CALIBRATION_CONTEXT,
    CALIBRATION_PROMPT,
    RIDGE,
    cold_calibration_models,
    fit_overheads,
)
from star.evaluators.measure import fastest
from star.evaluators.predictor import Profile

# What calibration adds to a profile on top of its unit fits: the predictor without them sums units.
CALIBRATED = ("overhead_ms_per_block", "block_overhead_ms", "warm_decode_ms_per_weight_byte", "cold_scale")


def units_now(profile: Profile, runs: list[dict]) -> list[dict]:
    """The calibration runs with their unit sums recomputed by the current predictor rules."""
    from star.arch import ArchConfig

    for key in CALIBRATED:
        profile.machine.pop(key, None)
    out = []
    for run in runs:
        predicted = profile.predict(ArchConfig.from_json(run["model"]), CALIBRATION_PROMPT, CALIBRATION_CONTEXT)
        out.append({**run, "units_prefill_ms": predicted["ttft_ms"], "units_decode_ms": predicted["decode_ms"]})
    return out


def cold_scales_now(profile: Profile, cold_runs: dict[str, list]) -> dict[str, dict[str, float]]:
    """calibration.cold_scales from the stored passes of the standard cold models, against the
    predictor as it is now (with the refitted constants, as `star profile` fits them)."""
    configs = {config.name: config for config in cold_calibration_models()}
    scales: dict[str, dict[str, float]] = {"prefill": {}, "decode": {}}
    for name, runs in cold_runs.items():
        if name not in configs:  # a caller's own cold models (tests): not known by name
            continue
        predicted = profile.predict(configs[name], CALIBRATION_PROMPT, CALIBRATION_CONTEXT)
        prefill, decode = fastest(runs)
        width = str(configs[name].hidden_size)
        scales["prefill"][width] = prefill / predicted["ttft_ms"]
        scales["decode"][width] = decode / predicted["decode_ms"]
    return scales


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="a profile made by star profile (with its calibration measurements)")
    parser.add_argument("--ridge", type=float, default=RIDGE, help=f"penalty (default {RIDGE:g}; 0: least squares)")
    parser.add_argument("--units", action="store_true",
                        help="recompute the unit sums and the cold scales with the predictor as it is now")
    parser.add_argument("-o", "--out", required=True, help="the refitted copy to write (.parquet)")
    args = parser.parse_args()
    profile = Profile(args.profile)
    runs = profile.machine["calibration_runs"]
    if args.units:
        runs = units_now(profile, runs)
    overheads, per_byte = fit_overheads(runs, profile.weight_bytes, args.ridge)
    table = pq.read_table(args.profile)
    machine = json.loads(table.schema.metadata[b"star.profile"])
    machine.update(block_overhead_ms=overheads, warm_decode_ms_per_weight_byte=per_byte, refit_ridge=args.ridge)
    if args.units:
        profile.machine.update(block_overhead_ms=overheads, warm_decode_ms_per_weight_byte=per_byte)
        machine.update(calibration_runs=runs, cold_scale=cold_scales_now(profile, machine.get("cold_runs", {})),
                       refit_units=True)
    pq.write_table(table.replace_schema_metadata({"star.profile": json.dumps(machine)}), args.out)
    shown = {phase: ", ".join(f"{key} {value:+.3f}" for key, value in overheads[phase].items())
             for phase in ("decode", "prefill")}
    print(f"{args.profile}: {len(runs)} calibration proxies, ridge {args.ridge:g}: decode ms per block "
          f"{shown['decode']}; {per_byte * 1e6:+.4f} ms per MB of weights; prefill ms per block {shown['prefill']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
