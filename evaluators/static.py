"""Static objectives: exact numbers that need no training and no device (cheap enough to screen
every candidate the searcher proposes)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from star.arch import ArchConfig
from star.errors import StarError


def static_metrics(config: ArchConfig, context: int = 4096, dtype_bytes: int = 2) -> dict[str, Any]:
    """Parameters, cache bytes at `context` and prefill/decode FLOPs, keyed as `star describe --json`."""
    if context < 0:
        raise StarError(f"context must be >= 0, got {context}")
    if dtype_bytes not in (1, 2, 4):
        raise StarError(f"cache dtype bytes must be 1, 2 or 4, got {dtype_bytes}")
    return {
        "name": config.name,
        "params": config.params(),
        "non_embedding_params": config.non_embedding_params(),
        "embedding_params": config.embedding_params(),
        "context": context,
        "cache_dtype_bytes": dtype_bytes,
        "cache_bytes": config.cache_bytes(context, dtype_bytes),
        "prefill_flops": config.flops(context, 0),
        "decode_flops_per_token": config.flops(1, context),
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "num_blocks": len(config.blocks),
        "block_counts": dict(Counter(config.layer_types)),
        "layer_types": config.layer_types,
    }
