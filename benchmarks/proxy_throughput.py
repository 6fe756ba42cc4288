"""Training throughput of our ProxyTrainer on the lfm2-proxy preset against transformers' Lfm2ForCausalLM.

Same machine, same run, same batch shape (16 x 256 tokens by default).  Transformers trains in fp32
with plain AdamW, as a user would run it.  Ours runs as `star eval` does by default (bf16 autocast
where the CPU multiplies bf16 natively, eager), with `--compile` (torch.compile, from a cold and a
warm inductor cache), and in fp32 eager for reference.  Each measurement runs in its own subprocess, so that thread
settings, the allocator tuning ProxyTrainer applies, and the inductor cache cannot leak between them.
The steady-state figure is the median step time after warm-up; the first step (which includes
compiling) is reported separately, from a cold inductor cache and from a warm one.

    python benchmarks/proxy_throughput.py [--steps N] [--threads T] [--device cuda]

On a GPU every step ends with the loss read back to the host, which waits for the GPU, so host-side
step times are GPU step times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from star.machine import machine_name

BATCH, SEQUENCE, WARMUP = 16, 256, 2


def measure(mode: str, steps: int, threads: int, device: str = "cpu") -> dict:
    """Runs in the worker subprocess: trains `WARMUP + steps` steps on random tokens, times each."""
    import torch
    import torch.nn.functional as F

    from star.presets import get_preset

    torch.set_num_threads(threads)
    config = get_preset("lfm2-proxy")
    tokens = torch.randint(0, config.vocab_size, (BATCH, SEQUENCE + 1), generator=torch.Generator().manual_seed(0))
    inputs, targets = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    if mode == "transformers":
        from transformers import Lfm2ForCausalLM

        from star.export import to_hf_config

        torch.manual_seed(0)
        model = Lfm2ForCausalLM(to_hf_config(config)).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

        def step() -> float:
            logits = model(input_ids=inputs).logits
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()

        label = "transformers Lfm2ForCausalLM, fp32, AdamW"
    else:
        from star.evaluators.trainer import ProxyTrainer, TrainSettings

        precision = "fp32" if mode == "ours-fp32-eager" else "auto"
        trainer = ProxyTrainer(config, TrainSettings(steps=1000, precision=precision), seed=0, device=device,
                               compile=mode == "ours-compiled")

        def step() -> float:
            return trainer.step(inputs, targets)

        label = f"ours (ProxyTrainer), {trainer.precision}, {'compiled' if trainer.compiled else 'eager'}"
    times = []
    for _ in range(WARMUP + steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    if mode != "transformers":  # the trainer may have fallen back to eager during its first step
        label = f"ours (ProxyTrainer), {trainer.precision}, {'compiled' if trainer.compiled else 'eager'}"
    median = statistics.median(times[WARMUP:])
    return {"label": label, "first_step_s": times[0], "median_step_s": median,
            "tokens_per_s": BATCH * SEQUENCE / median, "loss": loss}


def run_worker(mode: str, steps: int, threads: int, env: dict[str, str] | None = None, device: str = "cpu") -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--steps", str(steps), "--threads", str(threads),
               "--device", device]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps after warm-up (default 10)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.steps, args.threads, args.device)))
        return

    import torch

    gpu = f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    print(f"machine: {machine_name()}{gpu}, {args.threads} threads, torch {torch.__version__}, "
          f"python {platform.python_version()}, device {args.device}")
    print(f"batch {BATCH} x {SEQUENCE} tokens, median of {args.steps} steps after {WARMUP} warm-up steps")
    default = run_worker("ours", args.steps, args.threads, device=args.device)
    with tempfile.TemporaryDirectory() as cache:  # a fresh inductor cache: the cold compile a new machine pays
        cold = run_worker("ours-compiled", args.steps, args.threads, {"TORCHINDUCTOR_CACHE_DIR": cache}, args.device)
        warm = run_worker("ours-compiled", args.steps, args.threads, {"TORCHINDUCTOR_CACHE_DIR": cache}, args.device)
    fp32 = run_worker("ours-fp32-eager", args.steps, args.threads, device=args.device)
    theirs = run_worker("transformers", args.steps, args.threads, device=args.device)
    compiled_tps = statistics.median([cold["tokens_per_s"], warm["tokens_per_s"]])
    width = max(len(r["label"]) for r in (default, warm, fp32, theirs))
    for r in (default, warm, fp32, theirs):
        print(f"{r['label']:<{width}}  {r['tokens_per_s']:8.0f} tok/s  "
              f"(step {1000 * r['median_step_s']:.0f} ms, first step {r['first_step_s']:.1f} s)")
    print(f"ours, first step incl. compile: cold cache {cold['first_step_s']:.1f} s, warm cache "
          f"{warm['first_step_s']:.1f} s (steady state of the two runs: {cold['tokens_per_s']:.0f} and "
          f"{warm['tokens_per_s']:.0f} tok/s)")
    print(f"ratio ours / transformers: default (bf16 eager) {default['tokens_per_s'] / theirs['tokens_per_s']:.2f}x, "
          f"--compile {compiled_tps / theirs['tokens_per_s']:.2f}x, fp32 eager "
          f"{fp32['tokens_per_s'] / theirs['tokens_per_s']:.2f}x (target: 3x)")


if __name__ == "__main__":
    main()
