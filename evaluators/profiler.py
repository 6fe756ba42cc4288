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

from .features import Case, block_kinds, features

PROFILE_FORMAT = 1
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


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


# The calibration models' proxy shape (width 128, heads of 32), fixed here rather than taken from the
# quality proxies' defaults (star.scaling), so that a profile measures the same models as before.
LATENCY_PROXY = {"hidden": 128, "head_dim": 32}


def unit_specs(width: int) -> Iterator[tuple[str, Any]]:
    heads = max(1, width // 64)
    yield "mixer:short_conv", ShortConvMixer(kernel=3)
    for kv in sorted({min(2, heads), min(8, heads)}):
        yield "mixer:attention", AttentionMixer(num_heads=heads, num_kv_heads=kv, head_dim=64, qk_norm=True)
    if width >= 1024:  # Qwen3's shape: heads of 128, twice the model's width in queries
        yield "mixer:attention", AttentionMixer(num_heads=heads, num_kv_heads=8, head_dim=128, qk_norm=True)
    if width <= 256:  # the calibration proxies' shape: heads of 32 (LATENCY_PROXY), one or two KV heads
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


def cache_sizes() -> dict[int, int]:
    """Bytes of the CPU caches by level (the largest at each level), as Linux reports them."""
    from pathlib import Path

    sizes: dict[int, int] = {}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
            size = int(text[:-1]) * {"K": 2**10, "M": 2**20}[text[-1]] if text[-1] in "KM" else int(text)
        except (OSError, ValueError, KeyError):
            continue
        sizes[level] = max(size, sizes.get(level, 0))
    return sizes


def llc_bytes() -> int:
    """The last-level cache (32 MiB if unknown)."""
    return max(cache_sizes().values(), default=32 * 2**20)


def l2_bytes() -> int:
    """The per-core L2 cache (1 MiB if unknown)."""
    return cache_sizes().get(2, 2**20)


MIN_REPS, SLOW_CASE_MS = 5, 2000.0  # a case whose calls took this long stops after MIN_REPS of them


@torch.inference_mode()
def measure(case: Case, dtype: torch.dtype, reps: int, warmup: int, cold: bool = False) -> tuple[float, float]:
    """(median ms, p95 ms) of one call, after evicting the core's L2 cache (`cold`: the last-level
    cache too) by reading a buffer twice its size; the call's input is made after the flush.

    Inside a model a unit never finds its weights in L2: the other blocks ran in between.  A proxy's
    weights (about 16 MB) do stay in the last-level cache; a model larger than that cache runs every
    block with cold weights, and decode is memory-bound, so a unit timed with hot weights would look
    faster than it is inside a full-size model.  A profile therefore has both states, and the
    predictor picks by the model's size.  Timed without the L2 flush, proxies with SwiGLUs of 576
    and 640 (weights under 1 MiB per unit, in L2 when timed alone) decoded 10-15% slower than
    predicted.  A slow case (seconds per call: a 2048-wide prefill of 1,024 tokens, a head of 65,536
    words) stops after `MIN_REPS` timed calls once they add up to `SLOW_CASE_MS`."""
    torch.manual_seed(0)
    fn, new_state = _module(case, dtype)
    flush = torch.ones(2 * (llc_bytes() if cold else l2_bytes()) // 4)  # read, not written: no dirty lines
    d = case.width
    ids = case.unit == "embedding"

    def inputs(tokens: int) -> torch.Tensor:
        if ids:
            return torch.randint(0, case.spec, (1, tokens))
        return torch.randn(1, tokens, d, dtype=dtype)

    times: list[float] = []
    decode_state = new_state(case.tokens) if case.phase == "decode" else None
    for i in range(warmup + reps):
        if len(times) >= MIN_REPS and sum(times) > SLOW_CASE_MS:  # a slow case: its median is settled
            break
        # Prefill starts from an empty cache every call; decode keeps stepping one state (it grows by one
        # token per call, negligible against the context).
        state = new_state(0) if case.phase == "prefill" else decode_state
        float(flush.sum())
        x = inputs(case.tokens if case.phase == "prefill" else 1)
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
    calibrate(out, quick=quick)
    return len(rows)


CALIBRATION_PROMPT, CALIBRATION_CONTEXT = 256, 1024
MIN_TIMED_S = 0.3  # a whole-model median covers at least this much time: a proxy decodes in ~6 ms


@torch.inference_mode()
def _timings_here(config: ArchConfig, prompt: int, context: int, reps: int) -> tuple[float, float]:
    """`measure_model`'s measurement, in the calling process."""
    from star.model import StarLM

    tune_allocator()
    torch.manual_seed(0)
    model = StarLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, prompt))
    prefill: list[float] = []
    while len(prefill) <= reps or sum(prefill[1:]) < MIN_TIMED_S:
        state = model.init_state(1)
        start = time.perf_counter()
        model(ids, state)
        prefill.append(time.perf_counter() - start)
    state = model.init_state(1)
    model(torch.randint(0, config.vocab_size, (1, context)), state)
    token = torch.randint(0, config.vocab_size, (1,))
    decode: list[float] = []
    while len(decode) <= reps or sum(decode[1:]) < MIN_TIMED_S:  # the cache grows by one per step
        start = time.perf_counter()
        model.step(token, state)
        decode.append(time.perf_counter() - start)
    return statistics.median(prefill[1:]) * 1e3, statistics.median(decode[1:]) * 1e3


