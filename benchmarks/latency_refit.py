"""Refit a profile's whole-model constants from the measurements it stores, with another ridge penalty.

`star profile` keeps every calibration proxy's measurements in the profile (`calibration_runs`), so
the fit (`calibration.fit_overheads`) can be redone without measuring anything: how issue 19 chose
the penalty (`calibration.RIDGE`) on the design sample, and how its figures can be reproduced:

    python benchmarks/latency_refit.py benchmarks/latency_issue19/quick.parquet --ridge 100 -o /tmp/q100.parquet
    python benchmarks/latency_accuracy.py --rescore benchmarks/latency_issue19/design_seed1.jsonl \\
        --profile benchmarks/latency_issue19/quick.parquet --profile /tmp/q100.parquet

Printed: the fitted decode constants per kind (ms per block) and the cost per MB of weights.
"""

from __future__ import annotations

import argparse
import json

import pyarrow.parquet as pq

from star.evaluators.calibration import RIDGE, fit_overheads
from star.evaluators.predictor import Profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="a profile made by star profile (with its calibration measurements)")
    parser.add_argument("--ridge", type=float, default=RIDGE, help=f"penalty (default {RIDGE:g}; 0: least squares)")
    parser.add_argument("-o", "--out", required=True, help="the refitted copy to write (.parquet)")
    args = parser.parse_args()
    profile = Profile(args.profile)
    runs = profile.machine["calibration_runs"]
    overheads, per_byte = fit_overheads(runs, profile.weight_bytes, args.ridge)
    table = pq.read_table(args.profile)
    machine = json.loads(table.schema.metadata[b"star.profile"])
    machine.update(block_overhead_ms=overheads, warm_decode_ms_per_weight_byte=per_byte, refit_ridge=args.ridge)
    pq.write_table(table.replace_schema_metadata({"star.profile": json.dumps(machine)}), args.out)
    shown = ", ".join(f"{key} {value:+.3f}" for key, value in overheads["decode"].items())
    print(f"{args.profile}: {len(runs)} calibration proxies, ridge {args.ridge:g}: decode ms per block {shown}; "
          f"{per_byte * 1e6:+.4f} ms per MB of weights; prefill {overheads['prefill']['block']:+.4f} ms per block")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
