"""Latency predictions from a measured profile (`star profile`), by operator-level composition.

For every unit and phase of the profile (see `measure.py` and `profiler.py`), a small linear model

    time = a + b · FLOPs + c · bytes moved

is fitted by least squares on relative error (so a 0.1 ms unit counts as much as a 100 ms one), with
non-negative coefficients.  An architecture's prefill time is the sum over its blocks of its mixer
and FFN units at the prompt length, plus the embedding and the head; decode is the same sum at one
token with the context in the cache.  The fit interpolates between the profiled widths and lengths,
and extrapolates along the roofline-shaped features beyond them.  Calibrated on whole models
(`calibration.calibrate`): in ExecuTorch, less the cost of a program call that each unit's timing
holds and a model's pass holds once (`call_ms`); fixed costs per block kind, a decode cost per
weight byte for models that fit the last-level cache, and a scale per width for models that do not.
A prediction never falls as the prompt or the context grows (`Profile._pass`): a model pushed out of
the cache by a longer one takes at least the time it had at the longest length that fitted.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from star.arch import ArchConfig, IdentityMixer
from star.errors import StarError

from .features import Case, block_kinds, features, spec_text
from .latency import peak_memory_bytes

PROFILES_DIR = Path(__file__).parent / "profiles"
# A profile that could not repeat the fastest measurement of more than this share of its calibration
# models (calibration.unsettled) was made on a busy machine; profiles made before that figure was
# recorded are judged by their timing noise (calibration.timing_noise) over NOISY.
UNSETTLED = 0.10
NOISY = 0.15


def per_phase(shares: dict[str, float]) -> str:
    """Per-phase shares as people read them ('prefill 28%, decode 39%'), as warnings and `star profile` print them."""
    return ", ".join(f"{phase} {100 * value:.0f}%" for phase, value in shares.items())


@dataclass(frozen=True)
class UnitModel:
    coef: tuple[float, float, float]  # a (ms), b (ms per FLOP), c (ms per byte)
    p95_ratio: float

    def __call__(self, flops: float, moved: float) -> float:
        a, b, c = self.coef
        return a + b * flops + c * moved


def _least_squares(rows: list[dict[str, Any]]) -> tuple[float, float, float]:
    x = np.array([[1.0, r["flops"], r["bytes"]] for r in rows])
    y = np.array([r["median_ms"] for r in rows])
    scale = x.max(axis=0)
    scale[scale == 0] = 1.0
    active = [0, 1, 2]
    while True:  # non-negative least squares by dropping negative coefficients (3 features: at most 3 passes)
        a = x[:, active] / scale[active] / y[:, None]
        sol, *_ = np.linalg.lstsq(a, np.ones(len(y)), rcond=None)
        if (sol >= 0).all() or len(active) == 1:
            break
        active = [f for f, s in zip(active, sol, strict=True) if s >= 0] or [0]
    coef = [0.0, 0.0, 0.0]
    for f, s in zip(active, sol, strict=True):
        coef[f] = max(0.0, float(s)) / scale[f]
    return coef[0], coef[1], coef[2]


def _fit(rows: list[dict[str, Any]]) -> UnitModel:
    """The least-squares line, refitted once without any row it misses by more than 25% (and by
    more than three times the median miss), given that at least four rows remain.

    One slow median among a unit's rows is a bimodal timing, not a trend: GQA decode at 16K context
    on a 1024-wide model ran in 19 ms in one profile and 44 ms in the next (the calls themselves
    alternate between the two), and fitted with the rest that one row moved every prediction of
    that unit by 15%."""
    ratio = float(np.median([r["p95_ms"] / r["median_ms"] for r in rows]))
    line = UnitModel(_least_squares(rows), ratio)
    misses = [abs(line(r["flops"], r["bytes"]) / r["median_ms"] - 1) for r in rows]
    limit = max(0.25, 3 * float(np.median(misses)))
    kept = [r for r, miss in zip(rows, misses, strict=True) if miss <= limit]
    if len(kept) < len(rows) and len(kept) >= 4:
        line = UnitModel(_least_squares(kept), ratio)
    return line


# The most of a model's own unit time that its fitted fixed costs may take away (see _with_fixed).
MOST_FIXED_SAVING = 0.75


def _with_fixed(units_ms: float, fixed_ms: float) -> float:
    """The units' time plus the fixed costs, but never below a quarter of the units' time.

    The fitted fixed costs are corrections to the units' sum and may be negative; one that outweighs
    the units themselves (a noisy quick profile, a model far narrower than the calibration models) is
    extrapolated past what it was fitted on.  Whole calibration models took 1.03-1.33x their units'
    sum (shipped profile); a prediction below a quarter of it is such an extrapolation.  The floor
    is a share of the units and not the units' sum itself: a fallback to the units' sum jumps down
    as soon as a longer context's units outweigh the overhead, so a longer context predicted faster."""
    return max(units_ms + fixed_ms, (1 - MOST_FIXED_SAVING) * units_ms)


