"""What a search optimises and what it must respect.

An objective is a named number per architecture with a direction.  `quality` needs a trained proxy
(an evaluator); every other objective is screening metrics: exact accounting (`params`,
`cache_bytes`) or a device model's prediction (`ttft_ms`, `decode_ms`, `peak_memory`), cheap enough to
compute for every child before anything is trained.

Hypervolume needs comparable axes, so a `Normaliser` maps every objective to "0 is best, 1 is the
worst the space offers" with bounds fixed once per run (stored in the manifest, so a resumed run and
the report use the same scale).  The reference point is 1.1 on every axis.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from star.arch import ArchConfig
from star.errors import StarError
from star.evaluators.static import static_metrics

REFERENCE = 1.1


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "min" or "max"
    unit: str
    needs_training: bool
    description: str


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("quality", "max", "score", True, "suite aggregate of the trained proxy (mean of category means)"),
    Objective("ttft_ms", "min", "ms", False, "predicted time to first token for the prompt, on the device profile"),
    Objective("decode_ms", "min", "ms", False, "predicted p50 decode latency per token at the context"),
    Objective("peak_memory", "min", "bytes", False, "predicted peak memory at the context (weights+cache+work)"),
    Objective("params", "min", "", False, "total parameters (exact)"),
    Objective("cache_bytes", "min", "bytes", False, "decode cache/state bytes at the context, bf16 (exact)"),
)}


def format_value(name: str, value: float | None) -> str:
    """A metric as people read it: parameters in millions, bytes in MiB, milliseconds, scores."""
    if value is None:
        return ""
    if name in ("params", "non_embedding_params"):
        return f"{value / 1e6:,.1f}M"
    if name in ("cache_bytes", "peak_memory"):
        return f"{value / 2**20:,.1f} MiB"
    if name.endswith("_ms"):
        return f"{value:,.2f} ms"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def parse_objectives(text: str) -> tuple[Objective, ...]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) < 2:
        raise StarError(f"--objectives needs at least two comma-separated names, got {text!r} "
                        f"(known: {', '.join(OBJECTIVES)})")
    for name in names:
        if name not in OBJECTIVES:
            raise StarError(f"unknown objective {name!r} (known: {', '.join(OBJECTIVES)})")
    if len(set(names)) != len(names):
        raise StarError(f"--objectives names an objective twice: {text!r}")
    return tuple(OBJECTIVES[n] for n in names)


@dataclass(frozen=True)
class Constraint:
    """metric <= limit (every constrained metric is one to keep small)."""

    metric: str
    limit: float

    def excess(self, metrics: Mapping[str, float]) -> float:
        """How far over the limit, as a fraction of it (0 when satisfied)."""
        return max(0.0, metrics[self.metric] / self.limit - 1.0)

    def describe(self) -> str:
        return f"{self.metric} <= {self.limit:g}"


CONSTRAINT_FLAGS = {"max_params": "params", "max_cache_bytes": "cache_bytes", "max_ttft_ms": "ttft_ms",
                    "max_decode_ms": "decode_ms", "max_peak_memory": "peak_memory"}


def violation(constraints: Sequence[Constraint], metrics: Mapping[str, float]) -> tuple[float, str]:
    """(total relative excess, a readable list of the broken constraints)."""
    broken = [(c, c.excess(metrics)) for c in constraints if c.excess(metrics) > 0]
    return sum(e for _, e in broken), "; ".join(f"{c.metric} {metrics[c.metric]:.4g} > {c.limit:g}" for c, _ in broken)


@functools.cache
def predictor_for(device: str) -> Callable[[ArchConfig, int, int], dict[str, float]]:
    """A roofline device model by name (evaluators/latency.py), else a measured profile: `here` (this
    machine's own), a shipped one by name or a file (predictor.load_profile says which are refused)."""
    from star.evaluators.latency import DEVICES, predict

    if device in DEVICES:
        return functools.partial(predict, device=DEVICES[device])
    from pathlib import Path

    from star.evaluators.predictor import HERE, PROFILES_DIR, load_profile

    shipped = sorted(p.stem for p in PROFILES_DIR.glob("*.parquet"))
    if device not in [HERE, *shipped] and not Path(device).is_file() and not device.endswith(".parquet"):
        raise StarError(f"unknown device profile {device!r}: give a roofline model ({', '.join(DEVICES)}), {HERE} "
                        f"(this machine's profile), a shipped profile ({', '.join(shipped) or 'none'}) or a profile "
                        "file from star profile")
    return load_profile(device).predict


def device_measured_on(device: str) -> str:
    """Where the device metrics come from, in one phrase: a roofline model, or the CPU kind a
    measured profile was timed on (a run records it: `here` means a different profile on each machine),
    with the profile's busy-machine warning where it has one, so that a run's results say so after
    the warning printed while it ran has scrolled away."""
    predictor = predictor_for(device)
    if isinstance(predictor, functools.partial):
        return f"{device}: a roofline model, not a measurement"
    profile = predictor.__self__
    warning = profile.noise_warning()
    return f"{profile.path.name}: measured on {profile.measured_on()}" + (f" (warning: {warning})" if warning else "")


def screening_metrics(config: ArchConfig, device: str, prompt: int, context: int) -> dict[str, float]:
    """Every objective and constraint metric except quality: exact accounting (evaluators.static, in
    bf16 cache bytes) plus device predictions."""
    exact = static_metrics(config, context, prompt=prompt)
    return {
        **{name: float(exact[name]) for name in ("params", "non_embedding_params", "cache_bytes", "prefill_flops")},
        "decode_flops": float(exact["decode_flops_per_token"]),
        **predictor_for(device)(config, prompt=prompt, context=context),
    }


@dataclass(frozen=True)
class Normaliser:
    """Maps objective values to [0, 1]-ish minimisation coordinates with fixed per-objective bounds."""

    names: tuple[str, ...]
    directions: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    def point(self, values: Mapping[str, float]) -> tuple[float, ...]:
        out = []
        for name, direction, lo, hi in zip(self.names, self.directions, self.lower, self.upper, strict=True):
            span = (hi - lo) or 1.0
            v = float(values[name])
            out.append((hi - v) / span if direction == "max" else (v - lo) / span)
        return tuple(out)

    @property
    def reference(self) -> tuple[float, ...]:
        return (REFERENCE,) * len(self.names)

    def to_dict(self) -> dict[str, object]:
        return {"names": list(self.names), "directions": list(self.directions), "lower": list(self.lower),
                "upper": list(self.upper), "reference": REFERENCE}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Normaliser:
        return cls(tuple(data["names"]), tuple(data["directions"]), tuple(map(float, data["lower"])),
                   tuple(map(float, data["upper"])))


def fit_normaliser(objectives: Sequence[Objective], space: object, device: str, prompt: int, context: int,
                   samples: int = 256, seed: int = 0) -> Normaliser:
    """Bounds from `samples` random genomes of the space (fixed seed): quality is already in [0, 1];
    every other objective spans the sample's min..max."""
    rng = random.Random(seed)
    metrics = [screening_metrics(space.decode(space.sample(rng)), device, prompt, context) for _ in range(samples)]
    lower, upper = [], []
    for objective in objectives:
        if objective.name == "quality":
            lower.append(0.0)
            upper.append(1.0)
        else:
            values = [m[objective.name] for m in metrics]
            lower.append(min(values))
            upper.append(max(values) if max(values) > min(values) else min(values) + 1.0)
    return Normaliser(tuple(o.name for o in objectives), tuple(o.direction for o in objectives),
                      tuple(lower), tuple(upper))


def is_finite(values: Mapping[str, float]) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values.values())
