"""`star profile`: measure what each operator costs on this machine, for prefill and for decode.

A unit is what the model runs per block: a token mixer with its pre-norm and residual add
("mixer:short_conv", "mixer:attention", ...), a channel mixer with its pre-norm and residual add
("ffn:swiglu", "ffn:mlp"), and once per model the embedding lookup and the head (final norm + LM
head).  Each unit is timed on a grid of widths, sizes and lengths:

- prefill: batch 1, a prompt of T tokens, writing the unit's cache;
- decode: one token with a cache already holding T tokens.

Every figure is the median of `reps` timed calls after warm-up calls; the p95 of the calls is kept too.
The machine (CPU, threads, torch version, dtype) goes into the Parquet file's metadata, so that a
predictor can warn when it is used elsewhere.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from star.arch import (
    MLPFFN,
    ArchConfig,
    AttentionMixer,
    BlockConfig,
    LongConvMixer,
    RecurrenceMixer,
    ShortConvMixer,
    SwiGLUFFN,
)
from star.errors import StarError
from star.machine import cpu_name, tune_allocator

PROFILE_FORMAT = 1
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    unit: str  # "mixer:<kind>", "ffn:<kind>", "embedding" or "head"
    width: int
    spec: Any  # the operator config (mixer or FFN), or the vocabulary size for embedding/head
    phase: str  # "prefill" or "decode"
    tokens: int  # prompt length (prefill) or context already cached (decode)


@dataclass(frozen=True)
class Grid:
    widths: tuple[int, ...]
    prefill: tuple[int, ...]
    decode: tuple[int, ...]
    reps: int
    warmup: int


FULL = Grid(widths=(128, 256, 512, 1024, 2048), prefill=(64, 256, 1024), decode=(128, 1024, 4096, 16384), reps=9,
            warmup=2)
QUICK = Grid(widths=(128, 1024), prefill=(64, 512), decode=(128, 2048), reps=5, warmup=1)


def unit_specs(width: int) -> Iterator[tuple[str, Any]]:
    heads = max(1, width // 64)
    yield "mixer:short_conv", ShortConvMixer(kernel=3)
    for kv in sorted({min(2, heads), min(8, heads)}):
        yield "mixer:attention", AttentionMixer(num_heads=heads, num_kv_heads=kv, head_dim=64, qk_norm=True)
    if width <= 256:  # the proxies' shape: heads of 32 (scaling.to_proxy), one or two KV heads
        for kv in (1, 2):
            yield "mixer:attention", AttentionMixer(num_heads=width // 32, num_kv_heads=kv, head_dim=32, qk_norm=True)
    yield "mixer:long_conv", LongConvMixer(kernel=128)
    yield "mixer:recurrence", RecurrenceMixer(num_heads=heads, head_dim=64)
    for ratio in (3, 6):
        yield "ffn:swiglu", SwiGLUFFN(hidden=ratio * width)
    yield "ffn:mlp", MLPFFN(hidden=4 * width)


def cases(grid: Grid) -> list[Case]:
    out = []
    for width in grid.widths:
        for unit, spec in unit_specs(width):
            for t in grid.prefill:
                out.append(Case(unit, width, spec, "prefill", t))
            if unit.startswith("mixer:"):
                for t in grid.decode:
                    out.append(Case(unit, width, spec, "decode", t))
            else:
                out.append(Case(unit, width, spec, "decode", grid.decode[0]))
        for vocab in (512, 65536):
            for unit in ("embedding", "head"):
                for t in grid.prefill:
                    out.append(Case(unit, width, vocab, "prefill", t))
                out.append(Case(unit, width, vocab, "decode", grid.decode[0]))
    return out


def features(case: Case, weight_bytes: int = 4) -> tuple[float, float]:
    """(FLOPs, bytes moved) of one call: the quantities time is regressed on."""
    d, t = case.width, case.tokens
    tokens = t if case.phase == "prefill" else 1
    context = 0 if case.phase == "prefill" else t
    if case.unit.startswith("mixer:"):
        spec = case.spec
        flops = spec.flops(d, tokens, context) + 4 * d * tokens
        cache = spec.cache_values(d, context + tokens) * weight_bytes
        moved = spec.params(d) * weight_bytes + cache + (2 * cache if case.unit == "mixer:attention" else 0)
        return float(flops), float(moved + 3 * d * tokens * weight_bytes)
    if case.unit.startswith("ffn:"):
        return float(case.spec.flops(d, tokens) + 4 * d * tokens), float(case.spec.params(d) * weight_bytes
                                                                         + 3 * d * tokens * weight_bytes)
    vocab = case.spec
    if case.unit == "head":
        return float(2 * d * vocab * tokens), float(d * vocab * weight_bytes + vocab * tokens * weight_bytes)
    return float(tokens), float(d * tokens * weight_bytes)


def _module(case: Case, dtype: torch.dtype) -> tuple[Callable[[torch.Tensor, Any], torch.Tensor], Any]:
    """A callable (x, state) → y for the unit, and a function making a state holding N tokens."""
    from star.model import Block, StarLM

    d = case.width
    if case.unit in ("embedding", "head"):
        block = BlockConfig(mixer=ShortConvMixer(kernel=2), ffn=None)
        model = StarLM(ArchConfig(hidden_size=d, vocab_size=case.spec, blocks=(block,))).to(dtype).eval()
        if case.unit == "embedding":
            return (lambda ids, state: model.embed_tokens(ids)), (lambda context: None)
        return (lambda x, state: model.head(x)), (lambda context: None)
    if case.unit.startswith("mixer:"):
        block = BlockConfig(mixer=case.spec, ffn=None)
    else:
        block = BlockConfig(mixer=ShortConvMixer(kernel=2), ffn=case.spec)
    config = ArchConfig(hidden_size=d, vocab_size=512, blocks=(block,))
    model = StarLM(config).to(dtype).eval()
    layer: Block = model.layers[0]
    if case.unit.startswith("ffn:"):
        return (lambda x, state: x + layer.feed_forward(layer.ffn_norm(x))), (lambda context: None)
    from star.operators import Context

    def run(x: torch.Tensor, state: Any) -> torch.Tensor:
        ctx = Context(position=state["position"])
        y = x + layer.mixer(layer.operator_norm(x), state["cache"], ctx)
        state["position"] += x.shape[1]
        return y

    def new_state(context: int) -> dict[str, Any]:
        """A decode state holding `context` tokens.  Cache contents do not change the time, so an
        attention cache is filled with random keys/values instead of running a long prefill."""
        cache = layer.mixer.init_state(1, torch.device("cpu"), dtype)
        if cache is not None and "k" in cache and context > 0:
            shape = (1, case.spec.num_kv_heads, context, case.spec.head_dim)
            cache = {"k": torch.randn(shape, dtype=dtype), "v": torch.randn(shape, dtype=dtype)}
        return {"position": context, "cache": cache}

    return run, new_state


def llc_bytes() -> int:
    """The last-level cache size as Linux reports it (32 MiB if unknown)."""
    from pathlib import Path

    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
            sizes.append(int(text[:-1]) * {"K": 2**10, "M": 2**20}[text[-1]] if text[-1] in "KM" else int(text))
        except (OSError, ValueError, KeyError):
            continue
    return max(sizes, default=32 * 2**20)


@torch.inference_mode()
def measure(case: Case, dtype: torch.dtype, reps: int, warmup: int, cold: bool = False) -> tuple[float, float]:
    """(median ms, p95 ms) of one call; `cold` evicts the caches before each call.

    A model larger than the last-level cache runs every block with cold weights (the blocks after it
    evicted them), and decode is memory-bound, so a unit timed alone with hot weights would look
    faster than it is inside a full-size model.  Small proxies, in turn, stay in cache.  A profile
    therefore has both, and the predictor picks by the model's size."""
    torch.manual_seed(0)
    fn, new_state = _module(case, dtype)
    flush = torch.ones(2 * llc_bytes() // 4) if cold else None  # read, not written: no dirty lines left
    d = case.width
    ids = case.unit == "embedding"

    def inputs(tokens: int) -> torch.Tensor:
        if ids:
            return torch.randint(0, case.spec, (1, tokens))
        return torch.randn(1, tokens, d, dtype=dtype)

    times = []
    decode_state = new_state(case.tokens) if case.phase == "decode" else None
    for i in range(warmup + reps):
        # Prefill starts from an empty cache every call; decode keeps stepping one state (it grows by one
        # token per call, negligible against the context).
        state = new_state(0) if case.phase == "prefill" else decode_state
        x = inputs(case.tokens if case.phase == "prefill" else 1)
        if flush is not None:
            float(flush.sum())
        start = time.perf_counter()
        fn(x, state)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def machine_info(threads: int, dtype: str, device: str) -> dict[str, str]:
    from importlib import metadata

    return {"cpu": cpu_name(), "arch": platform.machine(), "threads": str(threads), "dtype": dtype,
            "device": device, "torch": torch.__version__, "star": metadata.version("star-nas"),
            "python": platform.python_version(), "format": str(PROFILE_FORMAT), "llc_bytes": str(llc_bytes()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def spec_text(spec: Any) -> str:
    """The operator's settings, readably ('ShortConvMixer(kernel=3)'), or the vocabulary size."""
    return repr(spec) if not isinstance(spec, int) else f"vocab={spec}"


def profile(out: str, device: str = "cpu", threads: int | None = None, dtype: str = "fp32", quick: bool = False,
            progress: Callable[[int, int, str], None] | None = None, grid: Grid | None = None) -> int:
    """Measure the grid and write it to `out` (Parquet); return the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if device != "cpu":
        raise StarError(f"--device {device}: only cpu profiles are implemented so far")
    if dtype not in DTYPES:
        raise StarError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not out.endswith(".parquet"):
        raise StarError(f"-o {out}: expected a .parquet file name")
    if threads:
        torch.set_num_threads(threads)
    tune_allocator()
    grid = grid or (QUICK if quick else FULL)
    todo = cases(grid)
    rows = []
    runs = [(case, cold) for case in todo for cold in (False, True)]
    for i, (case, cold) in enumerate(runs):
        if progress:
            progress(i, len(runs), f"{case.unit} d={case.width} {case.phase} T={case.tokens}{' cold' if cold else ''}")
        median, p95 = measure(case, DTYPES[dtype], grid.reps, grid.warmup, cold)
        flops, moved = features(case, 4 if dtype == "fp32" else 2)
        rows.append({"unit": case.unit, "width": case.width, "spec": spec_text(case.spec), "phase": case.phase,
                     "tokens": case.tokens, "cache": "cold" if cold else "warm", "flops": flops, "bytes": moved,
                     "median_ms": median, "p95_ms": p95, "reps": grid.reps})
    if progress:
        progress(len(runs), len(runs), "done")
    table = pa.Table.from_pylist(rows)
    meta = {"star.profile": json.dumps(machine_info(torch.get_num_threads(), dtype, device))}
    table = table.replace_schema_metadata(meta)
    tmp = out + ".tmp"
    pq.write_table(table, tmp)
    import os

    os.replace(tmp, out)
    calibrate(out)
    return len(rows)


CALIBRATION_PROMPT, CALIBRATION_CONTEXT = 256, 1024


@torch.inference_mode()
def _timings_here(config: ArchConfig, prompt: int, context: int, reps: int) -> tuple[float, float]:
    """`measure_model`'s measurement, in the calling process."""
    from star.model import StarLM

    tune_allocator()
    torch.manual_seed(0)
    model = StarLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, prompt))
    prefill = []
    for _ in range(reps + 1):
        state = model.init_state(1)
        start = time.perf_counter()
        model(ids, state)
        prefill.append(time.perf_counter() - start)
    state = model.init_state(1)
    model(torch.randint(0, config.vocab_size, (1, context)), state)
    token = torch.randint(0, config.vocab_size, (1,))
    decode = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        model.step(token, state)
        decode.append(time.perf_counter() - start)
    return statistics.median(prefill[1:]) * 1e3, statistics.median(decode[1:]) * 1e3


def _in_fresh_process(function: str, config: ArchConfig, threads: int | None, *args: int) -> Any:
    """Run `function(config, *args)` of this module in a new Python process; return its result.

    End-to-end measurements run there because a process's history changes them: after a profile or
    a 1B-parameter model, the same proxy prefilled up to 1.5x slower in the same process (a large
    retained heap), and a process that freed a model hides that memory from a peak-RSS reading."""
    import subprocess
    import sys

    code = ("import json, sys, torch; from star.arch import ArchConfig; "
            f"from star.evaluators.profiler import {function}; "
            f"torch.set_num_threads({threads or torch.get_num_threads()}); "
            f"print(json.dumps({function}(ArchConfig.from_json(sys.stdin.read()), "
            f"{', '.join(str(int(a)) for a in args)})))")
    done = subprocess.run([sys.executable, "-c", code], input=config.to_json(), capture_output=True, text=True)
    if done.returncode != 0:
        raise StarError(f"measuring {config.name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_model(config: ArchConfig, prompt: int, context: int, reps: int = 7,
                  threads: int | None = None) -> tuple[float, float]:
    """(prefill ms, decode ms per token) of our whole model, end to end, in a fresh process: medians
    of `reps` calls after a warm-up, with the same allocator settings as the profile."""
    prefill, decode = _in_fresh_process("_timings_here", config, threads, prompt, context, reps)
    return prefill, decode


def _status_bytes(key: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: resident now; VmHWM: its peak)."""
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise StarError(f"/proc/self/status has no {key}: peak memory is measured on Linux only")


@torch.inference_mode()
def _peak_memory_here(config: ArchConfig, context: int) -> int:
    """Peak resident bytes of building `config` and decoding at `context`, above this process's
    footprint before the model existed.  The attention caches are filled with random keys and values
    of the right size instead of running a long prefill (their contents change no byte counts)."""
    from pathlib import Path

    from star.model import StarLM

    # glibc's default allocator settings, as a plain process running the model has them (the timing
    # runs' `tune_allocator` keeps freed heap, which would add up to one more layer's cache at 32K).
    # Warm-up on a tiny model with every operator: the kernels' code pages, thread pools and
    # scratch buffers that torch maps on first use belong to the baseline, not to the model.
    every_operator = ((ShortConvMixer(kernel=3), SwiGLUFFN(hidden=128)),
                      (AttentionMixer(num_heads=2, num_kv_heads=1, head_dim=32), MLPFFN(hidden=128)),
                      (LongConvMixer(kernel=16), None), (RecurrenceMixer(num_heads=2, head_dim=32), None))
    warm = ArchConfig(hidden_size=64, vocab_size=256,
                      blocks=tuple(BlockConfig(mixer=m, ffn=f) for m, f in every_operator))
    tiny = StarLM(warm).eval()
    warm_state = tiny.init_state(1)
    tiny(torch.zeros(1, 8, dtype=torch.long), warm_state)
    tiny.step(torch.zeros(1, dtype=torch.long), warm_state)
    del tiny, warm_state
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
    baseline = _status_bytes("VmRSS")
    model = StarLM(config).eval()
    state = model.init_state(1)
    for block, cache in zip(config.blocks, state.layers, strict=True):
        if cache is not None and "k" in cache:
            kept = context if block.mixer.window == 0 else min(context, block.mixer.window)
            shape = (1, cache["k"].shape[1], kept, cache["k"].shape[3])
            cache["k"], cache["v"] = torch.randn(shape), torch.randn(shape)
    state.position = context
    token = torch.zeros(1, dtype=torch.long)
    for _ in range(2):
        model.step(token, state)
    return _status_bytes("VmHWM") - baseline


def measure_peak_memory(config: ArchConfig, context: int, threads: int | None = None) -> int:
    """Peak resident memory (bytes) of our model decoding one token at `context`, fp32, measured in a
    fresh process."""
    return _in_fresh_process("_peak_memory_here", config, threads, context)


def cold_calibration_model() -> ArchConfig:
    """A whole model too large for the last-level cache yet quick to run (116 M parameters)."""
    from star.presets import hybrid

    layout = ["short_conv", "attention"] * 3
    return hybrid("calibration-cold", 1024, 16, 8, 4608, 8192, layout, max_positions=4096)


def calibrate(path: str) -> dict[str, Any]:
    """Measure what unit timings miss on whole models and store it in the profile's metadata:

    - the fixed time per block (the model's Python loop, state bookkeeping), on three proxies;
    - for models larger than the last-level cache, the ratio of whole-model time to the sum of cold
      unit timings (a unit timed alone after a cache flush runs slower than the same unit streaming
      its weights inside a model: 10-25% at decode), on one mid-size model;
    - the runtime's fixed working memory on top of weights, cache and activations."""
    import pyarrow.parquet as pq

    from star.presets import get_preset

    from .latency import peak_memory_bytes
    from .predictor import Profile

    profile_ = Profile(path)
    for key in ("overhead_ms_per_block", "cold_scale"):  # measured against the units alone
        profile_.machine.pop(key, None)
    gaps: dict[str, list[float]] = {"prefill": [], "decode": []}
    for name in ("lfm2-proxy", "attention-proxy", "conv-proxy"):
        config = get_preset(name)
        predicted = profile_.predict(config, CALIBRATION_PROMPT, CALIBRATION_CONTEXT)
        prefill, decode = measure_model(config, CALIBRATION_PROMPT, CALIBRATION_CONTEXT)
        gaps["prefill"].append((prefill - predicted["ttft_ms"]) / len(config.blocks))
        gaps["decode"].append((decode - predicted["decode_ms"]) / len(config.blocks))
    overhead = {phase: max(0.0, float(statistics.median(values))) for phase, values in gaps.items()}
    profile_.machine["overhead_ms_per_block"] = overhead
    cold = cold_calibration_model()
    predicted = profile_.predict(cold, CALIBRATION_PROMPT, CALIBRATION_CONTEXT)
    prefill, decode = measure_model(cold, CALIBRATION_PROMPT, CALIBRATION_CONTEXT, reps=3)
    cold_scale = {"prefill": prefill / predicted["ttft_ms"], "decode": decode / predicted["decode_ms"]}
    runtime = []
    for name in ("lfm2-proxy", "attention-proxy"):
        config = get_preset(name)
        measured = measure_peak_memory(config, CALIBRATION_CONTEXT)
        runtime.append(measured - peak_memory_bytes(config, CALIBRATION_CONTEXT, profile_.weight_bytes))
    table = pq.read_table(path)
    machine = json.loads(table.schema.metadata[b"star.profile"])
    calibration = {"overhead_ms_per_block": overhead, "cold_scale": cold_scale,
                   "runtime_bytes": max(0.0, float(statistics.median(runtime)))}
    machine.update(calibration)
    tmp = path + ".tmp"
    pq.write_table(table.replace_schema_metadata({"star.profile": json.dumps(machine)}), tmp)
    import os

    os.replace(tmp, path)
    return calibration
