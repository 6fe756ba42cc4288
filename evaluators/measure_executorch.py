"""Measuring in ExecuTorch's runtime (`star profile --runtime executorch`): the same units and whole
models as evaluators/measure.py, each lowered to a `.pte` program (star.executorch: XNNPACK, fp32,
decode state in fixed-size buffers) and timed through ExecuTorch's runtime in this process.

A unit's program holds one unit and takes hidden states, as it runs inside a model's program:
- a token mixer with its pre-norm and residual add (a one-block model without FFN): one method
  `prefill_T` per prompt length T of the grid, writing the unit's state, and `decode` for one token
  at a position, attending over the slots up to it (their contents do not change the time);
- a channel mixer with its pre-norm and residual add: `prefill_T` and `decode`, no state;
- the embedding lookup: `prefill_T` and `decode` on token ids;
- the head (final norm and LM head) on one position: a model's prefill method returns the logits of
  the last position only (star.executorch.StaticCacheLM), so its head costs the same at every T.

Lowering is the cost, not timing: about 5.5 s per block of a model's program (prefill and decode
methods) on a 2-core Zen 4 (a 16-block proxy about 100 s; one unit's program with three methods
5-17 s), almost all of it in ExecuTorch's Python passes (XNNPACK's partitioning and preprocessing,
decompositions).
So every program is kept in the user's cache folder under a digest of what it holds and of the
code that lowers it (`program_path`), made once and reused by later profiles and benchmarks, and
lowered two at a time in separate processes (`export_programs`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from star.arch import ArchConfig, BlockConfig, IdentityMixer, ShortConvMixer
from star.errors import StarError

from .features import Case
from .measure import PREFILL_QUANTILE, Grid, l2_bytes, llc_bytes, prefill_timed_s, quantile_ms, time_calls

UNIT_VOCAB = 512  # the vocabulary of the one-block models that hold a mixer or FFN unit (as measure._module)


@dataclass(frozen=True)
class UnitJob:
    """The program of one unit (`unit` as in a profile's rows) of the one-block model `model` (ArchConfig
    JSON: the unit's width, settings, vocabulary) with a prefill method per length in `prefill` and a
    decode method over a state of `slots` positions."""

    unit: str
    model: str
    prefill: tuple[int, ...]
    slots: int

    def key(self) -> dict[str, Any]:
        return {"unit": self.unit, "model": json.loads(self.model), "prefill": list(self.prefill), "slots": self.slots}


@dataclass(frozen=True)
class ModelJob:
    """The program of a whole model (star.executorch.to_program), seeded weights, `prompt` tokens of
    prefill and a decode cache of `context` positions."""

    model: str  # ArchConfig JSON
    prompt: int
    context: int

    def key(self) -> dict[str, Any]:
        return {"model": json.loads(self.model), "prompt": self.prompt, "context": self.context}


def unit_model(case: Case) -> ArchConfig:
    """The one-block model that holds `case`'s unit, as measure._module builds it: the mixer alone; the
    FFN after no mixer; a short convolution between the embedding and head of the case's vocabulary."""
    if case.unit in ("embedding", "head"):
        block, vocab = BlockConfig(mixer=ShortConvMixer(kernel=2), ffn=None), case.spec
    elif case.unit.startswith("ffn:"):
        block, vocab = BlockConfig(mixer=IdentityMixer(), ffn=case.spec), UNIT_VOCAB
    else:
        block, vocab = BlockConfig(mixer=case.spec, ffn=None), UNIT_VOCAB
    return ArchConfig(hidden_size=case.width, vocab_size=vocab, blocks=(block,))


# The source files that decide what a program holds: the operators, the model, the configs, the export
# and this module's unit programs.  An edit elsewhere in star leaves the kept programs valid.
LOWERING_SOURCES = ("star/arch.py", "star/operators.py", "star/model.py", "star/executorch.py",
                    "star/evaluators/measure_executorch.py")


def lowering_version() -> str:
    """The ExecuTorch version and a digest of LOWERING_SOURCES: a program kept under another is stale.

    Computed once per run and handed to the processes it starts (STAR_LOWERING_VERSION in their
    environment): a source edited while a profile runs must not send its lowering and measuring
    processes to look for programs under another name."""
    import importlib.util
    import os
    from importlib import metadata

    if os.environ.get("STAR_LOWERING_VERSION"):
        return os.environ["STAR_LOWERING_VERSION"]
    digest = hashlib.sha256(metadata.version("executorch").encode())
    for source in LOWERING_SOURCES:
        package, _, name = source.rpartition("/")
        spec = importlib.util.find_spec(package.replace("/", "."))
        folder = Path(next(iter(spec.submodule_search_locations)))
        digest.update(f"{source}\0".encode() + (folder / name).read_bytes())
    os.environ["STAR_LOWERING_VERSION"] = digest.hexdigest()[:16]
    return os.environ["STAR_LOWERING_VERSION"]


def program_path(job: UnitJob | ModelJob) -> Path:
    """Where `job`'s program is kept: the user's cache folder, under a digest of the job and of the
    lowering (`lowering_version`)."""
    from star.machine import cache_dir

    text = json.dumps({**job.key(), "lowering": lowering_version()}, sort_keys=True)
    return cache_dir() / "executorch-programs" / f"{hashlib.sha256(text.encode()).hexdigest()[:20]}.pte"


class _Stateless(nn.Module):
    """A unit without state as a module's forward: `function` of `owner`'s layers (FFN: x +
    ffn(norm(x)); the embedding; the head).  `owner` is registered so that export sees its weights."""

    def __init__(self, owner: nn.Module, function: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.owner, self.function = owner, function

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x)


def _unit_methods(job: UnitJob) -> dict[str, tuple[nn.Module, tuple[Tensor, ...]]]:
    """The methods of a unit's program (module and example inputs), as the module docstring says."""
    from star.executorch import Method, StaticCacheLM
    from star.model import StarLM

    torch.manual_seed(0)
    model = StarLM(ArchConfig.from_json(job.model)).eval()
    d = model.config.hidden_size
    if job.unit == "head":
        return {"decode": (_Stateless(model, model.head), (torch.randn(1, d),))}
    if job.unit == "embedding":
        embed = _Stateless(model, model.embed_tokens)
        return {**{f"prefill_{t}": (embed, (torch.zeros(1, t, dtype=torch.long),)) for t in job.prefill},
                "decode": (embed, (torch.zeros(1, dtype=torch.long),))}
    if job.unit.startswith("ffn:"):
        layer = model.layers[0]
        ffn = _Stateless(layer, lambda x: x + layer.feed_forward(layer.ffn_norm(x)))
        return {**{f"prefill_{t}": (ffn, (torch.randn(1, t, d),)) for t in job.prefill},
                "decode": (ffn, (torch.randn(1, d),))}
    lm = StaticCacheLM(model, job.slots).eval()
    return {**{f"prefill_{t}": (Method(lm, "prefill_hidden"), (torch.randn(1, t, d),)) for t in job.prefill},
            "decode": (Method(lm, "decode_hidden"), (torch.randn(1, d), torch.tensor([1])))}


def _export(job: UnitJob | ModelJob) -> None:
    """Lower `job` and write its program (under a temporary name, renamed when whole)."""
    import os

    from star.executorch import lower, to_program
    from star.model import StarLM

    torch.set_num_threads(1)
    if isinstance(job, ModelJob):
        torch.manual_seed(0)
        data = to_program(StarLM(ArchConfig.from_json(job.model)).eval(), job.prompt, job.context)
    else:
        data = lower(_unit_methods(job), f"{job.unit} of {ArchConfig.from_json(job.model).name}")
    path = program_path(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _export_main() -> None:
    """A lowering process (`export_programs`): the job as JSON on stdin; a StarError is one line on
    stderr and exit status 2."""
    import sys
    import warnings

    warnings.filterwarnings("ignore")
    job = json.loads(sys.stdin.read())
    kind = job.pop("kind")
    try:
        _export(UnitJob(**{**job, "prefill": tuple(job["prefill"])}) if kind == "unit" else ModelJob(**job))
    except StarError as err:
        sys.stderr.write(f"{err}\n")
        sys.exit(2)


def export_programs(jobs: list[UnitJob | ModelJob], workers: int = 2,
                    progress: Callable[[int, int, str], None] | None = None) -> None:
    """Lower every job whose program is not in the cache yet, `workers` at a time, each in a fresh
    process (lowering is single-threaded Python, and the process returns its memory when done)."""
    import subprocess
    import sys
    import tempfile
    from dataclasses import asdict

    from star.executorch import require_executorch

    require_executorch("--runtime executorch")
    todo = list({program_path(job): job for job in jobs if not program_path(job).is_file()}.values())
    running: list[tuple[subprocess.Popen, Any, UnitJob | ModelJob]] = []
    done = 0
    code = "from star.evaluators.measure_executorch import _export_main; _export_main()"
    while todo or running:
        while todo and len(running) < workers:
            job = todo.pop(0)
            errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below) a file, not a pipe: cannot block
            process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=errors, text=True)
            kind = "model" if isinstance(job, ModelJob) else "unit"
            process.stdin.write(json.dumps({"kind": kind, **asdict(job)}))
            process.stdin.close()
            running.append((process, errors, job))
        process, log, job = running.pop(0)
        process.wait()
        log.seek(0)
        errors = log.read()
        log.close()
        if process.returncode != 0:
            for other, _, _ in running:
                other.kill()
            lines = [line for line in errors.splitlines() if line.strip()]
            raise StarError(lines[-1] if process.returncode == 2 and lines else
                            f"lowering {_label(job)} to ExecuTorch failed (exit {process.returncode}): "
                            f"{lines[-1] if lines else 'no message'}")
        done += 1
        if progress:
            progress(done, done + len(todo) + len(running), f"lowered {_label(job)}")


