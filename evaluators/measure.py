"""Measuring on this machine, and nothing else: each operator unit's time on a grid (`measure`), and
whole models' prefill and decode times and peak memory (`measure_model`, `measure_in_passes`,
`measure_peak_memory`), each in a fresh process.  The fits live elsewhere: evaluators/calibration.py
(fixed costs on whole models) and evaluators/predictor.py (per-unit lines); `star profile`
(evaluators/profiler.py) runs the grid and then the calibration.

A unit is what the model runs per block: a token mixer with its pre-norm and residual add
("mixer:short_conv", "mixer:attention", ...; each mixer kind's `profiled` settings, star.arch), a
channel mixer with its pre-norm and residual add ("ffn:swiglu", "ffn:mlp"), and once per model the
embedding lookup and the head (final norm + LM head).  Each unit is timed on a grid of widths, sizes
and lengths:

- prefill: batch 1, a prompt of T tokens, writing the unit's cache;
- decode: one token with a cache already holding T tokens.

Every figure is the median of `reps` timed calls after warm-up calls; the p95 of the calls is kept too.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from star.arch import (
    MIXERS,
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
from star.machine import cache_sizes, tune_allocator

from .features import Case

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Grid:
    widths: tuple[int, ...]
    prefill: tuple[int, ...]
    decode: tuple[int, ...]
    reps: int
    warmup: int
    units: tuple[str, ...] = ()  # only these units ("mixer:attention", "head", ...); all when empty (tests)


FULL = Grid(widths=(128, 256, 512, 1024, 2048), prefill=(64, 256, 1024), decode=(128, 1024, 4096, 16384), reps=9,
            warmup=2)
# The quick grid: the full grid's widths 128, 512 and 1024, at the lengths predictions are asked at
# most (star predict's prompt of 1024 and context of 4096, the calibration's 256 and 1024), so that
# those are interpolated, not extrapolated.  With widths (128, 1024), prefill (64, 512) and decode
# (128, 2048), an ExecuTorch quick profile predicted 512- and 768-wide STAR models' 4K decode up to
# 49% slow and LFM2 proxies' (three quarters of it attention) 8-12% slow (2026-12-07, docs/latency.md).
QUICK = Grid(widths=(128, 512, 1024), prefill=(64, 256, 1024), decode=(128, 1024, 4096), reps=5, warmup=1)



def unit_specs(width: int) -> Iterator[tuple[str, Any]]:
    """Every unit timed at `width`: each mixer kind's own choice of settings (its `profiled`), then
    SwiGLUs of 3 and 6 times the width and an MLP of 4 times."""
    for mixer in MIXERS.values():
        for spec in mixer.profiled(width):
            yield f"mixer:{mixer.kind}", spec
    for ratio in (3, 6):
        yield "ffn:swiglu", SwiGLUFFN(hidden=ratio * width)
    yield "ffn:mlp", MLPFFN(hidden=4 * width)


def cases(grid: Grid) -> list[Case]:
    """Every case of `grid` (its `units` only, where it names some)."""
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
    return [case for case in out if not grid.units or case.unit in grid.units]


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
    """The last-level cache (32 MiB if unknown)."""
    return max(cache_sizes().values(), default=32 * 2**20)


def l2_bytes() -> int:
    """The per-core L2 cache (1 MiB if unknown)."""
    return cache_sizes().get(2, 2**20)


MIN_REPS, SLOW_CASE_MS = 5, 2000.0  # a case whose calls took this long stops after MIN_REPS of them


# A unit's figure: the 10th percentile of its calls over at least 0.1 s of wall time (L2 flushes
# included: a 0.1-0.4 ms decode step gets about 300 calls), and a profile keeps the fastest of SWEEPS
# sweeps of its grid.  The median of 5 or 9 calls covered about a millisecond of the host's life:
# measured on a busy Zen 5 (benchmarks/unit_timing.py, 2026-12-07; 76 units of widths 128 and 512, 6
# processes), the fastest of processes 1-3 against the fastest of 4-6 differed by a median 13.0%
# (90th percentile 51.6%) under the median of 5 calls, 5.7% (24.8%) under this rule; decode units
# alone 12.9% (59.1%) against 4.2% (22.0%).  Timed against a
# reference unit as well (bursts alternating, as whole-model decode is against the canary), decode
# units repeated better still (3 against 3 processes: 3.0% (12.6%) against 4.2% (22.0%)), prefill units
# no better (10.5% against 10.2%), at twice the time per case: not adopted (yet).
UNIT_TIMED_S, UNIT_QUANTILE = 0.1, 0.1
# A profile times its whole grid SWEEPS times over, and each case keeps its fastest sweep's figures
# (profiler.profile).  The calls of one case follow each other within a fraction of a second, so a
# spell of interference on a shared machine (seconds to a minute long, slowing a process by up to
# 1.9x: `measure_in_passes`) slows all of them, and no rule inside one sweep can tell it from the
# unit's own speed; the next sweep comes about a minute (quick) to several minutes (full) later.  In
# the measurement above, the fastest of 2 processes against the fastest of 2 others differed by a
# median 4.5-15.2% under this rule (quiet pairs to busy ones), 3 against 3 by 5.7%: three sweeps
# since 2026-12-07, two before.
SWEEPS = 3


def unit_timed_s() -> float:
    """UNIT_TIMED_S, or STAR_UNIT_TIMED_S where set (the test suite sets a shorter window, as it does
    for whole models: `prefill_timed_s`)."""
    return _seconds("STAR_UNIT_TIMED_S", UNIT_TIMED_S)


@torch.inference_mode()
def measure(case: Case, dtype: torch.dtype, reps: int, warmup: int, cold: bool = False) -> tuple[float, float]:
    """(UNIT_QUANTILE ms, p95 ms) of one call of the unit (`unit_call`): at least `reps` timed calls
    and `unit_timed_s` of wall time after `warmup` untimed ones (`time_calls`)."""
    return time_calls(unit_call(case, dtype, cold), reps, warmup, unit_timed_s(), UNIT_QUANTILE)


def unit_call(case: Case, dtype: torch.dtype, cold: bool = False) -> Callable[[], float]:
    """A function making one call of `case`'s unit and returning the seconds it took, after evicting
    the core's L2 cache (`cold`: the last-level cache too) by reading a buffer twice its size; the
    call's input is made after the flush.  Call it under torch.inference_mode().

    Inside a model a unit never finds its weights in L2: the other blocks ran in between.  A proxy's
    weights (about 16 MB) do stay in the last-level cache; a model larger than that cache runs every
    block with cold weights, and decode is memory-bound, so a unit timed with hot weights would look
    faster than it is inside a full-size model.  A profile therefore has both states, and the
    predictor picks by the model's size.  Timed without the L2 flush, proxies with SwiGLUs of 576
    and 640 (weights under 1 MiB per unit, in L2 when timed alone) decoded 10-15% slower than
    predicted."""
    torch.manual_seed(0)
    fn, new_state = _module(case, dtype)
    flush = torch.ones(2 * (llc_bytes() if cold else l2_bytes()) // 4)  # read, not written: no dirty lines
    d = case.width
    ids = case.unit == "embedding"

    def inputs(tokens: int) -> torch.Tensor:
        if ids:
            return torch.randint(0, case.spec, (1, tokens))
        return torch.randn(1, tokens, d, dtype=dtype)

    decode_state = new_state(case.tokens) if case.phase == "decode" else None

    def once() -> float:
        # Prefill starts from an empty cache every call; decode steps from the same context every call: a
        # shallow copy of the state, as every mixer replaces its cache's entries rather than writing them.
        if case.phase == "prefill":
            state = new_state(0)
        elif decode_state is None:
            state = None
        else:
            cache = decode_state["cache"]
            state = {"position": decode_state["position"], "cache": None if cache is None else dict(cache)}
        float(flush.sum())
        x = inputs(case.tokens if case.phase == "prefill" else 1)
        start = time.perf_counter()
        fn(x, state)
        return time.perf_counter() - start

    return once


def time_calls(once: Callable[[], float], reps: int, warmup: int, least_s: float = 0.0,
               quantile: float = 0.5) -> tuple[float, float]:
    """(the `quantile` ms, p95 ms) of calls of `once` (which returns the seconds of the call it timed)
    after `warmup` untimed ones: at least `reps` of them, and at least `least_s` of wall time from the
    first timed one; a slow case stops after MIN_REPS timed calls over SLOW_CASE_MS.  Eager units
    (`measure`: the 10th percentile over 0.1 s) and ExecuTorch units (measure_executorch.measure_unit:
    the median of `reps` calls)."""
    times: list[float] = []
    start = None
    for i in itertools.count():
        if len(times) >= MIN_REPS and sum(times) > SLOW_CASE_MS:  # a slow case: its figure is settled
            break
        if len(times) >= reps and start is not None and time.perf_counter() - start >= least_s:
            break
        if i == warmup:
            start = time.perf_counter()
        elapsed = once()
        if i >= warmup:
            times.append(elapsed * 1e3)
    times.sort()
    return quantile_of(times, quantile), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def quantile_ms(once: Callable[[], float], reps: int, least_s: float | None = None, quantile: float = 0.5) -> float:
    """The `quantile` (default the median) of calls of `once` (returning the seconds it timed), in ms,
    after one warm-up call: at least `reps` of them and `least_s` (MIN_TIMED_S) in all.  Whole-model
    timings, eager (`_timings_here`) and ExecuTorch (measure_executorch._timings_here), and the
    canary's (`_prefill_here`)."""
    least_s = MIN_TIMED_S if least_s is None else least_s
    times: list[float] = []
    while len(times) <= reps or sum(times[1:]) < least_s:
        times.append(once())
    return quantile_of(times[1:], quantile) * 1e3


