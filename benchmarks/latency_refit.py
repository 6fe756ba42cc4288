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
    CALIBRATED_KEYS,
    RIDGE,
    cold_calibration_models,
    fit_overheads,
    scales_of,
    with_units,
)
from star.evaluators.predictor import Profile


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
    if args.units:  # the unit sums as the predictor computes them now
        for key in CALIBRATED_KEYS:
            profile.machine.pop(key, None)
        runs = with_units(profile, runs)
    overheads, per_byte = fit_overheads(runs, profile.weight_bytes, args.ridge)
    table = pq.read_table(args.profile)
    machine = json.loads(table.schema.metadata[b"star.profile"])
    machine.update(block_overhead_ms=overheads, warm_decode_ms_per_weight_byte=per_byte, refit_ridge=args.ridge)
    if args.units:
        profile.machine.update(block_overhead_ms=overheads, warm_decode_ms_per_weight_byte=per_byte)
        cold_runs = machine.get("cold_runs", {})  # the standard cold models' (a test's own are not known by name)
        known = [config for config in cold_calibration_models() if config.name in cold_runs]
        machine.update(calibration_runs=runs, refit_units=True,
                       cold_scale=scales_of(profile, known, cold_runs, machine.get("canary_decode_ms")))
    pq.write_table(table.replace_schema_metadata({"star.profile": json.dumps(machine)}), args.out)
    shown = {phase: ", ".join(f"{key} {value:+.3f}" for key, value in overheads[phase].items())
             for phase in ("decode", "prefill")}
    print(f"{args.profile}: {len(runs)} calibration proxies, ridge {args.ridge:g}: decode ms per block "
          f"{shown['decode']}; {per_byte * 1e6:+.4f} ms per MB of weights; prefill ms per block {shown['prefill']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