def _serve_forks() -> None:
    """The fork server's loop: for each request on stdin (one JSON line: function, model, threads,
    arguments), fork a child that runs it, and print the child's result as one JSON line.

    A child starts from a process that has imported torch and run nothing: what a fresh interpreter
    gives, without paying 1.7 s of every 2.3 s proxy measurement for importing torch again."""
    import os
    import sys

    for line in sys.stdin:
        request = json.loads(line)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: measure, report through the pipe, exit without cleanup
            os.close(read)
            os.dup2(2, 1)  # stray prints must not reach the protocol on stdout
            try:
                torch.set_num_threads(request["threads"])
                function = globals()[request["function"]]
                result = {"result": function(ArchConfig.from_json(request["model"]), *request["args"])}
            except BaseException as e:  # every failure goes back to the caller
                result = {"error": f"{type(e).__name__}: {e}"}
            os.write(write, json.dumps(result).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            reply = pipe.read()
        os.waitpid(pid, 0)
        sys.stdout.write((reply.decode() or json.dumps({"error": "the measuring process died"})) + "\n")
        sys.stdout.flush()


_FORK_SERVER: Any = None  # the running fork server (subprocess.Popen), started on first use


def _in_fresh_process(function: Callable[..., Any], config: ArchConfig, threads: int | None, *args: int) -> Any:
    """Run `function(config, *args)` of this module in a new process (a child of the fork server,
    `_serve_forks`); return its result.

    End-to-end measurements run there because a process's history changes them: after a profile or
    a 1B-parameter model, the same proxy prefilled up to 1.5x slower in the same process (a large
    retained heap), and a process that freed a model hides that memory from a peak-RSS reading."""
    import subprocess
    import sys

    global _FORK_SERVER
    if _FORK_SERVER is None or _FORK_SERVER.poll() is not None:
        code = "from star.evaluators.profiler import _serve_forks; _serve_forks()"
        _FORK_SERVER = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
    request = {"function": function.__name__, "model": config.to_json(),
               "threads": threads or torch.get_num_threads(), "args": [int(a) for a in args]}
    _FORK_SERVER.stdin.write(json.dumps(request) + "\n")
    _FORK_SERVER.stdin.flush()
    reply = json.loads(_FORK_SERVER.stdout.readline() or '{"error": "the measurement server exited"}')
    if "error" in reply:
        raise StarError(f"measuring {config.name} failed: {reply['error']}")
    return reply["result"]


def measure_model(config: ArchConfig, prompt: int, context: int, reps: int = 7,
                  threads: int | None = None) -> tuple[float, float]:
    """(prefill ms, decode ms per token) of our whole model, end to end, in a fresh process: medians
    of `reps` calls after a warm-up, with the same allocator settings as the profile."""
    prefill, decode = _in_fresh_process(_timings_here, config, threads, prompt, context, reps)
    return prefill, decode


def measure_in_passes(configs: list[ArchConfig], prompt: int, context: int, passes: int = 3, most: int = 6,
                      spread: float = 0.06, reps: int = 7, threads: int | None = None
                      ) -> dict[str, list[tuple[float, float]]]:
    """`measure_model` for each of `configs`, in `passes` separate passes over all of them, then in
    further passes over those whose measurements still spread by more than `spread` (slowest over
    fastest, prefill or decode), up to `most` measurements each; {name: [(prefill, decode), ...]}.
    Callers take the median.

    A proxy's call lasts milliseconds, so one burst of interference on a shared machine moves every
    repetition of a process at once, and one process in twenty runs a proxy 10-60% slow.  Passes
    spread the processes of one model over minutes.  In a noisy hour the three passes of a proxy
    spread by 10-20% and a median of three was still off; more passes where they disagree cost
    little in a quiet hour and settle the median in a noisy one."""
    timings: dict[str, list[tuple[float, float]]] = {config.name: [] for config in configs}

    def unsettled(config: ArchConfig) -> bool:
        runs = timings[config.name]
        return len(runs) < passes or (len(runs) < most and any(
            max(r[i] for r in runs) > (1 + spread) * min(r[i] for r in runs) for i in (0, 1)))

    while todo := [config for config in configs if unsettled(config)]:
        for config in todo:
            timings[config.name].append(measure_model(config, prompt, context, reps, threads))
    return timings


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
    return _in_fresh_process(_peak_memory_here, config, threads, context)


def cold_calibration_models() -> list[ArchConfig]:
    """Whole models too large for a last-level cache yet quick to run: a proxy-width model with wide
    SwiGLUs (128 wide, 13 M parameters) and widths 512, 1024 and 2048 (40 M, 115 M and 273 M
    parameters), short convolutions and GQA alternating.  The 128-wide one is there because a cold
    unit of a proxy's size waits on memory far more than a whole model does: scaled like the
    512-wide model, 128-wide models of 30-50 MB were predicted 45-75% too slow."""
    from star.presets import hybrid

    shapes = ((128, 4, 2, 2048, 16, 512), (512, 8, 4, 2304, 8, 8192), (1024, 16, 8, 4608, 6, 8192),
              (2048, 32, 8, 8192, 4, 8192))
    return [hybrid(f"calibration-cold-{width}", width, heads, kv, ffn, vocab,
                   ["short_conv", "attention"] * (blocks // 2), max_positions=4096)
            for width, heads, kv, ffn, blocks, vocab in shapes]


def cold_scales(profile_: Any, processes: int = 3) -> dict[str, dict[str, float]]:
    """Per phase and model width, measured whole-model time over the sum of cold unit timings.

    A unit timed alone right after a cache flush waits on memory that a whole model streams with the
    prefetchers already running, and how much that matters depends on the unit's size: one scale
    from a 1024-wide model left 512-wide models 12% over their measured decode.  Each model is timed
    in three fresh processes (a memory-bound decode moved by up to 13% from one process to the next)
    and the median taken.  Only models the predictor treats as cold on this machine count."""
    scales: dict[str, dict[str, float]] = {"prefill": {}, "decode": {}}
    for config in cold_calibration_models():
        if profile_.cache_state(config, CALIBRATION_CONTEXT) != "cold":
            continue
        predicted = profile_.predict(config, CALIBRATION_PROMPT, CALIBRATION_CONTEXT)
        timings = [measure_model(config, CALIBRATION_PROMPT, CALIBRATION_CONTEXT, reps=3) for _ in range(processes)]
        width = str(config.hidden_size)
        scales["prefill"][width] = statistics.median(t[0] for t in timings) / predicted["ttft_ms"]
        scales["decode"][width] = statistics.median(t[1] for t in timings) / predicted["decode_ms"]
    return scales


def calibration_models(per_space: int = 16) -> list[ArchConfig]:
    """Random genomes of both search spaces at proxy scale, from a fixed stream of their own: the
    models whose gaps to their unit sums calibrate the fixed costs (`block_overheads`).

    Random rather than built to separate the kinds: a model that repeats one kind keeps one code
    path hot and runs cheaper per block than the mixed models a search predicts; with eight such
    models in the calibration, decode predictions of random proxies scattered 4.6% (sd) against
    1.7-1.9% with random ones alone."""
    import random

    from star.scaling import to_proxy
    from star.search_spaces import get_space

    rng = random.Random("star-profile-calibration")
    return [to_proxy(space.decode(space.sample(rng)), **LATENCY_PROXY)
            for space in (get_space("lfm2"), get_space("star")) for _ in range(per_space)]


def block_overheads(profile_: Any, per_space: int = 16, passes: int = 3, most: int = 6
                    ) -> tuple[dict[str, dict[str, float]], float, list[dict[str, Any]]]:
    """The fixed ms a block adds inside a whole model beyond its units' timings, and the extra ms per
    weight byte of a decode step, from the gaps between measured and unit-summed times of
    `calibration_models`, each measured in at least `passes` separate passes and up to `most` where
    they disagree (`measure_in_passes`; median taken).

    Decode: one constant per mixer kind and per FFN kind, plus one cost per weight byte, fitted
    together by least squares.  A proxy's decode step is mostly Python dispatch (the model's loop,
    residual adds, norms, state bookkeeping), which differs by kind: attention blocks cost more than
    their units, long convolutions less.  The per-byte term is memory: a unit timed alone finds its
    weights in the last-level cache, but a whole proxy (13-20 MB) does not fit the share of it a
    core gets (a chain of matrix-vector products here read 27 GB/s up to 8 MB of weights and
    6.7 GB/s from 16 MB on), so every weight byte costs extra; fitted, 0.04-0.11 ms per MB.
    Prefill: one constant per block, the median.  There the gap is mostly the unit fits' error on
    the calibration models' particular shapes, which per-kind constants learned and carried to
    other shapes (measured: 100% of the accuracy sample within 10% with one constant, 84-88% with
    per-kind ones)."""
    import numpy as np

    models = calibration_models(per_space)
    keys = sorted({key for config in models for block in config.blocks for key in block_kinds(block)})
    features_ = np.array([[sum(key in block_kinds(b) for b in config.blocks) for key in keys]
                          + [config.params() * profile_.weight_bytes / 1e6] for config in models], dtype=float)
    timings = measure_in_passes(models, CALIBRATION_PROMPT, CALIBRATION_CONTEXT, passes=passes, most=most)
    gaps: dict[str, list[float]] = {"prefill": [], "decode": []}
    runs = []
    for config in models:
        predicted = profile_.predict(config, CALIBRATION_PROMPT, CALIBRATION_CONTEXT)
        prefill = statistics.median(t[0] for t in timings[config.name])
        decode = statistics.median(t[1] for t in timings[config.name])
        gaps["prefill"].append(prefill - predicted["ttft_ms"])
        gaps["decode"].append(decode - predicted["decode_ms"])
        runs.append({"model": config.to_json(), "prefill_ms": prefill, "decode_ms": decode,
                     "units_prefill_ms": predicted["ttft_ms"], "units_decode_ms": predicted["decode_ms"],
                     "rounds": [list(t) for t in timings[config.name]]})
    # Every block has exactly one mixer and one FFN, so only mixer-plus-FFN sums are determined;
    # lstsq's minimum-norm solution picks one split, and predictions use only the sums.
    solution, *_ = np.linalg.lstsq(features_, np.array(gaps["decode"]), rcond=None)
    per_block = [gap / len(config.blocks) for gap, config in zip(gaps["prefill"], models, strict=True)]
    overheads = {"decode": {key: float(v) for key, v in zip(keys, solution[:-1], strict=True)},
                 "prefill": {"block": float(statistics.median(per_block))}}
    return overheads, float(solution[-1]) / 1e6, runs


def calibrate(path: str, quick: bool = False) -> dict[str, Any]:
    """Measure what unit timings miss on whole models and store it in the profile's metadata:

    - the fixed time each kind of block adds and the decode cost per weight byte (`block_overheads`),
      on 32 random proxies, three to six passes each;
    - for models larger than the last-level cache, the ratio of whole-model time to the sum of cold
      unit timings, per width (`cold_scales`), on four models of 13-273 M parameters;
    - the runtime's fixed working memory on top of weights, cache and activations.

    `quick` (with `star profile --quick`) calibrates on 16 proxies in one pass and times each cold
    model in one process instead of three."""
    import pyarrow.parquet as pq

    from star.presets import get_preset
    from star.scaling import to_proxy

    from .latency import peak_memory_bytes
    from .predictor import Profile

    profile_ = Profile(path)
    # measured against the units alone
    for key in ("overhead_ms_per_block", "block_overhead_ms", "warm_decode_ms_per_weight_byte", "cold_scale"):
        profile_.machine.pop(key, None)
    per_space, passes, most = (8, 1, 1) if quick else (16, 3, 6)
    overhead, per_byte, runs = block_overheads(profile_, per_space, passes, most)
    profile_.machine["block_overhead_ms"] = overhead
    profile_.machine["warm_decode_ms_per_weight_byte"] = per_byte
    cold_scale = cold_scales(profile_, processes=1 if quick else 3)
    runtime = []
    for name in ("lfm2-proxy", "attention-proxy"):
        config = to_proxy(get_preset(name), **LATENCY_PROXY)  # the calibration shape, as before
        measured = measure_peak_memory(config, CALIBRATION_CONTEXT)
        runtime.append(measured - peak_memory_bytes(config, CALIBRATION_CONTEXT, profile_.weight_bytes))
    table = pq.read_table(path)
    machine = json.loads(table.schema.metadata[b"star.profile"])
    calibration = {"block_overhead_ms": overhead, "warm_decode_ms_per_weight_byte": per_byte,
                   "cold_scale": cold_scale,
                   "runtime_bytes": max(0.0, float(statistics.median(runtime)))}
    machine.pop("overhead_ms_per_block", None)  # the single constant of older profiles
    machine.update(calibration, calibration_runs=runs)  # the raw measurements, for inspection
    tmp = path + ".tmp"
    pq.write_table(table.replace_schema_metadata({"star.profile": json.dumps(machine)}), tmp)
    import os

    os.replace(tmp, path)
    return calibration