def quantile_of(values: list[float], quantile: float) -> float:
    """The `quantile` of `values`, interpolated between the two around it (0.5: statistics.median)."""
    ordered = sorted(values)
    position = quantile * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


MIN_TIMED_S = 0.3  # a whole-model median covers at least this much time (ExecuTorch's decode; the canary's prefill)
# A whole model's prefill: the 10th percentile of its calls over at least 2 s.  On a busy host the
# slow stretches last from a fraction of a second to minutes and only slow a process down; 2 s of a
# proxy's 30 ms prefills almost always hold a quiet fifth of a second, which the low percentile finds
# where a median of 0.3 s took whatever stretch it fell in.  Measured on 6 proxies x 6 fresh processes
# (benchmarks/timing_rules.py, 2026-12-07): the fastest of 3 processes against the fastest of 3 others
# differed by a median 19.7% (worst 33.0%) under the median of 0.3 s, 3.9% (worst 9.1%) under this.
# Decode: a longer window and a low percentile gained little there (8.1% to 7.9%, worst 21.7% to
# 13.6%), as the spells that slow decode last longer than a window: decode is timed against the canary
# instead (DECODE_TIMED_S).
PREFILL_TIMED_S, PREFILL_QUANTILE = 2.0, 0.1


def prefill_timed_s() -> float:
    """PREFILL_TIMED_S, or STAR_PREFILL_TIMED_S where set: the test suite sets 0.3 s (the window
    before), as its profiles check what is computed from measurements, not how repeatable they are on
    a busy host; a profile records the window it was measured with (`timing_record`)."""
    return _seconds("STAR_PREFILL_TIMED_S", PREFILL_TIMED_S)