class Profile:
    """A measured profile and the unit models fitted to it."""

    def __init__(self, path: str | Path) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        if not self.path.is_file():
            raise StarError(f"profile {str(path)!r} does not exist (make one with star profile -o FILE.parquet)")
        try:
            table = pq.read_table(self.path)
            self.machine = json.loads(table.schema.metadata[b"star.profile"])
        except Exception as err:  # damaged file, or a Parquet file that is not a profile
            raise StarError(f"profile {str(path)!r} is not a star profile ({type(err).__name__})") from None
        rows = table.to_pylist()
        needed = {"unit", "phase", "flops", "bytes", "median_ms", "p95_ms"}
        if not rows or not needed <= set(rows[0]):
            raise StarError(f"profile {str(path)!r} has no measurements or lacks columns {sorted(needed)}")
        self.rows = rows
        # One fit per unit, phase, cache state and profiled width: how efficiently a matmul runs
        # depends on its shape far more than a single FLOPs/bytes line across widths can say.
        self.models: dict[tuple[str, str, str], dict[int, UnitModel]] = {}
        # And one per profiled setting of a unit (spec_text), for cases of exactly that setting: see _fits.
        self.setting_models: dict[tuple[str, str, str, str], dict[int, UnitModel]] = {}
        groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
        settings: dict[tuple[str, str, str, str, int], list[dict[str, Any]]] = {}
        for r in rows:
            cache = r.get("cache", "warm")
            groups.setdefault((r["unit"], r["phase"], cache, int(r["width"])), []).append(r)
            settings.setdefault((r["unit"], r["phase"], cache, str(r["spec"]), int(r["width"])), []).append(r)
        for (unit, phase, cache, width), group in sorted(groups.items()):
            self.models.setdefault((unit, phase, cache), {})[width] = _fit(group)
        for (unit, phase, cache, spec, width), group in sorted(settings.items()):
            if len({r["tokens"] for r in group}) >= 2:
                self.setting_models.setdefault((unit, phase, cache, spec), {})[width] = _fit(group)
        self.weight_bytes = 4 if self.machine.get("dtype", "fp32") == "fp32" else 2
        self.llc_bytes = int(self.machine.get("llc_bytes", 32 * 2**20))

    def differences_here(self) -> list[str]:
        """How this machine differs from the one the profile was measured on, in what changes
        kernels and so timings (star.machine.KERNEL_FIELDS); empty where the profile applies."""
        from star.machine import fingerprint, kernel_differences

        return kernel_differences(self.machine.get("fingerprint"), fingerprint())

    def noise_warning(self) -> str | None:
        """One line when the profile was measured on a busy machine: more than UNSETTLED of its
        calibration models unsettled (calibration.unsettled), or, in older profiles, a timing noise
        over NOISY (calibration.timing_noise)."""
        if self.machine.get("unsettled") is not None:
            figures, limit = self.machine["unsettled"], UNSETTLED
            what = ("of its calibration models, {shown} never settled (prefill: the fastest time repeated while the "
                    "host ran quiet; decode: the ratio to the canary repeated) (under {limit} when settled), so its "
                    "fitted costs may be a busy spell's")
        else:
            figures, limit = self.machine.get("timing_noise") or {}, NOISY
            what = ("passes of one model differed by a median {shown} (under {limit} when idle), so its "
                    "predictions are as uncertain")
        if not figures or max(figures.values()) <= limit:
            return None
        return (f"profile {self.path.name} was measured on a busy machine: "
                f"{what.format(shown=per_phase(figures), limit=f'{100 * limit:.0f}%')}; profile again when the "
                "machine is quieter")

    @property
    def runtime(self) -> str:
        """What the profile timed: 'eager' (PyTorch; every profile before runtimes were recorded) or
        'executorch' (its programs, `star profile --runtime executorch`)."""
        return str(self.machine.get("runtime", "eager"))

    def measured_on(self) -> str:
        """The CPU kind the profile was measured on, and the runtime where not eager PyTorch, in one phrase."""
        from star.machine import cpu_kind

        recorded = self.machine.get("fingerprint")
        where = cpu_kind(recorded) if recorded else f"{self.machine.get('cpu', 'an unrecorded CPU')} (no fingerprint)"
        if self.runtime == "executorch":
            where += f", in ExecuTorch {self.machine.get('executorch', '')}".rstrip()
        return where

    def _fits(self, case: Case, cache: str) -> dict[int, UnitModel]:
        """The fits that predict `case`, per profiled width: those of the case's own setting where the
        profile timed it at two lengths or more, else the unit's fit over all its settings.

        One line in FLOPs and bytes per unit and width holds where a unit's work runs at one rate,
        not where a cheap part and a slow one grow apart: ExecuTorch runs a long convolution's
        depthwise filter outside the XNNPACK delegate, so its time follows the kernel's taps far
        more than its FLOPs say (a 128-wide one at 512 tokens: 35 ms, against 0.85 ms for a 3-tap
        short convolution), and a profile that timed kernels of 128 predicted the star-space
        proxies' prefill 20-22% fast where two of three or four of their long convolutions had 256
        taps, and about right where few had (2026-12-07, docs/latency.md).  A setting's own rows
        say how its own time grows with the length; other settings still take the unit's line."""
        state = cache if (case.unit, case.phase, cache) in self.models else "warm"  # older profiles: warm only
        pooled = self.models.get((case.unit, case.phase, state))
        if not pooled:
            raise StarError(f"profile {self.path.name} has no measurements of {case.unit} ({case.phase})")
        own = self.setting_models.get((case.unit, case.phase, state, spec_text(case.spec)), {})
        return {width: own.get(width, fit) for width, fit in pooled.items()}

    def _unit_ms(self, case: Case, cache: str) -> tuple[float, float]:
        """(median ms, p95 ms) of one unit call: the fits (`_fits`) at the two profiled widths around
        the case's width, each applied to the case's own FLOPs and bytes, interpolated in log width
        (the nearest fit outside the profiled range)."""
        fits = self._fits(case, cache)
        flops, moved = features(case, self.weight_bytes)
        widths = sorted(fits)
        below = max([w for w in widths if w <= case.width], default=widths[0])
        above = min([w for w in widths if w >= case.width], default=widths[-1])
        low, high = fits[below], fits[above]
        share = 0.0 if above == below else math.log(case.width / below) / math.log(above / below)
        t_low, t_high = max(low(flops, moved), 1e-6), max(high(flops, moved), 1e-6)
        median = t_low ** (1 - share) * t_high ** share  # linear in log time
        ratio = (1 - share) * low.p95_ratio + share * high.p95_ratio
        return median, median * ratio

    def cache_state(self, config: ArchConfig, tokens: int) -> str:
        """'cold' when the model's weights and its cache at `tokens` exceed the last-level cache."""
        footprint = config.params() * self.weight_bytes + config.cache_bytes(tokens, self.weight_bytes)
        return "cold" if footprint > self.llc_bytes else "warm"

    def longest_warm(self, config: ArchConfig, tokens: int) -> int | None:
        """The longest length up to `tokens` at which the model still fits the last-level cache, by
        bisection (its footprint only grows with length); None if it does not fit at one token."""
        if self.cache_state(config, 1) == "cold":
            return None
        fits, beyond = 1, tokens + 1
        while beyond - fits > 1:
            middle = (fits + beyond) // 2
            fits, beyond = (middle, beyond) if self.cache_state(config, middle) == "warm" else (fits, middle)
        return fits

    def _pass(self, config: ArchConfig, phase: str, tokens: int) -> tuple[float, float]:
        """(median ms, p95 ms) of one prefill of `tokens` tokens or one decode step at context `tokens`.

        A model whose weights and cache exceed the last-level cache runs every unit cold, scaled by
        the calibrated cold scale (below 1: whole models stream memory better than units timed alone
        after a flush) and without the warm per-weight-byte cost.  So where a growing cache pushes a
        model out of the cache, the cold rule alone could predict it faster than one token earlier:
        with the shipped profile, prefill of proxies up to 14% faster; with a quick profile's cold
        scales of 0.2-0.4, decode too.  A longer prompt or context never makes a model faster, so
        a model that fitted the cache at a shorter length takes at least its warm time at the
        longest length that fitted.  Predictions of models that fit, or that never did, are
        unchanged; each rule alone grows with the length, and so does their maximum."""
        cache = self.cache_state(config, tokens)
        median, p95 = self._regime_ms(config, phase, tokens, cache)
        fitted = self.longest_warm(config, tokens) if cache == "cold" else None
        if fitted is not None:
            warm_median, warm_p95 = self._regime_ms(config, phase, fitted, "warm")
            median, p95 = max(median, warm_median), max(p95, warm_p95)
        return median, p95

    def _regime_ms(self, config: ArchConfig, phase: str, tokens: int, cache: str) -> tuple[float, float]:
        """(median ms, p95 ms) of one pass at `tokens` by the rule of one cache state: the units' sum
        (scaled when cold) plus the calibrated fixed costs."""
        d, parts = config.hidden_size, []
        parts.append(("embedding", config.vocab_size))
        for block in config.blocks:
            if not isinstance(block.mixer, IdentityMixer):
                parts.append((f"mixer:{block.mixer.kind}", block.mixer))
            if block.ffn is not None:
                parts.append((f"ffn:{'swiglu' if block.ffn.kind == 'swiglu' else 'mlp'}", block.ffn))
        parts.append(("head", config.vocab_size))
        median = p95 = 0.0
        for unit, spec in parts:
            t, t95 = self._unit_ms(Case(unit, d, spec, phase, tokens), cache)
            median += t
            p95 += t95
        # Each unit was timed as a call of its own program; a model's program is one call per pass
        # (ExecuTorch profiles' call_ms; eager PyTorch's per-call work is the model's own too).
        fixed = self._block_overhead_ms(config, phase) - (len(parts) - 1) * float(self.machine.get("call_ms", 0.0))
        if phase == "decode" and cache == "warm":  # weights streamed from beyond the core's cache share
            per_byte = float(self.machine.get("warm_decode_ms_per_weight_byte", 0.0))
            fixed += per_byte * config.params() * self.weight_bytes
        scale = self._cold_scale(phase, config.hidden_size) if cache == "cold" else 1.0
        return _with_fixed(scale * median, fixed), _with_fixed(scale * p95, fixed)

    def _cold_scale(self, phase: str, width: int) -> float:
        """The calibrated whole-model over cold-units ratio (calibration.cold_scales), interpolated in log
        width between calibrated widths (the nearest outside them); older profiles have one number."""
        scale = self.machine.get("cold_scale", {}).get(phase, 1.0)
        if not isinstance(scale, dict):
            return float(scale)
        if not scale:
            return 1.0
        points = sorted((int(w), float(v)) for w, v in scale.items())
        below = max([p for p in points if p[0] <= width], default=points[0])
        above = min([p for p in points if p[0] >= width], default=points[-1])
        if above[0] == below[0]:
            return below[1]
        share = math.log(width / below[0]) / math.log(above[0] / below[0])
        return below[1] + share * (above[1] - below[1])

    def _block_overhead_ms(self, config: ArchConfig, phase: str) -> float:
        """The calibrated fixed cost of the model's blocks beyond their units (calibration.block_overheads);
        profiles calibrated before per-kind overheads carry one constant per block."""
        per_kind = self.machine.get("block_overhead_ms", {}).get(phase)
        if per_kind is None:
            return len(config.blocks) * float(self.machine.get("overhead_ms_per_block", {}).get(phase, 0.0))
        return sum(per_kind.get("block", 0.0) + sum(per_kind.get(key, 0.0) for key in block_kinds(block))
                   for block in config.blocks)

    def predict(self, config: ArchConfig, prompt: int = 1024, context: int = 4096) -> dict[str, float]:
        if prompt < 1 or context < 1:
            raise StarError(f"prompt and context must be >= 1, got {prompt} and {context}")
        prefill, _ = self._pass(config, "prefill", prompt)
        decode, decode_p95 = self._pass(config, "decode", context)
        return {"ttft_ms": prefill, "prefill_tok_s": 1e3 * prompt / prefill, "decode_ms": decode,
                "decode_ms_p95": max(decode, decode_p95),
                "peak_memory": peak_memory_bytes(config, context, self.weight_bytes,
                                                 float(self.machine.get("runtime_bytes", 0.0)))}


