"""Proxy-scale versions of an architecture: the same layout, small enough to train in seconds.

The search ranks full-size genomes by training their proxies, so a proxy keeps everything that makes
one layout differ from another (mixer classes, kernels, windows, sharing, FFN kinds and their width
relative to the model) and shrinks only the sizes, proportionally to the width.
"""

from __future__ import annotations

from dataclasses import replace

from star.arch import ArchConfig, AttentionMixer, BlockConfig, RecurrenceMixer

PROXY_MAX_POSITIONS = 4096
FFN_MULTIPLE = 32


def to_proxy(config: ArchConfig, hidden: int = 128, vocab: int = 512, head_dim: int = 32) -> ArchConfig:
    """`config` at width `hidden`: heads keep their share of the width (each `head_dim` wide), KV heads
    keep the heads/KV ratio, FFN widths scale and round up to a multiple of 32; kernels, windows and
    sharing are unchanged.  Raises StarError if the result does not validate."""
    blocks = tuple(_scale_block(block, config.hidden_size, hidden, head_dim) for block in config.blocks)
    return replace(config, hidden_size=hidden, vocab_size=vocab, blocks=blocks, name=f"{config.name}-proxy",
                   max_position_embeddings=PROXY_MAX_POSITIONS).validate()


def _scale_block(block: BlockConfig, old: int, new: int, head_dim: int) -> BlockConfig:
    mixer = block.mixer
    if isinstance(mixer, AttentionMixer):
        heads = _scaled_heads(mixer.num_heads * mixer.head_dim, old, new, head_dim)
        mixer = replace(mixer, num_heads=heads, head_dim=head_dim,
                        num_kv_heads=_kv_heads(heads, mixer.num_heads // mixer.num_kv_heads))
    elif isinstance(mixer, RecurrenceMixer):
        mixer = replace(mixer, num_heads=_scaled_heads(mixer.num_heads * mixer.head_dim, old, new, head_dim),
                        head_dim=head_dim)
    ffn = block.ffn
    if ffn is not None:
        # ceil(hidden · new / old / 32) · 32 in exact integer arithmetic.
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