def decode_timed_s() -> float:
    """DECODE_TIMED_S, or STAR_DECODE_TIMED_S where set (the test suite sets 0.3 s, as for prefill)."""
    return _seconds("STAR_DECODE_TIMED_S", DECODE_TIMED_S)


def _seconds(variable: str, default: float) -> float:
    value = os.environ.get(variable, "")
    try:
        return float(value) if value else default
    except ValueError:
        raise StarError(f"{variable} must be a number of seconds, got {value!r}") from None


def timing_record(runtime: str = "eager") -> dict[str, str]:
    """How unit times (`measure`, a profile's grid) and whole-model times (`measure_model`) were reduced to
    figures, as profiles and samples record it."""
    alone = f"0.5 quantile over {MIN_TIMED_S:g} s"
    decode = (f"{DECODE_QUANTILE:g} quantile over {decode_timed_s():g} s, against the canary's, for models in the "
              f"last-level cache; others {alone}" if runtime == "eager" else alone)
    units = (f"{UNIT_QUANTILE:g} quantile over {unit_timed_s():g} s, fastest of {SWEEPS} sweeps" if runtime == "eager"
             else f"median of the grid's calls, fastest of {SWEEPS} sweeps")
    return {"prefill_timing": f"{PREFILL_QUANTILE:g} quantile over {prefill_timed_s():g} s", "decode_timing": decode,
            "unit_timing": units}