HERE = "here"  # the profile made on this machine: star profile's own, else a shipped one that matches it


def machine_profile_path(quick: bool = False, runtime: str = "eager") -> Path:
    """Where `star profile` without -o keeps this machine's profile: the user's cache folder, one file
    per CPU fingerprint (so a home folder shared by different machines holds one for each) and
    runtime (`here` reads the eager ones)."""
    from star.machine import cache_dir, fingerprint, fingerprint_key

    runtime_part = "" if runtime == "eager" else f"-{runtime}"
    name = f"{fingerprint_key(fingerprint())}{runtime_part}{'-quick' if quick else ''}.parquet"
    return cache_dir() / "profiles" / name


def load_profile(name_or_path: str) -> Profile:
    """A profile for predictions: `here` (this machine's: the full one `star profile` made, else its
    quick one, else a shipped profile measured on this CPU kind), a shipped profile by name
    (evaluators/profiles/NAME.parquet) or a file.

    A profile used for `here` must have been measured on this CPU kind, or it is refused (StarError,
    one line): timings do not carry across CPUs (a Zen 4 profile predicted a Zen 3's decode 2-3x too
    fast).  A profile named explicitly is the user's choice: a mismatch is a warning."""
    from star.machine import cpu_kind, fingerprint

    if name_or_path != HERE:
        shipped = PROFILES_DIR / f"{name_or_path}.parquet"
        profile = Profile(shipped if shipped.is_file() else name_or_path)
        differences = profile.differences_here()
        if differences:
            warnings.warn(f"profile {profile.path.name} was measured on {profile.measured_on()}, not on this CPU "
                          f"({'; '.join(differences)}): its predictions may be far off here", stacklevel=2)
        if profile.noise_warning():
            warnings.warn(profile.noise_warning(), stacklevel=2)
        return profile
    candidates = [machine_profile_path(), machine_profile_path(quick=True)]
    for path in candidates:
        if path.is_file():
            profile = Profile(path)
            differences = profile.differences_here()
            if differences:  # a cache copied from, or shared with, another machine
                raise StarError(f"profile {path} was measured on {profile.measured_on()}, not on this CPU "
                                f"({'; '.join(differences)}): make one here with `star profile --quick` (about "
                                "2 min), or name the profile with --profile to use it anyway")
            if profile.noise_warning():
                warnings.warn(profile.noise_warning(), stacklevel=2)
            return profile
    for path in sorted(PROFILES_DIR.glob("*.parquet")):
        profile = Profile(path)
        if not profile.differences_here():
            return profile
    shipped = Profile(PROFILES_DIR / "dev-cpu.parquet")
    raise StarError(f"no latency profile for this CPU, {cpu_kind(fingerprint())}: make one with `star profile "
                    "--quick` (about 2.5 min; `star profile` for the full one, about 15 min), or name a profile "
                    f"(--profile dev-cpu, measured on {shipped.measured_on()}) to use it anyway")
