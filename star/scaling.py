"""Proxy-scale versions of an architecture: the same layout, small enough to train in seconds.

The search ranks full-size genomes by training their proxies, so a proxy keeps everything that makes
one genome differ from another: its layout (mixer classes, kernels, windows, sharing, depth), its FFN
kinds and their width relative to the model, and its *scale*.  Every size is divided by one fixed
factor, `PROXY_FACTOR`, so LFM2-350M, -700M and -1.2B (widths 1024, 1536, 2048) get proxies of width
32, 48 and 64 that differ in size as the real models do, and a search cannot buy latency with width
for free.  Heads keep their share of the width at a proxy head size of `PROXY_HEAD_DIM` (LFM2's 16,
24 and 32 heads of 64 become 2, 3 and 4 heads of 16), and KV heads keep the heads-to-KV ratio.

Why 32 (measured, docs/benchmarks.md): after 512 K tokens of real text, the proxies of LFM2-350M and
-1.2B are 0.20-0.28 bits per byte apart at widths 32 and 64, against 0.02-0.11 at widths 64 and 128
(a factor of 16), which also cost about three times as much per token.  Every proxy trains on the
same number of tokens, as all LFM2 models were trained on the same data; in the data-limited regime
a proxy lives in, a larger model gains more per token.
"""

from __future__ import annotations

from dataclasses import replace

from star.arch import ArchConfig, BlockConfig

PROXY_FACTOR = 32
PROXY_HEAD_DIM = 16
PROXY_VOCAB = 512
PROXY_MAX_POSITIONS = 4096
# The latency calibration's proxy shape (width 128, heads of 32), fixed rather than taken from the
# quality proxies' defaults above, so that a profile measures the same models as before those changed.
LATENCY_PROXY = {"hidden": 128, "head_dim": 32}
FFN_MULTIPLE = 16


def proxy_width(hidden_size: int) -> int:
    """The proxy width of a model of width `hidden_size`: divided by PROXY_FACTOR, at least 16."""
    return max(16, hidden_size // PROXY_FACTOR)


def to_proxy(config: ArchConfig, hidden: int | None = None, vocab: int = PROXY_VOCAB,
             head_dim: int = PROXY_HEAD_DIM) -> ArchConfig:
    """`config` at width `hidden` (by default its own width over PROXY_FACTOR): heads keep their
    share of the width (each `head_dim` wide), KV heads keep the heads/KV ratio, FFN widths scale and
    round up to a multiple of 16; depth, kernels, windows and sharing are unchanged.  Raises
    StarError if the result does not validate."""
    hidden = hidden or proxy_width(config.hidden_size)
    blocks = tuple(_scale_block(block, config.hidden_size, hidden, head_dim) for block in config.blocks)
    return replace(config, hidden_size=hidden, vocab_size=vocab, blocks=blocks, name=f"{config.name}-proxy",
                   max_position_embeddings=PROXY_MAX_POSITIONS).validate()


def _scale_block(block: BlockConfig, old: int, new: int, head_dim: int) -> BlockConfig:
    mixer = block.mixer
    if hasattr(mixer, "num_heads"):  # any mixer with heads (attention, recurrence): by its fields, not its kind
        heads = _scaled_heads(mixer.num_heads * mixer.head_dim, old, new, head_dim)
        changes = {"num_heads": heads, "head_dim": head_dim}
        if hasattr(mixer, "num_kv_heads"):  # grouped-query: keep the group size where it divides
            changes["num_kv_heads"] = _kv_heads(heads, mixer.num_heads // mixer.num_kv_heads)
        mixer = replace(mixer, **changes)
    ffn = block.ffn
    if ffn is not None:
        # ceil(hidden · new / old / 16) · 16 in exact integer arithmetic.
        ffn = replace(ffn, hidden=FFN_MULTIPLE * -(-ffn.hidden * new // (old * FFN_MULTIPLE)))
    return replace(block, mixer=mixer, ffn=ffn)


def _scaled_heads(inner: int, old: int, new: int, head_dim: int) -> int:
    """max(1, round(inner · new / old / head_dim)), rounding halves up (not to even)."""
    numerator, denominator = inner * new, old * head_dim
    return max(1, (2 * numerator + denominator) // (2 * denominator))


def _kv_heads(heads: int, ratio: int) -> int:
    """heads / ratio, at least 1, lowered until it divides `heads`."""
    kv = max(1, heads // max(1, ratio))
    while heads % kv:
        kv -= 1
    return kv