def _model_and_prefill_ms(config: ArchConfig, prompt: int, reps: int, least_s: float | None = None,
                          quantile: float = 0.5) -> tuple[Any, float]:
    """Our model, built as every whole-model measurement builds it, and the `quantile` of its
    prefills of `prompt` tokens over at least `least_s` (`quantile_ms`)."""
    from star.model import StarLM

    tune_allocator()
    torch.manual_seed(0)
    model = StarLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, prompt))

    def prefill() -> float:
        state = model.init_state(1)
        start = time.perf_counter()
        model(ids, state)
        return time.perf_counter() - start

    return model, quantile_ms(prefill, reps, least_s, quantile)


# Decode is timed against the canary (`canary_model`) in the same process: bursts of the model's steps and
# of the canary's alternate, each burst from a copy of one cached context, for at least DECODE_TIMED_S,
# and the process reports the DECODE_QUANTILE of each one's steps.  A proxy's step (3-5 ms, mostly
# Python dispatch) follows the host: one proxy's median over 0.3 s windows went from 3.3 to 7.4 ms
# within a minute, and in 10 s stretches even its fastest step was 4.2-4.9 ms against 3.6 quiet, so no
# rule inside one process finds its quiet speed in a busy spell.  The canary's steps slow with it: over
# 6 proxies x 6 processes (2026-12-07, Zen 5, design sample), the fastest of processes 1-3 against the
# fastest of 4-6 differed by a median 5.1% (worst 16.2%) under the median of 0.3 s; the model's 10th
# percentile over the canary's, the median of 3 processes against the median of 3 others, by 1.9%
# (worst 2.9%).  `speed_of` turns that ratio into ms with the canary's quiet decode speed.
DECODE_BURST_S, DECODE_TIMED_S, DECODE_QUANTILE = 0.02, 1.0, 0.1


def _decode_bursts(model: Any, vocab: int, context: int) -> Callable[[], list[float]]:
    """A function timing one burst of `model`'s decode steps (at least DECODE_BURST_S, at least one
    step), each burst from a fresh copy of one state holding `context` tokens, so that every step
    decodes at the same context however long the measurement runs, and after one untimed step, which
    brings the weights back into the cache after the other model's burst: without it the canary's
    10th percentile was 6% slower after a 40 M-parameter model's bursts than after its own; with it,
    within 1% after a proxy's, a 14 M and a 40 M model's (2026-12-07, Zen 5)."""
    state = model.init_state(1)
    model(torch.randint(0, vocab, (1, context)), state)
    token = torch.randint(0, vocab, (1,))

    def burst() -> list[float]:
        stepping = copy.deepcopy(state)
        model.step(token, stepping)
        times: list[float] = []
        while sum(times) < DECODE_BURST_S:
            start = time.perf_counter()
            model.step(token, stepping)
            times.append(time.perf_counter() - start)
        return times

    return burst