def _label(job: UnitJob | ModelJob) -> str:
    config = ArchConfig.from_json(job.model)
    return config.name if isinstance(job, ModelJob) else f"{job.unit} d={config.hidden_size}"


def unit_jobs(grid: Grid) -> dict[tuple[str, int, str], UnitJob]:
    """The program of every unit of `grid` (measure.cases), by (unit, width, repr(spec))."""
    from .measure import cases

    slots = max(grid.decode) + 1
    jobs = {}
    for case in cases(grid):
        key = (case.unit, case.width, repr(case.spec))
        if key not in jobs:
            jobs[key] = UnitJob(case.unit, unit_model(case).to_json(), tuple(grid.prefill), slots)
    return jobs


def measure_unit(case: Case, job: UnitJob, reps: int, warmup: int, cold: bool = False) -> tuple[float, float]:
    """(median ms, p95 ms) of one call of `case` in its unit's program: a prefill after evicting the L2
    cache (`cold`: the last-level cache too), as measure.measure does in eager PyTorch; a decode step
    after evicting the last-level cache when `cold`, else back to back, as a whole model's program
    runs its units.

    Why decode differs from eager: a unit's decode step in ExecuTorch is tens of microseconds, and an
    L2 flush before it also evicts the runtime's own state and code, which inside a model stay hot.
    Measured on a 2-core Zen 4 (2026-12-07, ExecuTorch 1.5.1): a 128-wide short convolution's step
    took 0.079 ms after the flush and 0.025 ms without, an empty program's call 0.021 and 0.013 ms;
    the eight calibration proxies of a quick profile then decoded in 0.39-0.68x the sum of their
    flushed units (short-convolution proxies near 0.5x, so no per-kind constant near 0 could fit
    them), and in 0.97-1.10x the sum of unflushed units less the calls (`call_ms`) for the four LFM2
    proxies.  What the back-to-back step misses, weights that a whole model streams from the
    last-level cache rather than L2, is the profile's calibrated cost per weight byte."""
    from star.executorch import load_program

    program = load_program(program_path(job))
    prefill = case.phase == "prefill" and case.unit != "head"
    method = program.load_method(f"prefill_{case.tokens}" if prefill else "decode")
    flush = torch.ones(2 * (llc_bytes() if cold else l2_bytes()) // 4) if cold or case.phase == "prefill" else None
    generator = torch.Generator().manual_seed(0)
    d = case.width

    def inputs() -> list[Tensor]:
        if case.unit == "embedding":
            shape = (1, case.tokens) if case.phase == "prefill" else (1,)
            return [torch.randint(0, case.spec, shape, generator=generator)]
        if case.unit == "head" or case.phase == "decode":
            x = torch.randn(1, d, generator=generator)
            return [x, torch.tensor([case.tokens])] if case.unit.startswith("mixer:") else [x]
        return [torch.randn(1, case.tokens, d, generator=generator)]

    def once() -> float:
        if flush is not None:
            float(flush.sum())
        args = inputs()
        start = time.perf_counter()
        method.execute(args)
        return time.perf_counter() - start

    return time_calls(once, reps, warmup)


class _Empty(nn.Module):
    """The least a program can do: one addition on a (1, 128) input, the size of a proxy's hidden state."""

    def forward(self, x: Tensor) -> Tensor:
        return x + 1.0


def call_ms(reps: int = 500, rounds: int = 3) -> float:
    """The ms of one call of an almost empty program, back to back: what every unit timing holds once
    (the runtime's entry, its inputs and outputs) and a whole model's program pays once per pass, not
    once per unit (predictor: a profile's `call_ms`).  The fastest of `rounds` medians, as the profile
    keeps each unit's fastest sweep: on a 2-core Zen 4 a call took 0.007 ms in quiet spells and
    0.012-0.013 ms in busy ones (the same with the addition delegated to XNNPACK or not), where a
    16-block proxy decodes in about 1 ms from 34 units."""
    import tempfile

    from star.executorch import load_program, lower

    example = (torch.zeros(1, 128),)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "empty.pte"
        path.write_bytes(lower({"forward": (_Empty(), example)}, "an empty program"))
        method = load_program(path).load_method("forward")
    args = list(example)

    def once() -> float:
        start = time.perf_counter()
        method.execute(args)
        return time.perf_counter() - start

    return min(time_calls(once, reps, warmup=10)[0] for _ in range(rounds))


def model_job(config: ArchConfig, prompt: int, context: int) -> ModelJob:
    """The program a whole-model measurement at (`prompt`, `context`) runs: a cache of `context`
    positions, every decode step at the last of them."""
    return ModelJob(config.to_json(), prompt, context)


def _timings_here(config: ArchConfig, prompt: int, context: int, reps: int) -> tuple[float, float]:
    """measure.measure_model's measurement in ExecuTorch, in the calling process, timed by the same
    rules (measure.quantile_ms: prefill PREFILL_QUANTILE over prefill_timed_s(), decode the median over
    MIN_TIMED_S) after a warm-up call.  Every step
    decodes at position `context` - 1 (rewriting one slot, attending over all `context`): the time of
    a step with the cache full, one token short of eager's measurement at `context` (its cache
    holds `context` tokens before the step), a difference of 1/context in the attention's work."""
    from star.executorch import load_program, set_threads

    set_threads(torch.get_num_threads())
    path = program_path(model_job(config, prompt, context))
    if not path.is_file():
        raise StarError(f"no ExecuTorch program of {config.name} at {path} (export_programs makes it)")
    program = load_program(path)
    prefill_method, decode_method = program.load_method("prefill"), program.load_method("decode")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (1, prompt), generator=generator)
    token, position = ids[:, :1].clone(), torch.tensor([context - 1])

    def timed(method: Any, args: list[Tensor]) -> Callable[[], float]:
        def once() -> float:
            start = time.perf_counter()
            method.execute(args)
            return time.perf_counter() - start

        return once

    return (quantile_ms(timed(prefill_method, [ids]), reps, prefill_timed_s(), PREFILL_QUANTILE),
            quantile_ms(timed(decode_method, [token, position]), reps))


def prepare_process() -> None:
    """Import and register what running a program needs (ExecuTorch's runtime and LLM kernels): the
    measuring processes' parent (measure._serve_forks) calls it once, so that no timed process pays it."""
    from star.executorch import load_llm_ops, require_executorch

    require_executorch("--runtime executorch")
    import executorch.runtime  # noqa: F401

    load_llm_ops()
