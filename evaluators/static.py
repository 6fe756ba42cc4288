"""Static objectives: exact numbers that need no training and no device (cheap enough to screen
every candidate the searcher proposes)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from star.arch import ArchConfig
from star.errors import StarError


def static_metrics(config: ArchConfig, context: int = 4096, dtype_bytes: int = 2,
                   prompt: int | None = None) -> dict[str, Any]:
    """Parameters, cache bytes at `context` and prefill/decode FLOPs, keyed as `star describe --json`:
    the one place exact accounting is turned into metrics (a search's screening metrics take theirs
    from here).  Prefill FLOPs are for a prompt of `prompt` tokens (default: the whole context, as
    `star describe` reports them); decode FLOPs for one token with `context` tokens cached."""
    prompt = context if prompt is None else prompt
    if context < 0 or prompt < 0:
        raise StarError(f"context and prompt must be >= 0, got {context} and {prompt}")
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
        "prompt": prompt,
        "prefill_flops": config.flops(prompt, 0),
        "decode_flops_per_token": config.flops(1, context),
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "num_blocks": len(config.blocks),
        "block_counts": dict(Counter(config.layer_types)),
        "layer_types": config.layer_types,
    }