def _decode_against_canary(model: Any, config: ArchConfig, context: int, reps: int) -> tuple[float, float]:
    """(the model's, the canary's) DECODE_QUANTILE step ms, their bursts alternating for at least
    DECODE_TIMED_S (`decode_timed_s`) and `reps` of the model's timed steps, after one untimed burst each."""
    from star.model import StarLM

    canary = canary_model()
    torch.manual_seed(0)
    bursts = (_decode_bursts(model, config.vocab_size, context),
              _decode_bursts(StarLM(canary).eval(), canary.vocab_size, context))
    times: tuple[list[float], list[float]] = ([], [])
    for burst in bursts:
        burst()
    start = time.perf_counter()
    while len(times[0]) < reps or time.perf_counter() - start < decode_timed_s():
        for burst, kept in zip(bursts, times, strict=True):
            kept.extend(burst())
    return quantile_of(times[0], DECODE_QUANTILE) * 1e3, quantile_of(times[1], DECODE_QUANTILE) * 1e3


def fits_cache(config: ArchConfig) -> bool:
    """Whether `config`'s fp32 weights fit the last-level cache: a model whose decode is dispatch, not
    memory, and follows the host as the canary does (`_timings_here`)."""
    return 4 * config.params() <= llc_bytes()


@torch.inference_mode()
def _timings_here(config: ArchConfig, prompt: int, context: int, reps: int) -> tuple[float, ...]:
    """`measure_model`'s measurement, in the calling process: (prefill ms, decode ms[, the canary's
    decode ms timed alongside]).  Decode is timed against the canary only for a model that fits the
    last-level cache (`fits_cache`); a larger one is memory-bound, and its slow spells are not the
    canary's: on held-out stream 35 (2026-12-07) the median ratio of one half of a full-size model's
    passes against the other's differed by a median 11.7% (worst 35.1%), its fastest decode by 2.8%
    (6.3%).  Such a model's decode is the median of its steps over 0.3 s (MIN_TIMED_S), the cache
    growing by one per step, and `speed_of` takes its fastest pass."""
    model, prefill_ms = _model_and_prefill_ms(config, prompt, reps, prefill_timed_s(), PREFILL_QUANTILE)
    if fits_cache(config):
        return (prefill_ms, *_decode_against_canary(model, config, context, reps))
    state = model.init_state(1)
    model(torch.randint(0, config.vocab_size, (1, context)), state)
    token = torch.randint(0, config.vocab_size, (1,))

    def decode() -> float:
        start = time.perf_counter()
        model.step(token, state)
        return time.perf_counter() - start

    return prefill_ms, quantile_ms(decode, reps)


def _serve_forks() -> None:
    """The fork server's loop: for each request on stdin (one JSON line: module, function, model,
    threads, arguments), fork a child that runs it, and print the child's result as one JSON line.

    A child starts from a process that has imported torch and run nothing: what a fresh interpreter
    gives, without paying 1.7 s of every 2.3 s proxy measurement for importing torch again.  A
    module's `prepare_process` (ExecuTorch's runtime: evaluators/measure_executorch.py) runs here,
    once, for the same reason."""
    import importlib
    import os
    import sys

    prepared: set[str] = set()
    for line in sys.stdin:
        request = json.loads(line)
        module = importlib.import_module(request["module"])
        if request["module"] not in prepared and hasattr(module, "prepare_process"):
            module.prepare_process()
        prepared.add(request["module"])
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: measure, report through the pipe, exit without cleanup
            os.close(read)
            os.dup2(2, 1)  # stray prints must not reach the protocol on stdout
            try:
                torch.set_num_threads(request["threads"])
                function = getattr(module, request["function"])
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


def _in_fresh_process(function: Callable[..., Any] | str, config: ArchConfig, threads: int | None, *args: int) -> Any:
    """Run `function(config, *args)` in a new process (a child of the fork server, `_serve_forks`);
    return its result.  `function` is one of this module's, or named 'module:function' (the fork
    server imports the module: evaluators/measure_executorch.py imports this one).

    End-to-end measurements run there because a process's history changes them: after a profile or
    a 1B-parameter model, the same proxy prefilled up to 1.5x slower in the same process (a large
    retained heap), and a process that freed a model hides that memory from a peak-RSS reading."""
    import subprocess
    import sys

    global _FORK_SERVER
    if _FORK_SERVER is None or _FORK_SERVER.poll() is not None:
        code = "from star.evaluators.measure import _serve_forks; _serve_forks()"
        _FORK_SERVER = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
    module, name = function.split(":") if isinstance(function, str) else (function.__module__, function.__name__)
    request = {"module": module, "function": name, "model": config.to_json(),
               "threads": threads or torch.get_num_threads(), "args": [int(a) for a in args]}
    _FORK_SERVER.stdin.write(json.dumps(request) + "\n")
    _FORK_SERVER.stdin.flush()
    reply = json.loads(_FORK_SERVER.stdout.readline() or '{"error": "the measurement server exited"}')
    if "error" in reply:
        raise StarError(f"measuring {config.name} failed: {reply['error']}")
    return reply["result"]


