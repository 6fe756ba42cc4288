"""What a latency profile measures and a predictor reads back: a measured case and its features.

The profiler (measuring) and the predictor (fitting and predicting) both need these definitions, and
the profiler's calibration needs the predictor; kept here, neither module has to import the other for
them, so the two do not import each other in a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from star.arch import BlockConfig


@dataclass(frozen=True)
class Case:
    """One unit timed in one phase at one length: a row of a profile, and what a prediction looks up."""

    unit: str  # "mixer:<kind>", "ffn:<kind>", "embedding" or "head"
    width: int
    spec: Any  # the operator config (mixer or FFN), or the vocabulary size for embedding/head
    phase: str  # "prefill" or "decode"
    tokens: int  # prompt length (prefill) or context already cached (decode)


def spec_text(spec: Any) -> str:
    """The operator's settings, readably ('ShortConvMixer(kernel=3)'), or the vocabulary size: a
    profile row's `spec`, and how the predictor finds the rows of a case's own settings."""
    return repr(spec) if not isinstance(spec, int) else f"vocab={spec}"


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


def block_kinds(block: BlockConfig) -> tuple[str, str]:
    """The keys of a block's two fixed costs: its mixer kind and its FFN kind."""
    return f"mixer:{block.mixer.kind}", f"ffn:{block.ffn.kind}" if block.ffn is not None else "ffn:none"
