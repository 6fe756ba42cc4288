"""A cheap stand-in for the suite, for testing and benchmarking the search machinery.

Training a proxy takes minutes; comparing search algorithms over many seeds, or killing a search ten
times to test resume, needs evaluations that take milliseconds and still behave like the real thing.
This evaluator is a fixed formula with the shape published work reports, NOT a quality measure:

- in-context recall needs a few attention (or recurrent) blocks and saturates after a handful
  (Zoology, LFM2's finding that a few GQA blocks suffice), so `recall = 1 - exp(-n / 2)` with n the
  attention blocks plus half the recurrent and a third of the long-convolution blocks;
- local modelling wants a token mixer in every slot (conv or attention alike);
- capacity grows with log(non-embedding parameters);
- attention spread across depth helps a little (LFM2 interleaves its GQA blocks);
- a small genome-specific term (from the genome's name) makes the landscape rugged.

Lower fidelities see a damped and noisier version: `q_f = q · (1 - exp(-tokens / 256K)) + noise`, the
noise shrinking as 1/sqrt(tokens).  `cost_s` optionally sleeps to emulate training time.
"""

from __future__ import annotations

import hashlib
import math
import random
import time

from star.arch import ArchConfig

REFERENCE_TOKENS = 256 * 1024


def true_quality(config: ArchConfig) -> float:
    kinds = config.layer_types
    n = len(kinds)
    recall_blocks = kinds.count("attention") + 0.5 * kinds.count("recurrence") + kinds.count("long_conv") / 3
    recall = 1.0 - math.exp(-recall_blocks / 2.0)
    local = sum(k != "identity" for k in kinds) / max(1, n)
    capacity = min(1.0, max(0.0, math.log(max(config.non_embedding_params(), 1)) / math.log(2e9)))
    positions = [i / max(1, n - 1) for i, k in enumerate(kinds) if k == "attention"]
    spread = min(1.0, 2 * (sum((p - sum(positions) / len(positions)) ** 2 for p in positions) / len(positions)) ** 0.5
                 / 0.577) if len(positions) > 1 else 0.0
    digest = hashlib.sha256(config.to_json().encode()).digest()
    rugged = (digest[0] / 255.0 - 0.5) * 0.04
    return min(1.0, max(0.0, 0.35 * recall + 0.25 * local + 0.30 * capacity + 0.10 * spread + rugged))


def evaluate_synthetic(config: ArchConfig, tokens: int, seed: int, cost_s: float = 0.0) -> dict[str, float]:
    """The fidelity-`tokens` observation of `config`: deterministic in (config, tokens, seed)."""
    if cost_s > 0:
        time.sleep(cost_s)
    q = true_quality(config)
    key = hashlib.sha256(f"{config.to_json()}|{tokens}|{seed}".encode()).digest()
    noise = random.Random(key).gauss(0.0, 0.02 * math.sqrt(REFERENCE_TOKENS / tokens))
    observed = q * (1.0 - math.exp(-tokens / REFERENCE_TOKENS)) + noise
    return {"quality": min(1.0, max(0.0, observed)), "true_quality": q}