RUNTIMES = ("eager", "executorch")  # eager PyTorch (our StarLM); ExecuTorch (evaluators/measure_executorch.py)


def measure_model(config: ArchConfig, prompt: int, context: int, reps: int = 7,
                  threads: int | None = None, runtime: str = "eager") -> tuple[float, ...]:
    """(prefill ms, decode ms per token[, the canary's decode ms]) of our whole model, end to end, in a
    fresh process, after a warm-up call, with the same allocator settings as the profile: prefill the
    10th percentile of at least `reps` calls over 2 s (PREFILL_QUANTILE, prefill_timed_s).  Eager
    decode of a model that fits the last-level cache: the 10th percentile of at least `reps` steps,
    timed in bursts alternating with the canary's over 1 s (DECODE_TIMED_S), and the canary's own;
    `speed_of` uses their ratio (a larger model: the median over 0.3 s, `_timings_here`).  In
    ExecuTorch (`runtime`) decode is the median of at least `reps` steps over 0.3 s (MIN_TIMED_S), with
    no canary, and the model's program must have been exported (measure_executorch.export_programs)."""
    timings = _timings_here if runtime == "eager" else "star.evaluators.measure_executorch:_timings_here"
    return tuple(_in_fresh_process(timings, config, threads, prompt, context, reps))


# A model is settled when the two fastest of its separate measurements are this close (relative):
# then its fastest is its own speed, not a busy spell's (measure_in_passes).
SETTLED_SPREAD = 0.06
# A measurement counts towards settling a model only if the canary, timed right before and right after
# it, prefilled within this much of its fastest: the host was not in a slow stretch (measure_in_passes).
CANARY_SLOW = 0.10
# The canary's prefill: 256 tokens, the median of at least 5 calls and 0.1 s (about 0.25 s a reading
# with the fork and the model's construction; its readings' spread on a quiet host about 2%).
CANARY_PROMPT, CANARY_REPS, CANARY_TIMED_S = 256, 5, 0.1
# A model with no quiet measurement among its first `most` is measured until it has one, up to this many
# times `most` (measure_in_passes).  In the ninth headline of issue 19 (2026-12-07, AVX2 Zen 4) the quick profile's
# 1024-wide cold-cache model ran 4 passes, all with the canary 30-88% slow (37.9-55.0 ms against 29.2);
# its fastest gave a prefill cold scale of 1.12 where the other profiles had 0.92-0.94, and every
# 1024-wide model of the sample was predicted 10-16% slow.
NEVER_QUIET_MOST = 2


def canary_model() -> ArchConfig:
    """The model timed between measurements to read the host's state: the LFM2 layout at the latency
    proxies' shape (width 128, vocabulary 512), prefilling 256 tokens in about 20 ms."""
    from star.presets import get_preset
    from star.scaling import LATENCY_PROXY, to_proxy

    return to_proxy(get_preset("lfm2-proxy"), **LATENCY_PROXY)


@torch.inference_mode()
def _prefill_here(config: ArchConfig, prompt: int, reps: int) -> float:
    """The canary's measurement, in the calling process: `_timings_here`'s prefill only, over a
    shorter time (CANARY_TIMED_S)."""
    return _model_and_prefill_ms(config, prompt, reps, CANARY_TIMED_S)[1]


