"""`star profile`: measure what each operator costs on this machine, for prefill and for decode, then
calibrate on whole models, and write both to one Parquet file (the profile a predictor reads).

Timing is evaluators/measure.py's, the whole-model fits evaluators/calibration.py's; this module
runs them in order and records where and how: the machine's CPU fingerprint, threads, dtype, torch
and star versions go into the file's metadata, so that a profile is only applied where it holds
(predictor.load_profile).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from star.arch import ArchConfig
from star.errors import StarError
from star.machine import fingerprint, tune_allocator

from .calibration import CALIBRATION_STAGES, calibrate
from .features import Case, features, spec_text
from .measure import DTYPES, FULL, QUICK, RUNTIMES, SWEEPS, Grid, cases, llc_bytes, measure, timing_record

PROFILE_FORMAT = 2  # 2: the CPU fingerprint (star.machine.fingerprint) replaces the CPU name


def machine_info(threads: int, dtype: str, device: str, grid: str, runtime: str = "eager") -> dict[str, Any]:
    """What a profile records about where and how it was measured; `fingerprint` decides where it applies,
    `runtime` what it times (eager PyTorch, or ExecuTorch programs and that release of it),
    `unit_timing`, `prefill_timing` and `decode_timing` how unit and whole-model times were reduced to figures
    (measure.timing_record)."""
    from importlib import metadata

    return {"fingerprint": fingerprint(), "threads": str(threads), "dtype": dtype, "device": device,
            "grid": grid, "runtime": runtime,
            **({"executorch": metadata.version("executorch")} if runtime == "executorch" else {}),
            "star": metadata.version("star-nas"), "python": platform.python_version(),
            "format": str(PROFILE_FORMAT), "llc_bytes": str(llc_bytes()),
            **timing_record(runtime),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def check_options(device: str, dtype: str, runtime: str) -> None:
    """A one-line StarError for a device, dtype or runtime `profile` cannot measure: `star profile`
    calls it before it sets anything up, and `profile` itself for every other caller."""
    if device != "cpu":
        raise StarError(f"--device {device}: only cpu profiles are implemented so far")
    if dtype not in DTYPES:
        raise StarError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if runtime not in RUNTIMES:
        raise StarError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "executorch" and dtype != "fp32":
        raise StarError("--runtime executorch profiles fp32 programs only (star export --format executorch's)")


def profile(out: str, proxies: list[ArchConfig], device: str = "cpu", threads: int | None = None,
            dtype: str = "fp32", quick: bool = False, progress: Callable[[int, int, str], None] | None = None,
            grid: Grid | None = None, runtime: str = "eager", cold_configs: list[ArchConfig] | None = None) -> int:
    """Measure the grid, write it to `out` (Parquet) and calibrate it on whole models, `proxies` among
    them (`star profile` passes star.search_spaces.calibration_proxies); return the number of rows.

    `runtime` "executorch" times every unit and whole model as an ExecuTorch program
    (evaluators/measure_executorch.py), lowered first (or taken from the user's cache of programs).
    `cold_configs` replaces the cold-cache calibration models (calibration.cold_calibration_models)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_options(device, dtype, runtime)
    if not out.endswith(".parquet"):
        raise StarError(f"-o {out}: expected a .parquet file name")
    if threads:
        torch.set_num_threads(threads)
    tune_allocator()
    grid = grid or (QUICK if quick else FULL)
    todo = cases(grid)
    runs = [(case, cold) for case in todo for cold in (False, True)]
    total = SWEEPS * len(runs) + len(CALIBRATION_STAGES)
    timer = _executorch_timer(grid, progress) if runtime == "executorch" else _eager_timer(dtype, grid)
    best: dict[int, tuple[float, float]] = {}
    for sweep in range(SWEEPS):
        for i, (case, cold) in enumerate(runs):
            if progress:
                progress(sweep * len(runs) + i, total,
                         f"{case.unit} d={case.width} {case.phase} T={case.tokens}{' cold' if cold else ''}")
            timing = timer(case, cold)
            if i not in best or timing[0] < best[i][0]:
                best[i] = timing
    rows = []
    for i, (case, cold) in enumerate(runs):
        median, p95 = best[i]
        flops, moved = features(case, 4 if dtype == "fp32" else 2)
        rows.append({"unit": case.unit, "width": case.width, "spec": spec_text(case.spec), "phase": case.phase,
                     "tokens": case.tokens, "cache": "cold" if cold else "warm", "flops": flops, "bytes": moved,
                     "median_ms": median, "p95_ms": p95, "reps": grid.reps})
    table = pa.Table.from_pylist(rows)
    grid_name = "quick" if grid is QUICK else "full" if grid is FULL else "custom"
    info = machine_info(torch.get_num_threads(), dtype, device, grid_name, runtime)
    if runtime == "executorch":  # every unit timing holds one program call; a model's pass holds one in all
        from .measure_executorch import call_ms

        info["call_ms"] = call_ms()
    meta = {"star.profile": json.dumps(info)}
    table = table.replace_schema_metadata(meta)
    tmp = out + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out)

    def stage(done: int, what: str) -> None:
        if progress:
            progress(SWEEPS * len(runs) + done, total, what)

    calibrate(out, proxies, quick=quick, stage=stage, runtime=runtime, cold_configs=cold_configs)
    return len(rows)


def _eager_timer(dtype: str, grid: Grid) -> Callable[[Case, bool], tuple[float, float]]:
    """(median ms, p95 ms) of a case in eager PyTorch (measure.measure)."""
    return lambda case, cold: measure(case, DTYPES[dtype], grid.reps, grid.warmup, cold)


def _executorch_timer(grid: Grid, progress: Callable[[int, int, str], None] | None
                      ) -> Callable[[Case, bool], tuple[float, float]]:
    """(median ms, p95 ms) of a case in its unit's ExecuTorch program, after lowering every unit's
    program that the user's cache of programs lacks (a few seconds each)."""
    from star.executorch import set_threads

    from .measure_executorch import export_programs, measure_unit, unit_jobs

    jobs = unit_jobs(grid)
    export_programs(list(jobs.values()), progress=lambda done, total, what: progress and progress(
        0, 1, f"lowering unit programs to ExecuTorch ({done}/{total}): {what}"))
    set_threads(torch.get_num_threads())
    return lambda case, cold: measure_unit(case, jobs[(case.unit, case.width, repr(case.spec))], grid.reps,
                                           grid.warmup, cold)
