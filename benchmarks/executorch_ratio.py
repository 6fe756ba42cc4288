"""LFM2-350M against Qwen3-0.6B in ExecuTorch on this CPU: prefill of 256 tokens and decode at 4K context.

Each preset is exported with `star export --format executorch` (fp32, XNNPACK, prompt 256, cache of
4,096 positions, seeded random weights, which change no timing; `--keep DIR` keeps the programs) and
run in ExecuTorch's runtime here:
- prefill: the `prefill` method on 256 tokens, median of `--reps` calls after one warm-up;
- decode: the `decode` method at position 4,095 after a prefill, median of 4 x `--reps` steps.  The
  exported attention reads every slot up to the position (`llama::custom_sdpa`), so this is decode at
  a 4K context (slots the prompt did not write hold zeros: their contents change no timing);
each in a fresh process (`--measure`), in `--passes` passes over both models, the fastest pass taken
(interference on a shared machine only slows a process: evaluators/measure.py `speed_of`).  The same
run measures our eager PyTorch model the same way (`measure.measure_in_passes`, threads as
ExecuTorch's pool has them) as the baseline, and prints both ratios beside transformers' figures
(issue 23: 1.67x prefill, 1.72x decode) and the published "about 2x" (LFM2's sources, on CPU).

    python benchmarks/executorch_ratio.py [--passes 3] [--reps 5] [--keep DIR] [--out FILE.jsonl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = ("lfm2-350m", "qwen3-0.6b")
PROMPT, CONTEXT = 256, 4096
TRANSFORMERS_RATIOS = {"prefill": 1.67, "decode": 1.72}  # issue 23's figures for transformers' own classes


def measure_program(path: str, reps: int) -> dict[str, float]:
    """(prefill ms, decode ms) of one .pte program, in this process (a fresh one: `--measure`)."""
    import torch

    from star.executorch import ExecuTorchLM

    program = ExecuTorchLM(path)
    tokens = torch.randint(0, 512, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    prefill = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        program.prefill(tokens)
        prefill.append((time.perf_counter() - start) * 1e3)
    token = tokens[:, :1]
    decode = []
    for _ in range(4 * reps + 1):
        start = time.perf_counter()
        program.decode(token, CONTEXT - 1)
        decode.append((time.perf_counter() - start) * 1e3)
    return {"prefill_ms": statistics.median(prefill[1:]), "decode_ms": statistics.median(decode[1:]),
            "threads": program.threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--keep", help="folder for the .pte files (default: a temporary one)")
    parser.add_argument("--out", help="append the figures to this JSON-lines file")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure one program and print JSON
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_program(args.measure, args.reps)))
        return

    import torch

    from star.evaluators.measure import measure_in_passes, speed_of
    from star.machine import cpu_kind, fingerprint
    from star.presets import get_preset

    print(f"machine: {cpu_kind(fingerprint())}; {json.dumps(fingerprint())}")
    folder = Path(args.keep or tempfile.mkdtemp(prefix="star-et-"))
    folder.mkdir(parents=True, exist_ok=True)
    configs = [get_preset(name) for name in PRESETS]
    for config in configs:  # each in its own process: a lowering holds several copies of the weights
        path = folder / config.name / "model.pte"
        if not path.exists():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "star.cli", "export", "--preset", config.name, "--format",
                            "executorch", "--prompt", str(PROMPT), "--context", str(CONTEXT), "-o", str(path.parent)],
                           check=True)
            took = time.perf_counter() - started
            print(f"exported {config.name}: {path.stat().st_size / 1e6:.0f} MB in {took:.0f} s", flush=True)
    runs: dict[str, list[dict[str, float]]] = {config.name: [] for config in configs}
    for _ in range(args.passes):
        for config in configs:
            done = subprocess.run([sys.executable, __file__, "--measure", str(folder / config.name / "model.pte"),
                                   "--reps", str(args.reps)], capture_output=True, text=True, check=True)
            runs[config.name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  executorch {config.name}: {runs[config.name][-1]}", flush=True)
    threads = runs[PRESETS[0]][0]["threads"]
    executorch = {name: speed_of([(r["prefill_ms"], r["decode_ms"]) for r in rs]) for name, rs in runs.items()}
    eager_passes = measure_in_passes(configs, PROMPT, CONTEXT, passes=args.passes, most=args.passes, reps=args.reps,
                                     threads=threads)
    eager = {name: speed_of(rs, eager_passes.canary_decode()) for name, rs in eager_passes.runs.items()}

    def ratios(figures: dict[str, tuple[float, float]]) -> dict[str, float]:
        lfm2, qwen3 = figures[PRESETS[0]], figures[PRESETS[1]]
        return {"prefill": qwen3[0] / lfm2[0], "decode": qwen3[1] / lfm2[1]}

    print(f"\nprompt {PROMPT}, decode at context {CONTEXT}, {threads} threads, {args.passes} passes (measure.speed_of: "
          "the fastest; eager decode against the canary)")
    print(f"{'model':<12}{'runtime':<12}{'prefill ms':>12}{'decode ms':>11}")
    for name in PRESETS:
        for runtime, figures in (("executorch", executorch), ("eager", eager)):
            print(f"{name:<12}{runtime:<12}{figures[name][0]:>12.1f}{figures[name][1]:>11.2f}")
    et_ratio, eager_ratio = ratios(executorch), ratios(eager)
    print(f"\nLFM2-350M speed-up over Qwen3-0.6B: ExecuTorch prefill {et_ratio['prefill']:.2f}x, decode "
          f"{et_ratio['decode']:.2f}x; our eager model {eager_ratio['prefill']:.2f}x, {eager_ratio['decode']:.2f}x; "
          f"transformers {TRANSFORMERS_RATIOS['prefill']}x, {TRANSFORMERS_RATIOS['decode']}x; published about 2x")
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps({"machine": fingerprint(), "torch": torch.__version__, "threads": threads,
                                "prompt": PROMPT, "context": CONTEXT, "executorch_runs": runs,
                                "eager_runs": eager_passes.runs, "executorch_ratio": et_ratio,
                                "eager_ratio": eager_ratio, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                     time.gmtime())}) + "\n")


if __name__ == "__main__":
    main()