def fastest_repeated(values: list[float], known: float | None = None) -> float | None:
    """The fastest of `values` that another repeats within SETTLED_SPREAD, or `known` where faster;
    None before two agree (and without `known`).

    A lone fast reading is not a state the host holds: in one full profile (2026-12-06, Zen 4) one
    canary reading was 21.8 ms and the 107 others 31.2-34.0 ms, while the calibration proxies' passes
    agreed within 2%; taken as the mark, it held every pass slow and the profile called all its
    models unsettled."""
    found = [value for value in (first_repeated(values), known) if value]
    return min(found) if found else None


def first_repeated(values: list[float], spread: float = SETTLED_SPREAD) -> float | None:
    """The smallest of `values` that another is within `spread` of (None if no two are)."""
    ordered = sorted(values)
    return next((a for a, b in itertools.pairwise(ordered) if b <= (1 + spread) * a), None)


def fastest_two_agree(values: list[float], spread: float = SETTLED_SPREAD) -> bool:
    """Whether the two fastest of one model's measurements (of one phase) are within `spread` of each
    other: false for a single measurement."""
    ordered = sorted(values)
    return len(ordered) >= 2 and ordered[1] <= (1 + spread) * ordered[0]


def quiet(run: tuple[float, ...] | list[float], canary_ms: float | None) -> bool:
    """Whether a measurement ((prefill ms, decode ms[, canary ms])) was made while the host was quiet:
    the canary timed around it (its third figure, where it has one) prefilled within CANARY_SLOW of
    `canary_ms`, the canary's fastest; true where either is unknown."""
    return len(run) < 3 or canary_ms is None or run[2] <= (1 + CANARY_SLOW) * canary_ms


def decode_ratios(runs: list[tuple[float, ...]] | list[list[float]]) -> list[float] | None:
    """Each measurement's decode over the canary's decode timed alongside it (its fourth figure), or
    None where any measurement lacks one (ExecuTorch's, and those made before 2026-12-07)."""
    if not runs or any(len(run) < 4 for run in runs):
        return None
    return [run[1] / run[3] for run in runs]


def settled(runs: list[tuple[float, ...]] | list[list[float]], phase: int, canary_ms: float | None = None,
            spread: float = SETTLED_SPREAD) -> bool:
    """Whether a model's measurements ((prefill ms, decode ms[, canary ms[, canary decode ms]]) each)
    have settled in `phase` (0 prefill, 1 decode).  Prefill, and decode without the canary's: the two
    fastest of those made while the host was quiet agree within `spread`.  Quiet: the canary timed
    around the measurement (its third figure, where it has one) prefilled within CANARY_SLOW of
    `canary_ms`, the canary's fastest.  Decode against the canary: two of its ratios to the canary agree
    within `spread`, whatever the host was doing (the ratio is what the canary is there to keep)."""
    ratios = decode_ratios(runs) if phase == 1 else None
    if ratios is not None:
        return first_repeated(ratios, spread) is not None
    return fastest_two_agree([r[phase] for r in runs if quiet(r, canary_ms)], spread)


@dataclass
class Passes:
    """What `measure_in_passes` measured: per model, each process's (prefill ms, decode ms, canary ms,
    canary decode ms), the third the slower of the canary's prefills in fresh processes right before
    and right after it (eager: all four with the canary; ExecuTorch: the first three; without the
    canary: the first two); and every canary prefill, in order."""
    runs: dict[str, list[tuple[float, ...]]]
    canary: list[float]

    def canary_fastest(self, known: float | None = None) -> float | None:
        """The canary's quiet prefill: the fastest of this call's prefills that another one repeats
        (`fastest_repeated`), or `known` (an earlier call's, a profile's) where faster."""
        return fastest_repeated(self.canary, known)

    def canary_decode(self, known: float | None = None) -> float | None:
        """The canary's quiet decode step: the fastest of its decode figures timed alongside this call's
        models that another repeats (`fastest_repeated`), or `known` where faster."""
        return fastest_repeated([run[3] for runs in self.runs.values() for run in runs if len(run) > 3], known)


def measure_in_passes(configs: list[ArchConfig], prompt: int, context: int, passes: int = 3, most: int = 6,
                      spread: float = SETTLED_SPREAD, reps: int = 7, threads: int | None = None, runtime: str = "eager",
                      canary: bool = True, canary_ms: float | None = None) -> Passes:
    """`measure_model` for each of `configs`, in `passes` separate passes over all of them, then in
    further passes over those not yet `settled` (prefill or decode), up to `most` measurements each.
    Callers take `speed_of` each model's runs.

    A proxy's call lasts milliseconds, and interference on a shared machine comes in spells: one
    proxy prefilled in 23.5 ms for 12 s in one process and, in another, went from 24 ms to 34-40 ms
    after 2 s and stayed there; four other processes of that proxy gave medians of 22.7 to 43.9 ms, the
    calls inside each agreeing.  Passes spread a model's processes over minutes, so that some fall
    outside such a spell; a model is settled when two of them agree on its fastest time.

    Two agreeing passes can both fall in one slow stretch: in the fourth headline of issue 19 (stream
    24, third run) the host ran about 1.5x slower for minutes with short quiet windows, and seven
    proxies settled on three passes 46-54% slow while the proxies measured before them had found the
    quiet windows.  So with `canary`, a fixed small model (`canary_model`, always in eager PyTorch: it
    reads the host, not the runtime) is timed before the first measurement and after each one, and
    only measurements whose canaries both prefilled within CANARY_SLOW of its quiet speed (this
    call's repeated fastest, or `canary_ms` from before: `Passes.canary_fastest`) count towards
    settling.  Each costs about 0.4 s more.  A model none of whose measurements was quiet by the
    `most`-th is measured further, until one is, up to NEVER_QUIET_MOST times `most`: its fastest so
    far is a busy spell's.  Eager decode of a model that fits the last-level cache is timed against
    the canary inside each measurement (`measure_model`) and settles on two agreeing ratios; without
    `canary`, runs keep prefill and decode only."""
    result = Passes({config.name: [] for config in configs}, [])
    timings, canaries = result.runs, result.canary
    probe = canary_model() if canary else None

    def host() -> float:
        canaries.append(_in_fresh_process(_prefill_here, probe, threads, CANARY_PROMPT, CANARY_REPS))
        return canaries[-1]

    def unsettled(config: ArchConfig) -> bool:
        runs = timings[config.name]
        if len(runs) < passes:
            return True
        mark = result.canary_fastest(canary_ms)
        if len(runs) >= (most if any(quiet(run, mark) for run in runs) else NEVER_QUIET_MOST * most):
            return False
        return not all(settled(runs, i, mark, spread) for i in (0, 1))

    before = host() if probe else 0.0
    while todo := [config for config in configs if unsettled(config)]:
        for config in todo:
            prefill, decode, *alongside = measure_model(config, prompt, context, reps, threads, runtime)
            measured: tuple[float, ...] = (prefill, decode)
            if probe:
                after = host()
                measured = (prefill, decode, max(before, after), *alongside)
                before = after
            timings[config.name].append(measured)
    return result


def speed_of(runs: list[tuple[float, ...]] | list[list[float]], canary_decode_ms: float | None = None
             ) -> tuple[float, float]:
    """(prefill ms, decode ms) of a model measured in several processes (`measure_in_passes`).

    Prefill: the fastest process.  Interference on a shared machine only ever slows a process (for
    seconds at a time: see `measure_in_passes`), so the fastest process is the model's own speed and
    the one figure that repeats: the median of three passes took whatever share of them a busy spell
    had slowed.  Decode, where every process timed the canary's alongside (`decode_ratios`): the
    median ratio to the canary times the canary's quiet decode step, `canary_decode_ms`
    (`Passes.canary_decode`); the fastest process otherwise.  A proxy's decode is slowed for longer
    than any process lasts, so its fastest process depended on how many there were and when: in
    issue 19's tenth headline (2026-12-07, stream 34) most proxies' fastest decode was a lone pass
    among 6-12, 10-25% under the others, and proxies' decode moved -24% to +17% from run to run."""
    prefill = min(r[0] for r in runs)
    ratios = decode_ratios(runs)
    if ratios is not None and canary_decode_ms:
        return prefill, statistics.median(ratios) * canary_decode_ms
    return prefill, min(r[1] for r in runs)


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
